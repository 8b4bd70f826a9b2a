"""Sensor specifications: the facts about a sensor that every stage needs.

A sensor is data (a YAML file in ``data_catalog/sensors/``) plus a branch chosen by its family. This module holds
the data half: :class:`SensorSpec` and :class:`Band`, and the validation that turns a YAML mapping into them. A
mistake in a YAML file is reported with the file and the field, e.g.
``data_catalog/sensors/enmap.yaml: bands[12].center_nm: expected a number > 0, got 'abc'``.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

Family = Literal["optical", "sar", "hyperspectral"]
FAMILIES: tuple[str, ...] = ("optical", "sar", "hyperspectral")
UNITS: tuple[str, ...] = ("reflectance", "sigma0_db", "sigma0_linear", "digital_number")


class SensorSpecError(ValueError):
    """A sensor YAML file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Band:
    """One spectral band or polarisation channel."""

    #: band name as the provider spells it (``B8A``, ``VV``, ``B042``)
    name: str
    #: centre wavelength in nm; ``None`` for SAR channels
    center_nm: float | None
    #: full width at half maximum in nm; ``None`` for SAR channels
    fwhm_nm: float | None
    #: native ground sampling distance in metres
    gsd_m: float
    #: mean of the band in physical units (after ``scale``/``offset``), for normalisation
    mean: float
    #: standard deviation in physical units, for normalisation
    std: float
    #: ``False`` for bands that carry no usable signal (EnMAP water-vapour bands)
    valid: bool = True
    #: other spellings of the name in file names (``B1`` for ``B01``)
    aliases: tuple[str, ...] = ()
    #: SAR polarisation (``VV``, ``VH``, ``HH``, ``HV``) or ``None``
    polarization: str | None = None


@dataclass(frozen=True)
class CloudTest:
    """A per-pixel cloud flag computed from bands: mean of ``bands`` (physical units) above ``above``, unless the
    pixel is snow by its normalised difference snow index, NDSI = (green - SWIR) / (green + SWIR) above
    ``snow_ndsi`` (snow is as bright as cloud in the visible and dark at 1.6 um, where water clouds stay bright;
    the threshold is Hall et al.'s (1995) for MODIS snow cover). A pixel whose snow bands have no data (NaN) stays
    cloud."""

    #: band names averaged for the test
    bands: tuple[str, ...]
    #: threshold in physical units (reflectance for optical sensors)
    above: float
    #: (green, SWIR near 1.6 um) band names of the snow test, or empty: no snow test
    snow_bands: tuple[str, ...] = ()
    #: NDSI above which a bright pixel is snow, not cloud
    snow_ndsi: float = 0.4
    #: role of the provider's quality mask among a scene's auxiliary files (Landsat's ``QA_PIXEL``, EnMAP's
    #: ``QL_QUALITY_CLOUD``, Sentinel-2's ``SCL``), or empty; where a scene has it, pixels with any of ``qa_bits``
    #: set, or of one of ``qa_classes``, are cloud as well
    qa_role: str = ""
    #: bit numbers of a bit-field mask that mark cloud
    qa_bits: tuple[int, ...] = ()
    #: values of a classification mask that mark cloud (Sentinel-2's SCL: 8, 9, 10)
    qa_classes: tuple[int, ...] = ()

    def qa_cloud(self, qa: np.ndarray) -> np.ndarray:
        """Which pixels of the quality mask ``qa`` (integers) mark cloud."""
        if self.qa_classes:
            return np.isin(qa, self.qa_classes)
        return (qa.astype(np.int64) & self.qa_mask) != 0

    @property
    def qa_mask(self) -> int:
        """The bits of ``qa_bits`` as one integer mask."""
        return sum(1 << b for b in set(self.qa_bits))

    def flag(self, band: Callable[[str], np.ndarray], ok: np.ndarray) -> np.ndarray:
        """Cloud flags (bool, shaped like ``ok``) of the pixels ``ok`` marks; ``band(name)`` gives a band in
        physical units on the same grid. The snow bands are asked for only when some pixel is bright."""
        acc = np.zeros(ok.shape, np.float32)
        for b in self.bands:
            acc += band(b)
        cloud = ok & (acc / len(self.bands) > self.above)
        if self.snow_bands and cloud.any():
            green, swir = (np.asarray(band(b))[cloud] for b in self.snow_bands)  # bright pixels only
            total = green + swir
            cloud[cloud] = ~((total > 0) & (green - swir > self.snow_ndsi * total))  # NDSI > snow_ndsi
        return cloud


@dataclass(frozen=True)
class Layout:
    """How one kind of file of the sensor stores its bands: their order, and the encoding if it differs."""

    #: band names in file order
    bands: tuple[str, ...]
    #: numpy dtype of such files
    dtype: str
    #: physical = DN * scale + offset
    scale: float
    #: physical = DN * scale + offset
    offset: float
    #: nodata value of such files, or ``None``
    nodata: float | None


@dataclass(frozen=True)
class BaselineOffset:
    """A DN offset that products carry from a processing baseline on.

    Sentinel-2 products of processing baseline 04.00 and later (from 25 January 2022, and ESA's Collection-1
    reprocessing of older acquisitions) store ``DN = reflectance x 10000 + 1000`` (``BOA_ADD_OFFSET`` /
    ``RADIO_ADD_OFFSET`` -1000 in their metadata). A scene of such a product is read through its layout with
    ``offset`` added, recorded as the layout name plus :attr:`suffix` (``full+N0400``).
    """

    #: the first processing baseline whose DN carry the offset (``"04.00"``)
    since: str
    #: added to the layout's ``offset`` for those products, in physical units (-0.1 for Sentinel-2)
    offset: float

    @property
    def suffix(self) -> str:
        """Layout-name suffix of scenes read with the offset: ``+N0400`` for baseline ``04.00``."""
        return "+N" + self.since.replace(".", "")

    def applies(self, baseline: str) -> bool:
        """Whether products of processing baseline ``baseline`` (``"05.09"``, ``"N0509"``) carry the offset;
        ``False`` for a text that names no baseline (:func:`parse_baseline`)."""
        b = parse_baseline(baseline)
        return b is not None and b >= parse_baseline(self.since)


def parse_baseline(text: object) -> str | None:
    """A processing baseline as ``"05.09"`` (which sorts in baseline order) from ``"05.09"``, ``"5.9"``,
    ``"N0509"`` or ``"0509"``; ``None`` for anything else and for ``99.99`` (``N9999``: a product not made by ESA's
    processor, such as BigEarthNet's or a local Sen2Cor run's, names no baseline)."""
    m = re.fullmatch(r"N?(\d{2})(\d{2})|(\d{1,2})\.(\d{1,2})", str(text).strip())
    if not m:
        return None
    major, minor = (int(g) for g in m.groups() if g is not None)
    return None if (major, minor) == (99, 99) else f"{major:02d}.{minor:02d}"


@dataclass(frozen=True)
class SensorSpec:
    """Everything rsretrieve knows about one sensor product, loaded from ``data_catalog/sensors/NAME.yaml``."""

    #: registry name (``sentinel2``)
    name: str
    #: branch family: ``optical``, ``sar`` or ``hyperspectral``
    family: Family
    #: human description
    description: str
    #: processing level (``L2A``, ``GRD``)
    product: str
    #: physical quantity after scaling: ``reflectance``, ``sigma0_db``, ...
    units: str
    #: numpy dtype of the files as delivered
    dtype: str
    #: nodata value of the files (``nan`` allowed), or ``None``
    nodata: float | None
    #: physical = DN * scale + offset
    scale: float
    #: physical = DN * scale + offset
    offset: float
    #: nominal ground sampling distance in metres (the finest band)
    gsd: float
    #: all bands in the provider's order
    bands: tuple[Band, ...]
    #: band names used for true-colour quicklooks (R, G, B), or SAR false-colour channels
    rgb_bands: tuple[str, ...]
    #: named file layouts: band order and encoding (``full`` is always all bands in the spec's encoding)
    layouts: dict[str, Layout]
    #: regular expressions matched against file and folder names to recognise the sensor
    name_patterns: tuple[str, ...]
    #: file-name patterns of auxiliary files that belong to a scene (quality masks); never rejected
    aux_patterns: tuple[str, ...] = ()
    #: optional per-pixel cloud test
    cloud_test: CloudTest | None = None
    #: DN offset of products from a processing baseline on (Sentinel-2 04.00), or ``None``
    baseline_offset: BaselineOffset | None = None
    #: file this spec was loaded from (for messages)
    source: str = ""
    #: free-form extra facts (platforms, revisit, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    # -- derived -----------------------------------------------------------------------------------------------
    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def wavelengths(self) -> tuple[float | None, ...]:
        """Centre wavelengths in nm, in band order (``None`` for SAR)."""
        return tuple(b.center_nm for b in self.bands)

    @property
    def valid_mask(self) -> tuple[bool, ...]:
        return tuple(b.valid for b in self.bands)

    def band(self, name: str) -> Band:
        """Look a band up by name or alias."""
        for b in self.bands:
            if b.name == name or name in b.aliases:
                return b
        raise KeyError(f"sensor {self.name!r} has no band {name!r}; bands: {', '.join(self.band_names)}")

    def layout(self, name: str) -> Layout:
        """The layout ``name`` as a catalog records it: a key of :attr:`layouts`, or one with the suffix of
        :attr:`baseline_offset` (``full+N0400``: the ``full`` layout with the baseline's offset added)."""
        if name in self.layouts:
            return self.layouts[name]
        base, plus, baseline = name.rpartition("+")
        if plus and base in self.layouts and re.fullmatch(r"N\d{4}", baseline):
            # any baseline suffix: a catalog written before ``since`` was edited still reads
            if self.baseline_offset is None:
                raise KeyError(f"sensor {self.name!r} has no file layout {name!r}: its spec ({self.source}) no "
                               f"longer has the baseline_offset that read such scenes; layouts: "
                               f"{', '.join(self.layouts)}")
            lay = self.layouts[base]
            return replace(lay, offset=lay.offset + self.baseline_offset.offset)
        raise KeyError(f"sensor {self.name!r} has no file layout {name!r}; layouts: {', '.join(self.layouts)}")

    def band_index(self, name: str) -> int:
        return self.band_names.index(self.band(name).name)

    def matches_name(self, text: str) -> bool:
        """Whether any of ``name_patterns`` matches ``text`` (a file or folder name)."""
        return any(re.search(p, text) for p in self.name_patterns)

    def is_aux(self, filename: str) -> bool:
        return any(re.search(p, filename) for p in self.aux_patterns)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (used by ``rsretrieve sensors show --json``)."""
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "product": self.product,
            "units": self.units,
            "dtype": self.dtype,
            "nodata": None if self.nodata is None else (str(self.nodata) if math.isnan(self.nodata) else self.nodata),
            "scale": self.scale,
            "offset": self.offset,
            "gsd": self.gsd,
            "num_bands": self.num_bands,
            "bands": [
                {
                    "name": b.name,
                    "center_nm": b.center_nm,
                    "fwhm_nm": b.fwhm_nm,
                    "gsd_m": b.gsd_m,
                    "valid": b.valid,
                    "polarization": b.polarization,
                    "mean": b.mean,
                    "std": b.std,
                }
                for b in self.bands
            ],
            "rgb_bands": list(self.rgb_bands),
            "layouts": {k: list(v.bands) for k, v in self.layouts.items()},
            "cloud_test": None if self.cloud_test is None else asdict(self.cloud_test),
            "baseline_offset": None if self.baseline_offset is None else asdict(self.baseline_offset),
            "source": self.source,
        }


# ---------------------------------------------------------------------------------------------------------------
# validation
class _Field:
    """Reads typed fields from a mapping and reports ``file: path: problem``."""

    def __init__(self, source: str, data: Any, where: str = ""):
        self.source, self.data, self.where = source, data, where

    def fail(self, key: str, msg: str) -> SensorSpecError:
        path = f"{self.where}.{key}" if self.where else key
        return SensorSpecError(f"{self.source}: {path}: {msg}")

    def get(self, key: str, default: Any = ..., required: bool = True) -> Any:
        if not isinstance(self.data, dict):
            raise SensorSpecError(f"{self.source}: {self.where or '<top>'}: expected a mapping")
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "missing required field")
            return default
        return self.data[key]

    def str(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        v = self.get(key, default)
        if v is None and default is None:
            return v
        if not isinstance(v, str) or not v:
            raise self.fail(key, f"expected a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(key, f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    def num(self, key: str, default: Any = ..., positive: bool = False, allow_none: bool = False,
            allow_nan: bool = False) -> float | None:
        v = self.get(key, default)
        if v is None and (allow_none or default is None):
            return None
        if allow_nan and isinstance(v, str) and v.lower() == "nan":
            return float("nan")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.fail(key, f"expected a number{' > 0' if positive else ''}, got {v!r}")
        v = float(v)
        if math.isnan(v) and not allow_nan:
            raise self.fail(key, "expected a number, got nan")
        if positive and not v > 0:
            raise self.fail(key, f"expected a number > 0, got {v!r}")
        return v

    def only(self, *keys: str) -> None:
        """Refuse a key of the mapping that is not one of ``keys`` (a misspelt field would otherwise be ignored and
        its default used), naming the nearest known field."""
        if not isinstance(self.data, dict):
            return
        for k in self.data:
            if k not in keys:
                near = difflib.get_close_matches(str(k), keys, n=1)
                hint = f"; did you mean {near[0]}?" if near else ""
                raise self.fail(str(k), f"unknown field{hint} (fields here: {', '.join(keys)})")

    def strlist(self, key: str, default: Any = ...) -> tuple[str, ...]:
        v = self.get(key, default)
        if v is None:
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(key, f"expected a list of strings, got {v!r}")
        return tuple(v)


def spec_from_dict(data: Any, source: str = "<dict>") -> SensorSpec:
    """Validate a mapping (parsed YAML) and build a :class:`SensorSpec`.

    Raises:
        SensorSpecError: naming ``source`` and the offending field.
    """
    f = _Field(source, data)
    f.only("name", "family", "description", "product", "units", "dtype", "nodata", "scale", "offset",
           "baseline_offset", "gsd", "bands", "rgb_bands", "cloud_test", "name_patterns", "aux_patterns", "layouts",
           "extra")
    name = f.str("name")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise f.fail("name", f"expected lower-case letters, digits and '_', got {name!r}")
    family = f.str("family", choices=FAMILIES)
    units = f.str("units", choices=UNITS)
    dtype = f.str("dtype")
    try:
        np.dtype(dtype)
    except TypeError:
        raise f.fail("dtype", f"not a numpy dtype: {dtype!r}") from None
    nodata = f.num("nodata", default=None, allow_nan=True)
    scale = f.num("scale", default=1.0, positive=True)
    offset = f.num("offset", default=0.0)

    raw_bands = f.get("bands")
    if not isinstance(raw_bands, list) or not raw_bands:
        raise f.fail("bands", "expected a non-empty list of bands")
    bands: list[Band] = []
    for i, rb in enumerate(raw_bands):
        bf = _Field(source, rb, f"bands[{i}]")
        bf.only("name", "aliases", "center_nm", "fwhm_nm", "gsd_m", "polarization", "mean", "std", "valid")
        bname = bf.str("name")
        center = bf.num("center_nm", default=None, positive=True)
        fwhm = bf.num("fwhm_nm", default=None, positive=True)
        if family != "sar" and center is None:
            raise bf.fail("center_nm", f"required for a {family} sensor")
        pol = bf.str("polarization", default=None)
        if family == "sar" and pol not in ("VV", "VH", "HH", "HV"):
            raise bf.fail("polarization", f"expected VV, VH, HH or HV for a sar sensor, got {pol!r}")
        valid = bf.get("valid", True)
        if not isinstance(valid, bool):
            raise bf.fail("valid", f"expected true or false, got {valid!r}")
        bands.append(
            Band(
                name=bname,
                center_nm=center,
                fwhm_nm=fwhm,
                gsd_m=bf.num("gsd_m", positive=True),
                mean=bf.num("mean"),
                std=bf.num("std", positive=True),
                valid=valid,
                aliases=bf.strlist("aliases", default=None),
                polarization=pol,
            )
        )
    names = [b.name for b in bands]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise f.fail("bands", f"duplicate band names: {', '.join(dupes)}")
    known = set(names) | {a for b in bands for a in b.aliases}

    def _check_bands(key: str, values: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in values if v not in known]
        if unknown:
            raise f.fail(key, f"unknown band(s) {', '.join(unknown)}; bands: {', '.join(names)}")
        return values

    rgb = _check_bands("rgb_bands", f.strlist("rgb_bands"))
    layouts_raw = f.get("layouts", default={}) or {}
    if not isinstance(layouts_raw, dict):
        raise f.fail("layouts", "expected a mapping of layout name -> list of band names")
    layouts = {"full": Layout(tuple(names), dtype, scale, offset, nodata)}
    for lname, lraw in layouts_raw.items():
        if isinstance(lraw, list):
            lraw = {"bands": lraw}
        lf = _Field(source, lraw, f"layouts.{lname}")
        lf.only("bands", "dtype", "scale", "offset", "nodata")
        ldtype = lf.str("dtype", default=dtype)
        try:
            np.dtype(ldtype)
        except TypeError:
            raise lf.fail("dtype", f"not a numpy dtype: {ldtype!r}") from None
        layouts[str(lname)] = Layout(
            bands=_check_bands(f"layouts.{lname}.bands", lf.strlist("bands")),
            dtype=ldtype,
            scale=lf.num("scale", default=scale, positive=True),
            offset=lf.num("offset", default=offset),
            nodata=lf.num("nodata", default=nodata, allow_nan=True) if "nodata" in lraw else nodata,
        )

    patterns = f.strlist("name_patterns", default=[])
    aux = f.strlist("aux_patterns", default=[])
    for key, pats in (("name_patterns", patterns), ("aux_patterns", aux)):
        for p in pats:
            try:
                re.compile(p)
            except re.error as e:
                raise f.fail(key, f"bad regular expression {p!r}: {e}") from None

    cloud = None
    if f.get("cloud_test", default=None) is not None:
        cf = _Field(source, f.get("cloud_test"), "cloud_test")
        cf.only("bands", "above", "snow_bands", "snow_ndsi", "qa_role", "qa_bits", "qa_classes")
        snow = _check_bands("cloud_test.snow_bands", cf.strlist("snow_bands", default=None))
        if snow and len(snow) != 2:
            raise cf.fail("snow_bands", f"expected two bands (green, SWIR near 1.6 um), got {list(snow)}")
        if snow:
            nm = [next(b.center_nm or math.nan for b in bands if v in (b.name, *b.aliases)) for v in snow]
            if not (480 <= nm[0] <= 620 and 1400 <= nm[1] <= 1800):
                raise cf.fail("snow_bands", f"expected a green band and a SWIR band near 1.6 um, in that order; got "
                              f"{snow[0]} ({nm[0]:g} nm), {snow[1]} ({nm[1]:g} nm)")
        elif "snow_ndsi" in cf.data:
            raise cf.fail("snow_ndsi", "given without snow_bands (green, SWIR near 1.6 um) to compute it from")
        ndsi = cf.num("snow_ndsi", default=0.4)
        if not -1 < ndsi < 1:
            raise cf.fail("snow_ndsi", f"expected a number between -1 and 1 (an NDSI), got {ndsi!r}")
        qa_role = cf.str("qa_role", default=None) or ""
        qa_bits = cf.get("qa_bits", default=[])
        if not isinstance(qa_bits, list) or not all(type(b) is int and 0 <= b < 32 for b in qa_bits):
            raise cf.fail("qa_bits", f"expected a list of bit numbers 0..31, got {qa_bits!r}")
        qa_classes = cf.get("qa_classes", default=[])
        if not isinstance(qa_classes, list) or not all(type(c) is int and c >= 0 for c in qa_classes):
            raise cf.fail("qa_classes", f"expected a list of class values 0 and up, got {qa_classes!r}")
        if qa_bits and qa_classes:
            raise cf.fail("qa_classes", "qa_bits and qa_classes exclude each other: a quality mask is a bit field "
                          "(qa_bits) or a classification (qa_classes)")
        if bool(qa_role) != bool(qa_bits or qa_classes):
            raise cf.fail("qa_bits" if qa_role else "qa_role", "qa_role and qa_bits (or qa_classes) go together: the "
                          "quality mask's role among the scene's auxiliary files and its bits (classes) that mark "
                          "cloud")
        cloud = CloudTest(bands=_check_bands("cloud_test.bands", cf.strlist("bands")), above=cf.num("above"),
                          snow_bands=snow, snow_ndsi=ndsi, qa_role=qa_role, qa_bits=tuple(qa_bits),
                          qa_classes=tuple(qa_classes))

    baseline = None
    if f.get("baseline_offset", default=None) is not None:
        bf = _Field(source, f.get("baseline_offset"), "baseline_offset")
        bf.only("since", "offset")
        since = bf.get("since")
        if not isinstance(since, str) or not re.fullmatch(r"\d{2}\.\d{2}", since):
            raise bf.fail("since", f"expected a processing baseline as a string like \"04.00\", got {since!r}")
        shift = bf.num("offset")
        if shift == 0:
            raise bf.fail("offset", "expected a non-zero number (physical units added to the layout's offset)")
        baseline = BaselineOffset(since=since, offset=shift)

    gsd = f.num("gsd", default=min(b.gsd_m for b in bands), positive=True)
    return SensorSpec(
        name=name,
        family=family,  # type: ignore[arg-type]
        description=f.str("description", default=name),
        product=f.str("product", default="-"),
        units=units,
        dtype=dtype,
        nodata=nodata,
        scale=scale,
        offset=offset,
        gsd=gsd,
        bands=tuple(bands),
        rgb_bands=rgb,
        layouts=layouts,
        name_patterns=patterns,
        aux_patterns=aux,
        cloud_test=cloud,
        baseline_offset=baseline,
        source=source,
        extra=dict(f.get("extra", default={}) or {}),
    )


def load_spec(path: str | Path) -> SensorSpec:
    """Load and validate one sensor YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SensorSpecError(f"{path}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise SensorSpecError(f"{path}: not valid YAML: {e}") from None
    spec = spec_from_dict(data, source=str(path))
    if spec.name != path.stem:
        raise SensorSpecError(f"{path}: name: {spec.name!r} does not match the file name {path.stem!r}")
    return spec
