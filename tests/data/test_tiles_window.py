"""Reading a pixel window of a scene's reference grid: the same DN as the window cut from whole rows, for stacked
files and for per-band products whose bands are resampled onto the finest grid (BigEarthNet S2 at 10/20/60 m)."""

import numpy as np

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.tiles import _read_rows, window_has_valid_pixels
from rsretrieve.sensors import get_sensor


def test_a_window_reads_the_columns_of_whole_rows(real_data, tmp_path):
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([real_data / "bigearthnet_mm"], cat)
        scenes = cat.scenes()
    per_band = [s for s in scenes if "*" not in s["files"] and s["sensor"] == "sentinel2"]
    stacked = [s for s in scenes if "*" in s["files"]]
    assert per_band, "no per-band Sentinel-2 product in the BigEarthNet-MM sample"
    for scene in per_band[:2] + stacked[:1]:
        spec = get_sensor(scene["sensor"])
        whole = _read_rows(scene, spec, 10, 70, 0)
        for c0, c1 in ((0, scene["width"]), (7, 55), (60, scene["width"])):
            np.testing.assert_array_equal(_read_rows(scene, spec, 10, 70, 0, c0, c1), whole[:, :, c0:c1])
        assert window_has_valid_pixels(scene, (7, 10, 48, 60))
        assert not window_has_valid_pixels(scene, (scene["width"], 0, 10, 10))  # beside the scene
