"""Land-cover label schemes: which nomenclature a land-cover raster's class values belong to.

Class values are only comparable within one nomenclature: class 3 of the synthetic generator, CORINE code 211 of a
BigEarthNet reference map and IGBP class 12 of SEN12MS say nothing about each other. Every label in the catalog
therefore carries its *scheme*, and a label is identified by the pair (scheme, value), written ``"corine:211"``.
Training and evaluation compare labels only within one scheme.

The scheme of a land-cover raster is, first match wins:

1. ``--label-scheme NAME`` given to ``rsretrieve ingest`` (every land-cover raster of that run);
2. the GeoTIFF tag ``RSRETRIEVE_LABEL_SCHEME`` (e.g. ``gdal_edit.py -mo RSRETRIEVE_LABEL_SCHEME=esa_worldcover``);
3. the tag ``RSRETRIEVE_CLASSES`` (a comma-separated class-name list): ``synthetic`` for the generator's list,
   otherwise ``classes:<digest of the list>`` (rasters with the same class list share a scheme);
4. a known product name: ``*_reference_map.tif`` (BigEarthNet v2) -> ``corine``; SEN12MS ``ROIs*_lc_*`` -> ``igbp``
   (band 1 of SEN12MS land cover is the IGBP classification);
5. otherwise ``local:<folder of the file>``: rasters in one folder are taken to share a nomenclature, rasters in
   different folders are not (tag them to say otherwise).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SCHEME_TAG = "RSRETRIEVE_LABEL_SCHEME"
CLASSES_TAG = "RSRETRIEVE_CLASSES"
_NAME_RULES = [
    (re.compile(r"(?i)_reference_map$"), "corine"),
    (re.compile(r"(?i)^ROIs\d+_[a-z]+_lc_\d+_p\d+$"), "igbp"),
]
_VALID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\\ -]*$")


def check_scheme(name: str) -> str:
    """A scheme name as given by a user or a tag, stripped; ``ValueError`` if empty or odd."""
    s = name.strip()
    if not s or not _VALID.match(s):
        raise ValueError(f"label scheme {name!r}: use letters, digits and _ . - : (e.g. corine, esa_worldcover)")
    return s


def scheme_for(path: str | Path, tags: dict[str, str] | None = None) -> str:
    """The label scheme of the land-cover raster at ``path`` (``tags``: its GeoTIFF tags, read when omitted)."""
    path = Path(path)
    if tags is None:
        tags = _read_tags(path)
    if tags.get(SCHEME_TAG, "").strip():
        return check_scheme(tags[SCHEME_TAG])
    names = [n for n in tags.get(CLASSES_TAG, "").split(",") if n]
    if names:
        from rsretrieve.data.synthetic import CLASSES

        if tuple(names) == tuple(CLASSES):
            return "synthetic"
        return "classes:" + hashlib.sha1(",".join(names).encode()).hexdigest()[:10]
    for pat, scheme in _NAME_RULES:
        if pat.search(path.stem):
            return scheme
    return f"local:{path.parent}"


#: CORINE Land Cover level-3 classes (the codes of BigEarthNet v2 reference maps)
CORINE = {
    111: "Continuous urban fabric", 112: "Discontinuous urban fabric", 121: "Industrial or commercial units",
    122: "Road and rail networks and associated land", 123: "Port areas", 124: "Airports",
    131: "Mineral extraction sites", 132: "Dump sites", 133: "Construction sites", 141: "Green urban areas",
    142: "Sport and leisure facilities", 211: "Non-irrigated arable land", 212: "Permanently irrigated land",
    213: "Rice fields", 221: "Vineyards", 222: "Fruit trees and berry plantations", 223: "Olive groves",
    231: "Pastures", 241: "Annual crops associated with permanent crops", 242: "Complex cultivation patterns",
    243: "Land principally occupied by agriculture, with significant areas of natural vegetation",
    244: "Agro-forestry areas", 311: "Broad-leaved forest", 312: "Coniferous forest", 313: "Mixed forest",
    321: "Natural grasslands", 322: "Moors and heathland", 323: "Sclerophyllous vegetation",
    324: "Transitional woodland/shrub", 331: "Beaches, dunes, sands", 332: "Bare rock",
    333: "Sparsely vegetated areas", 334: "Burnt areas", 335: "Glaciers and perpetual snow", 411: "Inland marshes",
    412: "Peatbogs", 421: "Salt marshes", 422: "Salines", 423: "Intertidal flats", 511: "Water courses",
    512: "Water bodies", 521: "Coastal lagoons", 522: "Estuaries", 523: "Sea and ocean",
}
#: IGBP land-cover classes (band 1 of SEN12MS land cover, MODIS MCD12Q1)
IGBP = {
    1: "Evergreen needleleaf forests", 2: "Evergreen broadleaf forests", 3: "Deciduous needleleaf forests",
    4: "Deciduous broadleaf forests", 5: "Mixed forests", 6: "Closed shrublands", 7: "Open shrublands",
    8: "Woody savannas", 9: "Savannas", 10: "Grasslands", 11: "Permanent wetlands", 12: "Croplands",
    13: "Urban and built-up lands", 14: "Cropland/natural vegetation mosaics", 15: "Permanent snow and ice",
    16: "Barren", 17: "Water bodies",
}
_NAMES = {"corine": CORINE, "igbp": IGBP}


def class_name(scheme: str, label: int) -> str:
    """The name of a class value in a known scheme, else ``class_<value>``."""
    return _NAMES.get(scheme, {}).get(int(label), f"class_{int(label)}")


def label_key(scheme: str, label: int) -> str:
    """``("corine", 211)`` -> ``"corine:211"``."""
    return f"{scheme}:{int(label)}"


def _read_tags(path: Path) -> dict[str, str]:
    try:
        import rasterio

        with rasterio.open(path) as src:
            return dict(src.tags())
    except Exception:  # a file gone or unreadable: fall back on its name
        return {}
