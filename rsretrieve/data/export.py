"""Export the catalog (and embeddings, once they exist) as GeoParquet: one row per tile."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from rsretrieve.data.catalog import Catalog

log = logging.getLogger(__name__)

_COLUMNS = ["tile_id", "scene_id", "cell_id", "sensor", "acquired", "grid_epsg", "row", "col", "col_off", "row_off",
            "width", "height", "coverage", "valid_fraction", "cloud_fraction", "lon", "lat", "label_scheme", "label",
            "label_name", "scene_key"]
_INT_COLUMNS = ["tile_id", "scene_id", "grid_epsg", "row", "col", "col_off", "row_off", "width", "height"]
_FLOAT_COLUMNS = ["coverage", "valid_fraction", "cloud_fraction", "lon", "lat"]
_STR_COLUMNS = ["cell_id", "sensor", "label_scheme", "label_name", "scene_key"]


def export_geoparquet(catalog: Catalog, out: str | Path,
                      embeddings: tuple[np.ndarray, np.ndarray] | None = None) -> int:
    """Write every tile as a GeoParquet row (geometry = footprint in EPSG:4326), atomically.

    The label columns are the cell's purest land-cover label (``label_scheme``, ``label``, ``label_name``); a class
    value means something only together with its scheme.

    Args:
        catalog: the workspace catalog.
        out: the ``.parquet`` file to write.
        embeddings: optional ``(tile_ids (N,), vectors (N, D) float32)``; tiles without a vector get null.

    Returns:
        The number of rows written.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely import wkt

    rows = catalog.conn.execute(
        "SELECT t.*, s.acquired, s.key AS scene_key, l.scheme AS label_scheme, l.label, l.label_name FROM tiles t"
        " JOIN scenes s ON s.scene_id = t.scene_id LEFT JOIN primary_labels l ON l.cell_id = t.cell_id"
        " ORDER BY t.tile_id").fetchall()
    df = pd.DataFrame([dict(r) for r in rows], columns=[*_COLUMNS, "footprint"])
    df["acquired"] = pd.to_datetime(df["acquired"], utc=True)
    # the column types do not depend on the rows (an empty catalog would give Arrow 'null' columns)
    df = df.astype({**{c: "int64" for c in _INT_COLUMNS}, **{c: "float64" for c in _FLOAT_COLUMNS},
                    **{c: "string" for c in _STR_COLUMNS}, "label": "Int64"})
    geom = [wkt.loads(w) for w in df.pop("footprint")]
    gdf = gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")
    if embeddings is not None:
        ids, vecs = embeddings
        pos = {int(t): i for i, t in enumerate(ids)}
        gdf["embedding"] = [vecs[pos[t]].astype(np.float32).tolist() if t in pos else None
                            for t in gdf["tile_id"].tolist()]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        gdf.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %d tiles to %s", len(gdf), out)
    return len(gdf)
