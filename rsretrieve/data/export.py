"""Export the catalog (and embeddings, once they exist) as GeoParquet: one row per tile."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from rsretrieve.data.catalog import Catalog
from rsretrieve.files import replaced_file

log = logging.getLogger(__name__)

_COLUMNS = ["tile_id", "scene_id", "cell_id", "sensor", "acquired", "grid_epsg", "row", "col", "col_off", "row_off",
            "width", "height", "coverage", "valid_fraction", "cloud_fraction", "lon", "lat", "label_scheme", "label",
            "label_name", "scene_key"]
_INT_COLUMNS = ["tile_id", "scene_id", "grid_epsg", "row", "col", "col_off", "row_off", "width", "height"]
_FLOAT_COLUMNS = ["coverage", "valid_fraction", "cloud_fraction", "lon", "lat"]
_STR_COLUMNS = ["cell_id", "sensor", "label_scheme", "label_name", "scene_key"]


def export_geoparquet(catalog: Catalog, out: str | Path,
                      embeddings: tuple[np.ndarray, np.ndarray] | None = None,
                      provenance: dict | None = None) -> int:
    """Write every tile as a GeoParquet row (geometry = footprint in EPSG:4326), atomically.

    The label columns are the cell's purest land-cover label (``label_scheme``, ``label``, ``label_name``); a class
    value means something only together with its scheme.

    Args:
        catalog: the workspace catalog.
        out: the ``.parquet`` file to write.
        embeddings: optional ``(tile_ids (N,), vectors (N, D) float32)``: column ``embedding``, a fixed-size list
            of D float32 (Arrow ``fixed_size_list<float>[D]``); tiles without a vector get null.
        provenance: what made the embeddings (e.g. the model's checksum and name, the index generation), written as
            JSON under the file's schema metadata key ``rsretrieve`` (read it with
            ``json.loads(pyarrow.parquet.read_schema(out).metadata[b"rsretrieve"])``): vectors of two models are not
            comparable, and the file would not say which model it holds otherwise.

    Returns:
        The number of rows written.
    """
    import geopandas as gpd
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    rows = catalog.conn.execute(
        "SELECT t.*, s.acquired, s.key AS scene_key, l.scheme AS label_scheme, l.label, l.label_name FROM tiles t"
        " JOIN scenes s ON s.scene_id = t.scene_id LEFT JOIN primary_labels l ON l.cell_id = t.cell_id"
        " ORDER BY t.tile_id").fetchall()
    df = pd.DataFrame([dict(r) for r in rows], columns=[*_COLUMNS, "footprint"])
    df["acquired"] = pd.to_datetime(df["acquired"], utc=True).astype("datetime64[us, UTC]")  # [s] when empty
    # the column types do not depend on the rows (an empty catalog would give Arrow 'null' columns)
    df = df.astype({**{c: "int64" for c in _INT_COLUMNS}, **{c: "float64" for c in _FLOAT_COLUMNS},
                    **{c: "string" for c in _STR_COLUMNS}, "label": "Int64"})
    # exterior rings counter-clockwise, as the GeoJSON outputs write them: footprints split at the antimeridian
    # came out clockwise, beside counter-clockwise cells (GeoParquet allows either, but one file had both)
    geom = shapely.orient_polygons(shapely.from_wkt(np.array(df.pop("footprint").tolist(), dtype=object)),
                                   exterior_cw=False)
    gdf = gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")
    column = None
    if embeddings is not None:
        ids, vecs = embeddings
        vecs = np.asarray(vecs, np.float32)  # (N, D)
        pos = {int(t): i for i, t in enumerate(ids)}
        rows = np.array([pos.get(t, -1) for t in gdf["tile_id"].tolist()], np.int64)
        dense = vecs[np.maximum(rows, 0)] if len(vecs) else np.zeros((len(rows), vecs.shape[1]), np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(dense.ravel()), vecs.shape[1], mask=pa.array(rows < 0))
    out = replaced_file(Path(out))  # a link: the file it points to is replaced, the link kept
    if out.exists() and not out.is_file():  # a rename put a regular file in the FIFO's place, its reader got nothing
        raise OSError(errno.EINVAL, "not a regular file (a FIFO or a device): the GeoParquet file is written whole "
                                    "and renamed into place", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        if column is None:
            gdf.to_parquet(tmp, index=False)
        else:
            # appended to the Arrow table geopandas writes (its 'geo' metadata kept): through pandas, the column
            # would become a variable-length list, or an ArrowDtype that pandas cannot read back from the file
            buf = io.BytesIO()
            gdf.to_parquet(buf, index=False)
            table = pq.read_table(io.BytesIO(buf.getvalue())).append_column("embedding", column)
            if provenance:
                meta = {**(table.schema.metadata or {}), b"rsretrieve": json.dumps(provenance).encode()}
                table = table.replace_schema_metadata(meta)
            pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %d tiles to %s", len(gdf), out)
    return len(gdf)


def _remove_dead_temporaries(out: Path) -> None:
    """Remove the temporary files of earlier exports to ``out`` that were killed (kill -9) before their rename.

    A temporary file is named by its process id: one of a process still alive (another export to the same file
    running now) is left alone.
    """
    for tmp in out.parent.glob(f".{out.name}.tmp*"):
        pid = tmp.name[len(f".{out.name}.tmp"):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # dead: its file is garbage
            tmp.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            continue
