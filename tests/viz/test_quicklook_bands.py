"""Which bands a quicklook shows: a hyperspectral tile in the true colour of Sentinel-2's B04/B03/B02."""

import numpy as np
import pytest

from rsretrieve.sensors import get_sensor, list_sensors
from rsretrieve.viz.quicklook import GAMMA, REFLECTANCE_MAX, composite_legend, quicklook

HYPERSPECTRAL = [s for s in list_sensors() if get_sensor(s).family == "hyperspectral"]


@pytest.mark.parametrize("name", HYPERSPECTRAL)
def test_a_hyperspectral_quicklook_uses_the_bands_nearest_sentinel2_true_colour(name):
    """Not 640/550/460 nm: the same wavelengths as a Sentinel-2 quicklook, so both sensors' tiles of a cell compare."""
    s2, spec = get_sensor("sentinel2"), get_sensor(name)
    want = [s2.band(b).center_nm for b in s2.rgb_bands]  # 664.6, 559.8, 492.4
    nearest = [min((b for b in spec.bands if b.valid), key=lambda b: abs(b.center_nm - w)).name for w in want]
    assert list(spec.rgb_bands[:3]) == nearest
    assert all(abs(spec.band(b).center_nm - w) < 5 for b, w in zip(spec.rgb_bands, want))


def test_the_enmap_quicklook_reads_bands_b048_b030_b016_for_red_green_blue():
    spec = get_sensor("enmap")
    refl = np.full((spec.num_bands, 4, 4), 0.05, np.float32)  # reflectance 0.05 in every band ...
    for b, r in zip(("B048", "B030", "B016"), (0.3, 0.15, 0.075)):  # ... but the three it shows
        refl[spec.band_index(b)] = r
    means = np.array([b.mean for b in spec.bands], np.float32)[:, None, None]
    stds = np.array([b.std for b in spec.bands], np.float32)[:, None, None]
    rgb = quicklook((refl - means) / stds, "enmap")
    want = [round(255 * min(r / REFLECTANCE_MAX, 1) ** GAMMA) for r in (0.3, 0.15, 0.075)]
    assert np.abs(rgb.reshape(-1, 3).astype(int) - want).max() <= 1
    assert composite_legend("enmap").startswith("enmap: R/G/B = B048/B030/B016 (667/561/492 nm)")
