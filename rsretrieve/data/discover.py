"""Finding scenes in what the user points ``ingest`` at: files, folders and local STAC items.

Three shapes of product are recognised:

* a stacked multiband file (one GeoTIFF holds every band: the synthetic archive, EuroSAT, EnMAP L2A);
* one file per band in a folder, the band name ending the file name (``..._B8A.tif``, ``VV.tif``: BigEarthNet,
  SSL4EO-S12, Major TOM, Landsat Collection 2); files sharing the prefix before the band name form one scene;
* a STAC item (JSON) whose assets have local hrefs.

Files matching a sensor's ``aux_patterns`` (EnMAP quality masks, Landsat QA and thermal companions) are attached to the scene beside them, JSON and
other non-raster sidecars are ignored (unless the call finds no scene at all: then a file named on its own that is
no raster is a problem), and land-cover rasters (``RSRETRIEVE_ROLE=landcover`` tag, or a name such as
``*_landcover.tif`` / ``*_reference_map.tif``) are kept apart as label sources. Symbolic links to folders and files
are followed, each folder walked once (a link cycle ends there); what is found is known by its resolved path.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rsretrieve.sensors import get_sensor, list_sensors

log = logging.getLogger(__name__)

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2", ".img", ".vrt"}
LABEL_NAME = re.compile(r"(?i)(landcover|land_cover|reference_map|(^|_)lc(_|$))")


@dataclass
class SceneSource:
    """One scene as found on disk, before it is opened."""

    #: catalog key: the file, or ``folder/prefix*`` for a per-band product, or the STAC item path
    key: str
    #: band token -> path for per-band products, ``{"*": path}`` for a stacked file
    files: dict[str, str]
    #: auxiliary files (cloud masks, metadata) by role
    aux: dict[str, str] = field(default_factory=dict)
    #: STAC item properties, when the scene came from a STAC item
    stac: dict | None = None
    #: ``"scene"`` or ``"labels"`` (a land-cover raster)
    role: str = "scene"

    @property
    def stacked(self) -> bool:
        return "*" in self.files

    def all_files(self) -> list[str]:
        return sorted(set(self.files.values()) | set(self.aux.values()))


#: reasons of problems that hide nothing a run could otherwise have found (see ``ingest._hides_files``)
LINK_CYCLE = "cannot read: too many levels of symbolic links (a cycle of links)"
BROKEN_LINK = "cannot read: No such file or directory (broken symbolic link)"
STAC_UNREAD = "cannot read STAC item"
NOT_HIDING = (LINK_CYCLE, BROKEN_LINK, STAC_UNREAD)


@dataclass
class Problem:
    """An input that could not be ingested: its path and the reason, one line."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def band_tokens() -> list[str]:
    """Every band name and alias of the registered sensors, longest first (what :func:`split_band_token` tries)."""
    toks = {t for n in list_sensors() for b in get_sensor(n).bands for t in (b.name, *b.aliases)}
    return sorted(toks, key=len, reverse=True)


def _aux_patterns() -> list[str]:
    return [p for n in list_sensors() for p in get_sensor(n).aux_patterns]


def companion_of(name: str, sensor: str) -> bool:
    """Whether a file name is that of one of ``sensor``'s companion files (its spec's ``aux_patterns``)."""
    return any(re.search(p, name) for p in get_sensor(sensor).aux_patterns)


def is_aux_name(name: str) -> bool:
    """Whether a file name is that of a scene's auxiliary file (a cloud or quality mask, by some sensor's
    ``aux_patterns``): discover attaches such files to a scene and never makes one of them."""
    return any(re.search(p, name) for p in _aux_patterns())


#: the resolution suffix of a Sentinel-2 L2A granule's files, in either case: ``T32UQD_20230705T101559_B04_10m``
_RES_SUFFIX = re.compile(r"(?i)_([126]0)m$")
#: the resolution folders of a Sentinel-2 L2A granule's ``IMG_DATA``
_RES_FOLDER = re.compile(r"R[126]0m")


def split_band_token(stem: str, tokens: list[str], resolution_suffix: bool = False) -> tuple[str, str] | None:
    """``"S2A_..._87_48_B8A"`` -> ``("S2A_..._87_48", "B8A")``; ``"VV"`` -> ``("", "VV")``; else ``None``. With
    ``resolution_suffix`` (a file of a Sentinel-2 L2A granule's ``IMG_DATA/R10m``), the suffix is not part of the
    token: ``"T32UQD_..._B04_10m"`` -> ``("T32UQD_...", "B04")``."""
    if resolution_suffix and (res := split_resolution(stem))[0] and (split := _split(res[1], tokens)):
        return split
    return _split(stem, tokens)


def split_resolution(stem: str) -> tuple[int, str]:
    """A Sentinel-2 L2A file's resolution suffix and the rest of its name, in either case:
    ``"T32UQD_..._SCL_20m"`` -> ``(20, "T32UQD_..._SCL")``; ``(0, stem)`` without one."""
    m = _RES_SUFFIX.search(stem)
    return (int(m.group(1)), stem[:m.start()]) if m else (0, stem)


def in_l2a_granule(f: Path) -> bool:
    """Whether ``f`` is in a resolution folder of a Sentinel-2 L2A granule (``IMG_DATA/R10m``, ``R20m``, ``R60m``)."""
    return bool(_RES_FOLDER.fullmatch(f.parent.name)) and f.parent.parent.name == "IMG_DATA"


def _split(stem: str, tokens: list[str]) -> tuple[str, str] | None:
    """The prefix and the band token (as registered, upper case) that end ``stem``. A token of several parts
    (Landsat's ``SR_B4``) matches in either case (``lc08_l2sp_..._sr_b4``, as some tools write the names); a short
    one (``B1``, ``VV``) only as written, so a stacked chip ``cell_b1.tif`` is not taken for a band file."""
    up = stem.upper()
    for t in tokens:
        name = up if "_" in t else stem
        if name == t:
            return "", t
        if name.endswith(t) and name[-len(t) - 1] in _SEPARATORS:
            return stem[: -len(t) - 1], t
    return None


def json_error(e: ValueError) -> str:
    """What is wrong in a JSON text, and where: json's message and ``(line L, column C)``."""
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} (line {e.lineno}, column {e.colno})"
    return str(e)


def _is_stac_item(path: Path) -> dict | str | None:
    """The STAC Item in ``path``; None when it holds something else (a sidecar, a STAC Collection) or cannot be read
    (it may be anything: a settings file of another user); a reason (str) when it names ``stac_version`` but is not
    valid JSON (a download cut short): its scene cannot be known, and the rasters beside it read without it would
    make another scene of the same files, read without the item's properties (a Sentinel-2 product without its
    baseline offset)."""
    try:
        if path.stat().st_size > 5_000_000:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError:
        return None
    except ValueError as e:
        if b'"stac_version"' not in raw:
            return None
        return f"{STAC_UNREAD}: not valid JSON: {json_error(e)}"
    if isinstance(doc, dict) and doc.get("type") == "Feature" and "stac_version" in doc and "assets" in doc:
        if (why := _stac_malformed(doc)) is not None:
            return f"{STAC_UNREAD}: {why}"
        return doc
    return None


def _kind(x: object) -> str:
    """What a JSON value is, for messages: ``a list``, ``null``, ``a number``."""
    if x is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(x), "a number")


def _stac_malformed(doc: dict) -> str | None:
    """What makes a STAC Item unusable where ingest reads it (its ``assets``, each asset's ``href``, ``roles`` and
    ``eo:bands`` / ``bands``, its ``properties``), in one line; ``None`` when nothing does. Such an item (written
    by hand, or by a tool that got the layout wrong) stopped the whole ingest with a traceback."""
    assets = doc["assets"]
    if not isinstance(assets, dict):
        return f"its assets are {_kind(assets)}, not an object of assets by key"
    for key, asset in assets.items():
        if not isinstance(asset, dict):
            return f"asset {key!r} is {_kind(asset)}, not an object"
        if "href" in asset and not isinstance(asset["href"], str):
            return f"asset {key!r}: its href is {_kind(asset['href'])}, not a string"
        if "\x00" in asset.get("href", ""):  # no path holds one (os calls raise ValueError)
            return f"asset {key!r}: its href holds a NUL character"
        roles = asset.get("roles", [])
        if not isinstance(roles, (list, str)) or (isinstance(roles, list)
                                                  and not all(isinstance(r, str) for r in roles)):
            return f"asset {key!r}: its roles are {_kind(roles)}, not a list of strings"
        for field_ in ("eo:bands", "bands"):
            bands = asset.get(field_)
            if bands is not None and not isinstance(bands, list):
                return f"asset {key!r}: its {field_} is {_kind(bands)}, not a list of band objects"
            if odd := [b for b in bands or [] if not isinstance(b, dict)]:
                return f"asset {key!r}: its {field_} lists {_kind(odd[0])}, not a band object"
            if bands and not all(isinstance(b.get("name") or "", str) for b in bands):
                return f"asset {key!r}: a band of its {field_} has a name that is not a string"
    props = doc.get("properties", {})
    if not isinstance(props, dict):
        return f"its properties are {_kind(props)}, not an object"
    return None


#: asset roles of a picture or a document of a STAC item (a thumbnail, an overview, a true-colour rendering, its
#: metadata), never of its measurements: an asset with one of them and without ``data`` is no band and no scene
_NOT_PIXELS_ROLES = frozenset({"thumbnail", "overview", "visual", "graphic", "metadata"})


def _asset_roles(asset: dict) -> list[str]:
    """An asset's roles (``data`` where it names none; one role given as a string is that role, not its letters)."""
    roles = asset.get("roles", ["data"])
    return [roles] if isinstance(roles, str) else roles


def _local_target(item: Path, href: str) -> Path | None:
    """The file a STAC asset's ``href`` names, resolved; ``None`` for a remote asset (nothing is downloaded)."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", href) and not href.startswith("file://"):
        return None
    href = href.removeprefix("file://")
    # os.path.realpath, not Path.resolve: that raises RuntimeError on a cycle of links, which is refused when the
    # scene is read (as a broken link is)
    return Path(os.path.realpath(item.parent / href)) if not os.path.isabs(href) else Path(href)


def _stac_not_pixels(path: Path, doc: dict) -> set[Path]:
    """The local rasters a STAC item lists as a picture or a document of itself (:data:`_NOT_PIXELS_ROLES`: a
    ``thumb.tif`` of role ``thumbnail``, an ``overview.tif``): they belong to the item, and are left out of the
    rasters of its folder. Walked as files of their own, each was refused ("1 band(s) of uint8 fit no registered
    sensor"), and the run exited 1 over an item that was ingested. An asset of other roles without ``data`` (a
    ``cloud`` mask, a band whose item forgot ``data``) is left to the folder's rules, as before."""
    out = set()
    for asset in doc.get("assets", {}).values():
        roles = _asset_roles(asset)
        if "data" in roles or not _NOT_PIXELS_ROLES.intersection(roles):
            continue
        target = _local_target(path, asset.get("href", ""))
        if target is not None and target.suffix.lower() in RASTER_SUFFIXES:
            out.add(target)
    return out


def _stac_source(path: Path, doc: dict, tokens: list[str], aux_pats: list[str]) -> SceneSource | Problem:
    """Turn a STAC item into a scene: raster assets with local hrefs, keyed by their band names.

    An asset's band is the first of its ``eo:bands`` name, its file's stem (Earth Search v1 names its red asset's
    band ``red`` and its file ``B04.tif``) and its key that is a registered band name or alias, else its ``eo:bands``
    name. An asset whose file matches a sensor's ``aux_patterns`` (Sentinel-2's ``SCL.tif``, the 3-band true-colour
    ``TCI.tif`` of a ``visual`` asset) is the scene's companion, not a band or the scene's stacked file.
    """
    files: dict[str, str] = {}
    aux: dict[str, str] = {}
    known = set(tokens)
    for key, asset in doc.get("assets", {}).items():
        target = _local_target(path, asset.get("href", ""))
        if target is None or target.suffix.lower() not in RASTER_SUFFIXES:
            continue  # a remote asset (nothing is downloaded) or no raster
        if "data" not in _asset_roles(asset):
            continue
        if any(re.search(p, target.name) for p in aux_pats):
            aux[target.stem] = str(target)
            continue
        eo = asset.get("eo:bands") or asset.get("bands") or []
        if len(eo) == 1 and eo[0].get("name"):
            names = (eo[0]["name"], target.stem, key)
            files[next((n for n in names if n in known), eo[0]["name"])] = str(target)
        elif len(eo) > 1:
            files["*"] = str(target)
        else:
            files[key if key in known or target.stem not in known else target.stem] = str(target)
    if not files:
        return Problem(str(path), "STAC item has no raster asset with a local href")
    if "*" in files and len(files) > 1:
        files = {"*": files["*"]}
    props = dict(doc.get("properties", {}))
    return SceneSource(key=str(path.resolve()), files=files, stac=props, aux=aux)


def _aux_role(stem: str, scene: SceneSource) -> str:
    """The role an auxiliary file is recorded under: ``QL_QUALITY_CLOUD`` for EnMAP's ``...-QL_QUALITY_CLOUD``,
    ``QA_PIXEL`` for Landsat's ``<scene prefix>_QA_PIXEL``, else the file's stem."""
    if "-QL_" in stem:
        return re.sub(r"^.*-QL_", "QL_", stem)
    prefix = Path(scene.key).name[:-1] if scene.key.endswith("*") else ""
    if prefix and stem.startswith(prefix) and len(stem) > len(prefix) + 1 and stem[len(prefix)] in "_-.":
        return stem[len(prefix) + 1:]
    return stem


def _one_scene(entries: Iterable[tuple[list[str], list[int], list[SceneSource]] | None]) -> SceneSource | None:
    """The one scene with files in the folders ``entries`` (values of :func:`_files_by_folder`; ``None`` for a
    folder without any), or ``None`` where there is none or more than one."""
    found = {id(s): s for e in entries if e is not None for s in e[2]}
    return next(iter(found.values())) if len(found) == 1 else None


def _resolution(f: Path) -> int:
    """The metres of a Sentinel-2 L2A band file's resolution suffix (``..._B04_10m``: 10); 0 without one."""
    return split_resolution(f.stem)[0]


def _broken_link(path: Path) -> Problem:
    """The problem of a symbolic link that leads nowhere: dangling, or a cycle of links; or whose target cannot be
    looked at (a folder on its way not readable)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Problem(str(path), LINK_CYCLE)
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            return Problem(str(path), f"cannot read: {e.strerror or e}")
    return Problem(str(path), BROKEN_LINK)


def _walk(root: Path, files: list[Path], problems: list[Problem], seen: set[tuple[int, int]],
          linked: list[Path] | None = None) -> None:
    """Add the files under the folder ``root`` to ``files``, following symbolic links to folders and files.

    Each folder is entered once, known by its device and inode in ``seen``: a link back to a folder above it (a
    cycle) or a second path to a folder already walked is not walked again. A file reached by several paths is
    listed once by :func:`discover` (by its resolved path). The resolved path of each folder reached through a link
    is added to ``linked`` (when given): what is found there lies under it, not under ``root``.
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                log.debug("%s: a folder already walked (a link cycle or a second link to it): skipped", folder)
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            problems.append(Problem(str(folder), f"cannot read folder: {e.strerror or e}"))
            continue
        sub = []
        for e in entries:
            try:
                if e.is_dir():  # follows a link to a folder
                    sub.append(Path(e.path))
                    if linked is not None and e.is_symlink():
                        linked.append(Path(os.path.realpath(e.path)))
                elif e.is_file():
                    files.append(Path(e.path))
                elif e.is_symlink():
                    problems.append(_broken_link(Path(e.path)))
            except OSError as err:  # a link that leads back to itself raises ELOOP here
                problems.append(_broken_link(Path(e.path)) if e.is_symlink()
                                else Problem(e.path, f"cannot read: {err.strerror or err}"))
        stack.extend(reversed(sub))


def discover(paths: list[str | Path], linked: list[Path] | None = None,
             lone_companions: bool = False) -> tuple[list[SceneSource], list[Problem]]:
    """Walk files and folders and group what is found into scenes.

    Symbolic links to folders and files are followed (a folder is walked once, however many links lead to it);
    what is found is known by its resolved path, so a file reachable by two paths is one input, and a scene's key
    is the same whichever path led to it.

    Args:
        linked: filled with the resolved paths of the folders under ``paths`` reached through a symbolic link (the
            keys of the scenes found there lie under them, not under ``paths``: ``ingest --prune`` looks there too).
        lone_companions: a companion file named on its own that no scene found takes (``ingest a/TCI.tif``) is a
            problem, saying why (:func:`_lone_companion`), as ingest reports it; without it, it is left out, and a
            caller that expects one scene (a query by file) says what the file is in its own words.

    Returns:
        (scenes sorted by key, problems such as paths that do not exist)
    """
    tokens = band_tokens()
    aux_pats = _aux_patterns()
    problems: list[Problem] = []
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()
    named: dict[Path, Path] = {}  # files named on their own (not found in a folder): resolved -> as given
    for p in map(Path, paths):
        if p.is_symlink() and not p.exists():
            problems.append(_broken_link(p))
        elif not p.exists():
            problems.append(Problem(str(p), "no such file or directory"))
        elif p.is_dir():
            _walk(p, files, problems, seen, linked)
        else:
            files.append(p)
            named.setdefault(p.resolve(), p)
    # every file found, named or in a folder: resolved -> a path it was reached by, one whose name is a raster's
    # if any is (a folder of links NAME.tif -> cache/3f9a0c: the links' names are what say they are rasters)
    given_as: dict[Path, Path] = {}
    for f in files:
        r = f.resolve()
        if r not in given_as or (f.suffix.lower() in RASTER_SUFFIXES
                                 and given_as[r].suffix.lower() not in RASTER_SUFFIXES):
            given_as[r] = f
    files = sorted(given_as)

    sources: list[SceneSource] = []
    claimed: set[Path] = set()
    items: set[Path] = set()  # STAC Item files
    not_pixels: set[Path] = set()  # the items' thumbnails, overviews and metadata rasters (_stac_not_pixels)
    unread: dict[Path, tuple[Path, str]] = {}  # folder -> a STAC item in it that could not be read, why
    for f in files:
        if f.suffix.lower() == ".json":
            doc = _is_stac_item(f)
            if isinstance(doc, str):
                unread.setdefault(f.parent, (f, doc))
            elif doc is not None:
                items.add(f)
                not_pixels |= _stac_not_pixels(f, doc)
                src = _stac_source(f, doc, tokens, aux_pats)
                if isinstance(src, Problem):
                    problems.append(src)
                else:
                    sources.append(src)
                    claimed.update(Path(v) for v in src.files.values())
    rasters = [f for f in files if f.suffix.lower() in RASTER_SUFFIXES and f not in claimed and f not in not_pixels]
    if unread:  # the rasters beside an item that could not be read wait for it (see _is_stac_item)
        held = {folder: sum(f.parent == folder for f in rasters) for folder in unread}
        rasters = [f for f in rasters if f.parent not in unread]
        for folder, (item, reason) in unread.items():
            n = held[folder]
            problems.append(Problem(str(item), reason + (f"; the {n} raster{'s' if n != 1 else ''} beside it "
                                                         f"{'are' if n != 1 else 'is'} left out until it can be read"
                                                         if n else "")))
    aux = [f for f in rasters if any(re.search(p, f.name) for p in aux_pats)]
    aux_set = set(aux)  # built once: in the comprehension's test it was rebuilt per raster (quadratic)
    rasters = [f for f in rasters if f not in aux_set]

    groups: dict[tuple[Path, str], dict[str, Path]] = {}
    singles: list[Path] = []
    for f in rasters:
        if LABEL_NAME.search(f.stem):
            sources.append(SceneSource(key=str(f), files={"*": str(f)}, role="labels"))
            continue
        granule = in_l2a_granule(f)
        split = split_band_token(f.stem, tokens, resolution_suffix=granule)
        if split is None:
            singles.append(f)
            continue
        prefix, tok = split
        # a Sentinel-2 L2A granule's IMG_DATA/R10m, R20m and R60m hold one product: each band from its finest folder
        group = groups.setdefault((f.parent.parent if granule else f.parent, prefix), {})
        if tok not in group or (granule and _resolution(f) < _resolution(group[tok])):
            group[tok] = f
    for (folder, prefix), bands in groups.items():
        if len(bands) == 1:
            singles.extend(bands.values())
            continue
        key = str(folder / (prefix + "*")) if prefix else str(folder) + os.sep
        sources.append(SceneSource(key=key, files={k: str(v) for k, v in sorted(bands.items())}))
    sources.extend(SceneSource(key=str(f), files={"*": str(f)}) for f in singles)

    # attach auxiliary files to the scene in the same folder whose file name shares the longest prefix (a STAC
    # item's are the assets it lists, never a file beside it)
    folders = _files_by_folder([s for s in sources if s.role == "scene" and s.stac is None])
    subfolders: dict[Path, list[Path]] = {}
    for folder in folders:
        subfolders.setdefault(folder.parent, []).append(folder)
    for a in aux:
        best = _longest_prefix_source(folders.get(a.parent), a.name)
        if best is None and a.parent.name == "QI_DATA":  # a granule's masks: beside IMG_DATA, named apart from it
            img = a.parent.parent / "IMG_DATA"  # the granule's bands: in IMG_DATA (L1C) or its R10m, R20m, R60m
            best = _one_scene([folders.get(img), *(folders[f] for f in subfolders.get(img, ()))])
        elif best is None:  # named apart from the folder's one scene (SCL.tif beside B04.tif)
            best = _one_scene([folders.get(a.parent)])
        if best is not None:
            best.aux[_aux_role(a.stem, best)] = str(a)
    # a companion named on its own (``ingest a/TCI.tif``) whose product is not given with it went nowhere, unsaid
    # ("0 rejected", exit 0): the user asked for that file, so it is refused with why. One found in a folder stays
    # quiet: the folder is what was asked for, and it may hold the companion of a product kept elsewhere.
    if lone_companions:
        attached = {Path(p) for s in sources for p in s.aux.values()}
        problems.extend(_lone_companion(named[a], a, sources) for a in aux if a in named and a not in attached)
    # a link named NAME.tif (on its own or in a folder) to a file whose own name is no raster's (a content-addressed
    # cache: DVC, Nix, a Hugging Face hub snapshot) was dropped unsaid: the scan above judges files by their
    # resolved name
    problems.extend(_link_named_apart(given, f, RASTER_SUFFIXES) for f, given in given_as.items()
                    if given.suffix.lower() in RASTER_SUFFIXES and f.suffix.lower() not in RASTER_SUFFIXES)
    if not sources:  # nothing to ingest: the files named on their own that are no rasters are why, not sidecars
        problems.extend(_not_rasters(named, items))
    sources.sort(key=lambda s: s.key)
    return sources, problems


def _lone_companion(given: Path, path: Path, sources: list[SceneSource]) -> Problem:
    """Why a companion file named on its own (``given``, resolved ``path``) is not ingested: no scene of this run
    took it (its product's bands are not given with it, or none of the scenes beside it is its product). Its name is
    a companion's by some sensor's ``aux_patterns``, so it is never a scene of its own, whatever ``--sensor`` says."""
    whose = [n for n in list_sensors() if companion_of(path.name, n)]
    what = f"named as the companion file of a product ({', '.join(whose)}), not a scene of its own"
    beside = {s.key for s in sources if s.role == "scene"
              and any(Path(v).parent == path.parent for v in s.files.values())}
    if beside:
        return Problem(str(given), f"{what}, and none of the {len(beside)} scene(s) found beside it is its product "
                                   "(their names share no product id with its, and a companion named apart from "
                                   "its product goes only to its folder's only scene): not ingested")
    return Problem(str(given), f"{what}, and no band file of its product is given with it: name the product's "
                               f"folder ({given.parent}) to ingest it with its bands")


def _link_named_apart(given: Path, target: Path, suffixes: set[str]) -> Problem:
    """A link whose own name ends in one of ``suffixes`` to a file whose name does not (files are recognised by
    their resolved name)."""
    return Problem(str(given), f"a link to {target}, whose name does not end in {', '.join(sorted(suffixes))}: link "
                               "or copy it to a name that does")


def _not_rasters(named: dict[Path, Path], items: set[Path]) -> list[Problem]:
    """Files named on their own (resolved -> as given) that are neither rasters nor STAC Items. Asked of a call
    that found no scene at all (``ingest README.md``, ``ingest data.h5``): alone they were skipped, with "0
    rejected" and exit 0. Beside scenes they are sidecars (``ingest DIR/*`` names ``metadata.json``), ignored as
    in a folder."""
    out = []
    for f, given in named.items():
        if f in items or {f.suffix.lower(), given.suffix.lower()} & RASTER_SUFFIXES:  # (a .tif link: above)
            continue
        if f.suffix.lower() == ".json":
            out.append(Problem(str(given), "a JSON file that is not a STAC Item (a GeoJSON Feature with "
                                           "stac_version and assets)"))
        elif given.suffix.lower() == ".json":  # item.json -> cache/3f9a0c: STAC Items are found by their name
            out.append(_link_named_apart(given, f, {".json"}))
        else:
            out.append(Problem(str(given), f"not a raster file rsretrieve reads (its name must end in "
                                           f"{', '.join(sorted(RASTER_SUFFIXES))}, or be a STAC Item .json)"))
    return out


def _files_by_folder(sources: list[SceneSource]) -> dict[Path, tuple[list[str], list[int], list[SceneSource]]]:
    """folder -> (file names sorted, each one's position in source and file order, its source): what
    :func:`_longest_prefix_source` looks an auxiliary file's scene up in."""
    entries: dict[Path, list[tuple[str, int, SceneSource]]] = {}
    order = 0
    for s in sources:
        for v in s.files.values():
            v = Path(v)
            entries.setdefault(v.parent, []).append((v.name, order, s))
            order += 1
    out = {}
    for folder, rows in entries.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        out[folder] = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return out


def _token_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of ``a`` and ``b`` made of whole name parts (parts end at ``_``,
    ``-`` or ``.``): ``SCL.tif`` shares nothing with ``S2A_MSIL2A_...tif`` (one letter), ``stack_SCL.tif`` shares
    ``stack`` with ``stack.tif``, and two acquisitions' ``LC08_L2SP_042034_2020...`` share ``LC08_L2SP_042034_``."""
    n = len(os.path.commonprefix([a, b]))
    if n == 0 or a[n - 1] in _SEPARATORS or (n < len(a) and n < len(b) and a[n] in _SEPARATORS
                                              and b[n] in _SEPARATORS):
        return n
    return max(a.rfind(c, 0, n) for c in _SEPARATORS) + 1


_SEPARATORS = "_-."


def _longest_prefix_source(folder: tuple[list[str], list[int], list[SceneSource]] | None,
                           name: str) -> SceneSource | None:
    """The source with a file (in ``folder``, from :func:`_files_by_folder`) whose name shares the longest
    non-empty prefix of whole name parts with ``name`` (:func:`_token_prefix`); of several, the first in source and
    file order. ``None`` when none shares one.

    Among sorted names, the longest common prefix with ``name`` is found beside the place ``name`` sorts into, and
    the names sharing it are one contiguous run: a lookup costs a few comparisons, not one per file of the archive
    (comparing with every scene's files took a minute for 500 EnMAP scenes with their ten quality masks, and grew
    with the square of the archive).
    """
    if folder is None:
        return None
    names, orders, srcs = folder
    at = bisect_left(names, name)
    best = max((_token_prefix(names[i], name) for i in (at - 1, at) if 0 <= i < len(names)), default=0)
    if best == 0:
        return None
    prefix = name[:best]
    lo = bisect_left(names, prefix)
    hi = lo
    while hi < len(names) and names[hi].startswith(prefix):
        hi += 1
    return srcs[min(range(lo, hi), key=orders.__getitem__)]
