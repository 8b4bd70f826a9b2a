"""Query results as files: GeoJSON footprints with scores (QGIS opens it) and a PNG contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

from shapely import orient_polygons, wkt
from shapely.geometry import MultiPolygon, mapping

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.tiles import read_scene_tiles
from rsretrieve.files import write_atomic
from rsretrieve.viz.quicklook import contact_sheet


def feature_collection(query, hits) -> dict:
    """A GeoJSON FeatureCollection (RFC 7946: EPSG:4326 lon/lat) of the hits, best first; the query in ``query``.

    The query is a foreign member ``query`` (RFC 7946 6.1), not ``properties``, which 7.1 forbids on a
    FeatureCollection. Rings follow the right-hand rule (exteriors counter-clockwise, holes clockwise): the catalog's
    footprints of cells split at the antimeridian or closed around a pole come out of the split clockwise. When one
    footprint is a MultiPolygon (split at the antimeridian), every footprint is one: a layer of mixed Polygon and
    MultiPolygon features has no geometry type for OGR (QGIS) to give it.
    """
    geoms = [orient_polygons(wkt.loads(h.footprint), exterior_cw=False) for h in hits]
    if any(g.geom_type == "MultiPolygon" for g in geoms):
        geoms = [MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms]
    feats = []
    for h, geom in zip(hits, geoms):
        props = {k: v for k, v in h.to_dict().items() if k not in ("footprint",)}
        feats.append({"type": "Feature", "geometry": mapping(geom), "properties": props})
    return {"type": "FeatureCollection", "features": feats,
            "query": {"origin": query.origin, "sensor": query.sensor, "cell_id": query.cell_id,
                      "tile_id": query.tile_id, "acquired": query.acquired}}


def write_geojson(path: str | Path, query, hits) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(feature_collection(query, hits), indent=1).encode())
    return path


class TileReadError(Exception):
    """A hit's tile cannot be read from its scene file (moved, deleted or damaged since it was ingested)."""


def write_png(path: str | Path, workspace: str | Path, query, hits) -> Path:
    """Contact sheet: the query tile, then each hit with rank, score, tile id, sensor and date under it.

    Raises:
        TileReadError: a hit's scene file cannot be read; the message names the tile and the file.
    """
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
            items.append((arr, h.sensor, f"#{h.rank}  {h.score:.3f}  tile {h.tile_id}\n{h.sensor} "
                                         f"{(h.acquired or '')[:10]}"))
    qcap = f"query {query.sensor}\n{(query.acquired or '')[:10]}"
    return contact_sheet(path, (query.array, query.sensor, qcap), items,
                         title=query.origin + (f"  ({query.cell_id})" if query.cell_id else ""))
