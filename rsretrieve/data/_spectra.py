"""Spectral library of the synthetic archive: land-cover reflectance as continuous functions of wavelength.

Every spectrum is evaluated on :data:`GRID_NM` (300-3000 nm, 1 nm steps) and turned into band values by a Gaussian
spectral response (``center_nm``, ``fwhm_nm`` of the sensor spec), so Sentinel-2, Landsat and EnMAP see the same
ground consistently. Each class has two end-members, a "low" and a "high" variant (sparse and dense vegetation, wet
and dry soil, clear and turbid water, dark and bright roofs); a pixel is their mid-point plus a signed amount of their
half-difference (see :func:`class_endmembers`). Values are surface reflectance (unitless, 0-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: land-cover classes, in the order of the class index stored in the truth rasters
CLASSES: tuple[str, ...] = ("water", "forest", "grassland", "cropland", "urban", "bare_soil", "wetland")
#: wavelength grid in nm on which spectra are evaluated, shape (G,)
GRID_NM: np.ndarray = np.arange(300.0, 3001.0, 1.0)


@dataclass(frozen=True)
class SiteConditions:
    """Per-site state of the surface (phenology and moisture); every field is modest by design."""

    #: vegetation vigour multiplier of the NIR plateau and green peak (about 0.9-1.1)
    greenness: float
    #: soil moisture, 0 (dry) to 0.2 (moist), darkens soil and deepens water absorption
    moisture: float
    #: suspended sediment of water bodies, 0 (clear) to 0.6 (turbid)
    turbidity: float
    #: shift of the red-edge inflection in nm (about -5 to +5)
    red_edge_shift: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SiteConditions:
        return cls(
            greenness=float(rng.uniform(0.9, 1.1)),
            moisture=float(rng.uniform(0.0, 0.2)),
            turbidity=float(rng.uniform(0.0, 0.6)),
            red_edge_shift=float(rng.uniform(-5.0, 5.0)),
        )


def _gauss(wl: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((wl - mu) / sigma) ** 2)


def _sigmoid(wl: np.ndarray, mu: float, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(wl - mu) / width))


def _liquid_water(wl: np.ndarray, depth: float) -> np.ndarray:
    """Transmittance of liquid water in leaves or soil: dips at 970, 1200, 1450 and 1940 nm, rising beyond 2400."""
    tau = (0.06 * _gauss(wl, 970, 20) + 0.18 * _gauss(wl, 1200, 35) + 0.9 * _gauss(wl, 1450, 45)
           + 1.5 * _gauss(wl, 1940, 60) + 0.4 * _sigmoid(wl, 2450, 40))
    return np.exp(-depth * tau)


def vegetation(wl: np.ndarray, nir: float, green: float, red_edge: float, water: float) -> np.ndarray:
    """Green vegetation: low blue and red (chlorophyll), green peak near 555 nm, red edge, NIR plateau, SWIR dips.

    Args:
        wl: wavelengths in nm, any shape.
        nir: reflectance of the NIR plateau (0.25 sparse to 0.5 dense canopy).
        green: height of the green peak above the visible base (about 0.03-0.07).
        red_edge: inflection of the red edge in nm (about 700-740).
        water: leaf water depth scaling the SWIR absorption dips (about 0.8-1.5).
    """
    vis = 0.03 + green * _gauss(wl, 555, 32) - 0.012 * _gauss(wl, 675, 22)
    s = _sigmoid(wl, red_edge, 13)
    r = vis * (1 - s) + nir * s
    r = r * (1 - 0.30 * _sigmoid(wl, 1320, 70) - 0.28 * _sigmoid(wl, 1850, 80))
    return r * _liquid_water(wl, water)


def soil(wl: np.ndarray, moisture: float, brightness: float = 1.0) -> np.ndarray:
    """Bare soil: reflectance rising from ~0.10 in the blue to ~0.32 in the SWIR, darker and dipped when moist."""
    r = 0.05 + 0.30 * (1 - np.exp(-(wl - 300) / 550)) - 0.05 * _sigmoid(wl, 2050, 90)
    r = r * (1 - 0.08 * _gauss(wl, 2200, 25)) * brightness * (1 - 1.2 * moisture)
    return r * _liquid_water(wl, 0.15 + 1.5 * moisture)


def water(wl: np.ndarray, turbidity: float) -> np.ndarray:
    """Open water: ~0.045 in the blue, falling through the red to near zero in NIR and SWIR; sediment adds a bump."""
    r = 0.002 + 0.045 * (1 - _sigmoid(wl, 600, 35))
    return r + turbidity * (0.04 * _gauss(wl, 590, 70) + 0.015 * _gauss(wl, 810, 40))


def urban(wl: np.ndarray, level: float, redness: float) -> np.ndarray:
    """Built-up surfaces: flat-ish grey at ``level`` with a slight rise to the NIR; ``redness`` adds roof tiles."""
    r = level * (1 + 0.15 * _sigmoid(wl, 600, 120)) * (1 - 0.10 * _sigmoid(wl, 2000, 150))
    return r + redness * 0.06 * _sigmoid(wl, 580, 30) * (1 - _sigmoid(wl, 1200, 200))


def cloud(wl: np.ndarray, brightness: float) -> np.ndarray:
    """A thick cloud: nearly flat at ``brightness`` (0.4-0.8), somewhat lower in the SWIR (droplet absorption)."""
    return brightness * (1 - 0.12 * _sigmoid(wl, 1300, 150)) * _liquid_water(wl, 0.25)


def haze(wl: np.ndarray, amount: float) -> np.ndarray:
    """Residual path reflectance of an imperfect atmospheric correction: ``amount`` at 550 nm, falling as wl^-1.5."""
    return amount * (wl / 550.0) ** -1.5


def top_of_atmosphere(wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-way gas transmittance and Rayleigh path reflectance for Level-1 (top-of-atmosphere) products.

    Returns:
        (transmittance, path), each shaped like ``wl``: TOA = transmittance * surface + path. The deep band at
        1375 nm (Sentinel-2 B10, cirrus) leaves almost nothing of the surface.
    """
    tau = (0.3 * _gauss(wl, 762, 3) + 1.2 * _gauss(wl, 940, 30) + 0.6 * _gauss(wl, 1135, 30)
           + 6.0 * _gauss(wl, 1375, 40) + 5.0 * _gauss(wl, 1870, 60) + 0.5 * _gauss(wl, 2700, 80))
    return np.exp(-tau), 0.035 * (wl / 450.0) ** -4


def class_endmembers(wl: np.ndarray, cond: SiteConditions) -> np.ndarray:
    """Mid-point and half-difference spectra of every class under a site's conditions.

    Returns:
        float64 array (2 * C, *wl.shape): rows ``0..C-1`` are the class mid-points, rows ``C..2C-1`` the
        half-differences (high - low) / 2, so ``mid + t * half`` with ``t`` in [-1, 1] spans low to high.
    """
    g, m, re = cond.greenness, cond.moisture, 720.0 + cond.red_edge_shift
    wet_soil, dry_soil = soil(wl, m + 0.2), soil(wl, 0.5 * m)
    pairs = {
        "water": (water(wl, cond.turbidity * 0.5), water(wl, cond.turbidity * 0.5 + 0.5)),
        "forest": (vegetation(wl, 0.27 * g, 0.030 * g, re - 2, 1.3), vegetation(wl, 0.36 * g, 0.040 * g, re + 6, 1.1)),
        "grassland": (0.6 * vegetation(wl, 0.30 * g, 0.05 * g, re - 5, 0.8) + 0.4 * dry_soil,
                      vegetation(wl, 0.42 * g, 0.06 * g, re, 0.9)),
        "cropland": (0.3 * vegetation(wl, 0.28 * g, 0.04 * g, re - 5, 1.0) + 0.7 * wet_soil,
                     vegetation(wl, 0.50 * g, 0.065 * g, re + 5, 1.0)),
        "urban": (urban(wl, 0.08, 0.0), urban(wl, 0.22, 0.6)),
        "bare_soil": (wet_soil, dry_soil),
        "wetland": (0.5 * water(wl, cond.turbidity) + 0.5 * vegetation(wl, 0.25 * g, 0.04 * g, re - 5, 1.5),
                    0.25 * water(wl, cond.turbidity) + 0.75 * vegetation(wl, 0.33 * g, 0.05 * g, re, 1.5)),
    }
    lows = np.stack([pairs[c][0] for c in CLASSES])
    highs = np.stack([pairs[c][1] for c in CLASSES])
    return np.concatenate([(lows + highs) / 2, (highs - lows) / 2])


def response_matrix(center_nm: np.ndarray, fwhm_nm: np.ndarray) -> np.ndarray:
    """Gaussian spectral response functions sampled on :data:`GRID_NM`, each row summing to 1.

    Args:
        center_nm: (B,) centre wavelengths in nm.
        fwhm_nm: (B,) full widths at half maximum in nm.

    Returns:
        float64 (B, G); ``spectra @ response_matrix(...).T`` gives band values (a band-averaged reflectance).
    """
    sigma = np.asarray(fwhm_nm, float)[:, None] / (2 * np.sqrt(2 * np.log(2)))
    w = np.exp(-0.5 * ((GRID_NM[None, :] - np.asarray(center_nm, float)[:, None]) / sigma) ** 2)
    return w / w.sum(axis=1, keepdims=True)
