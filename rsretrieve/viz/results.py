"""Query results as files: GeoJSON footprints with scores (QGIS opens it) and a PNG contact sheet."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import shapely
from shapely import orient_polygons

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.files import write_file_atomic
from rsretrieve.index.query import hits_json, score_decimals
from rsretrieve.viz.quicklook import contact_sheet

#: features encoded at a time by :func:`write_geojson`: the text of 100 000 footprints at once is 180 MB
_CHUNK = 4096


def feature_collection(query, hits) -> dict:
    """A GeoJSON FeatureCollection (RFC 7946: EPSG:4326 lon/lat) of the hits, best first, then the query's own
    footprint; the query also in ``query``.

    Each feature's ``role`` says what it is: ``"hit"`` (with ``rank`` and ``score``), or ``"query"``, the last
    feature, the ground the query tile shows (its ``origin`` says where it came from; no ``rank`` or ``score``), so
    that a GIS shows the query beside its hits in one layer. A query tile without a footprint (one made by hand in
    Python) has no feature. Scores are written as :func:`~rsretrieve.index.query.output_scores` gives them.

    The query is also a foreign member ``query`` (RFC 7946 6.1), not ``properties``, which 7.1 forbids on a
    FeatureCollection. Rings follow the right-hand rule (exteriors counter-clockwise, holes clockwise): the catalog's
    footprints of cells split at the antimeridian or closed around a pole come out of the split clockwise. When one
    footprint is a MultiPolygon (split at the antimeridian), every footprint is one, the query's included: a layer of
    mixed Polygon and MultiPolygon features has no geometry type for OGR (QGIS) to give it.
    """
    return {"type": "FeatureCollection",
            "features": [{"type": "Feature", "geometry": json.loads(g), "properties": json.loads(p)}
                         for g, p in _features(query, hits)],
            "query": query.describe()}


def write_geojson(path: str | Path, query, hits) -> Path:
    """Write :func:`feature_collection` to ``path`` (atomically), one feature a line.

    Written feature by feature, not by ``json.dumps(..., indent=1)`` of the whole collection: json's indent is pure
    Python (only compact text has its C encoder), and with each coordinate on a line of its own 100 000 hits took
    22 s to write as 280 MB (4 s now, 173 MB, the same collection read back). Geometries come from GEOS's GeoJSON
    writer, which writes the shortest text that reads back as each coordinate, as json does.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write('{"type": "FeatureCollection", "features": [')
            sep = "\n"
            for g, p in _features(query, hits):
                f.write(f'{sep}{{"type": "Feature", "geometry": {g}, "properties": {p}}}')
                sep = ",\n"
            f.write(f'\n],\n"query": {json.dumps(query.describe())}}}\n')

    write_file_atomic(path, write)
    return path


def _features(query, hits: Sequence) -> Iterator[tuple[str, str]]:
    """(geometry, properties), each as JSON text, of each hit, best first, then of the query when it has a footprint.

    The footprints are parsed, oriented and written by GEOS, vectorised (a chunk at a time for the text): per hit in
    Python (``wkt.loads``, ``orient_polygons``, ``mapping``) 100 000 of them took 7.6 s.
    """
    wkts = [h.footprint for h in hits]
    fp = query.footprint
    if fp:
        wkts.append(fp)
    geoms = orient_polygons(shapely.from_wkt(np.array(wkts, dtype=object)), exterior_cw=False)
    multi = shapely.get_type_id(geoms) == shapely.GeometryType.MULTIPOLYGON
    if multi.any() and not multi.all():
        single = np.flatnonzero(~multi)
        geoms[single] = shapely.multipolygons(geoms[single], indices=np.arange(single.size))
    props = hits_json(hits, role="hit", footprint=False)
    if fp:
        props = itertools.chain(props, [json.dumps({"role": "query", **query.describe()})])
    for i in range(0, len(wkts), _CHUNK):
        yield from zip(shapely.to_geojson(geoms[i:i + _CHUNK]).tolist(), props)


class TileReadError(Exception):
    """A hit's tile cannot be read from its scene file (moved, deleted or damaged since it was ingested)."""


def write_png(path: str | Path, workspace: str | Path, query, hits) -> Path:
    """Contact sheet: the query tile, then each hit with rank, score, tile id, sensor and date under it.

    Raises:
        TileReadError: a hit's scene file cannot be read; the message names the tile and the file.
    """
    # 3 decimals, more where two neighbours would read alike (see score_decimals)
    d = score_decimals([h.score for h in hits], least=3)
    with Catalog(Path(workspace) / "catalog.sqlite") as cat:
        items = []
        for h in hits:
            t = cat.tile(h.tile_id)
            try:
                _, arr = next(read_scene_tiles(cat.scene(t["scene_id"]), [t], cat.tile_m))
            except OSError as e:  # rasterio's errors carry the file in the message
                why = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e).splitlines()[0]
                raise TileReadError(f"cannot read tile {h.tile_id} ({h.sensor}) for the contact sheet: {why}") \
                    from None
            items.append((arr, h.sensor, f"#{h.rank}  {h.score:.{d}f}  tile {h.tile_id}\n{h.sensor} "
                                         f"{(h.acquired or '')[:10]}"))
    qcap = f"query {query.sensor}\n{(query.acquired or '')[:10]}"
    return contact_sheet(path, (query.array, query.sensor, qcap), items,
                         title=query.origin + (f"  ({query.cell_id})" if query.cell_id else ""))
