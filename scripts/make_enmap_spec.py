"""Write data_catalog/sensors/enmap.yaml.

Centre wavelengths come from torchgeo's EnMAP dataset (EnMAP_Spectral_Bands_update.xlsx); FWHM is taken as the
spacing to the neighbouring band (EnMAP's bands are sampled at about their FWHM: ~6.5 nm VNIR, ~10 nm SWIR).
Water-vapour bands (127-141, 161-167; torchgeo's DEFAULT_BANDS leaves them out) are flagged ``valid: false``.
Normalisation statistics are Sentinel-2 L2A's, interpolated over wavelength.

    python scripts/make_enmap_spec.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from torchgeo.datasets.enmap import DEFAULT_BANDS, EnMAP

    wl = np.array([EnMAP.wavelengths[f"B{i}"] * 1000.0 for i in range(1, 225)])
    fwhm = np.empty_like(wl)
    d = np.diff(wl)
    fwhm[0], fwhm[-1] = d[0], d[-1]
    fwhm[1:-1] = np.minimum(np.abs(d[:-1]), np.abs(d[1:]))
    fwhm[fwhm <= 0] = 10.0  # the VNIR/SWIR overlap near 900-1000 nm
    valid = np.isin(np.arange(1, 225), DEFAULT_BANDS)
    # Normalisation statistics: Sentinel-2 L2A's per-band statistics interpolated over wavelength, so the optical
    # and hyperspectral inputs are scaled alike (one small EnMAP tile is no basis for global statistics).
    from rsretrieve.sensors import get_sensor

    s2 = get_sensor("sentinel2")
    s2_wl = np.array([b.center_nm for b in s2.bands])
    order = np.argsort(s2_wl)
    mean = np.interp(wl, s2_wl[order], np.array([b.mean for b in s2.bands])[order])
    std = np.interp(wl, s2_wl[order], np.array([b.std for b in s2.bands])[order])
    stats_from = "interpolated over wavelength from sentinel2.yaml"
    lines = [
        "# EnMAP HSI Level-2A surface reflectance (int16, reflectance x 10000, nodata -32768), 224 bands at 30 m.",
        "# Written by scripts/make_enmap_spec.py: centre wavelengths from EnMAP_Spectral_Bands_update.xlsx (via",
        "# torchgeo), FWHM = spacing to the neighbouring band, water-vapour bands 127-141 and 161-167 valid: false,",
        f"# normalisation statistics {stats_from}.",
        "name: enmap",
        "family: hyperspectral",
        "description: EnMAP HSI Level-2A surface reflectance, 224 bands 418-2445 nm at 30 m",
        "product: L2A",
        "units: reflectance",
        "dtype: int16",
        "nodata: -32768",
        "scale: 0.0001",
        "offset: 0.0",
        "gsd: 30",
        "bands:",
    ]
    for i in range(224):
        v = "" if valid[i] else ", valid: false"
        lines.append(
            f"  - {{name: B{i + 1:03d}, aliases: [B{i + 1}], center_nm: {wl[i]:.2f}, fwhm_nm: {fwhm[i]:.2f}, "
            f"gsd_m: 30, mean: {mean[i]:.4f}, std: {max(std[i], 1e-3):.4f}{v}}}"
        )
    lines += [
        "rgb_bands: [B048, B030, B016]",
        "cloud_test: {bands: [B016, B030, B048], above: 0.30, snow_bands: [B030, B149], snow_ndsi: 0.4,",
        "  qa_role: QL_QUALITY_CLOUD, qa_bits: [0]}",
        "name_patterns:",
        "  - 'ENMAP0\\d-_*L2A'",
        "  - '(?i)enmap'",
        "aux_patterns:",
        "  - '-QL_[A-Z_]+\\.TIF$'",
        "  - '-METADATA\\.XML$'",
        "extra:",
        "  cloud_mask_suffix: -QL_QUALITY_CLOUD.TIF",
        "  platforms: [enmap]",
    ]
    out = ROOT / "data_catalog/sensors/enmap.yaml"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0].rstrip(".") + ", overwriting it (no options).").parse_args()
    main()
