"""The catalog: scenes and tiles in SQLite (WAL) with an R*Tree over EPSG:4326 tile footprints.

One scene and all its tiles are written in one transaction, so a process killed at any moment leaves the catalog
as it was before that scene or after it, never in between; together with the per-scene fingerprint this makes
ingest idempotent and resumable.

Tables:
    meta(key, value)                 schema version, tile size of the workspace grid
    scenes(scene_id, key, ...)       one row per scene (a file, or a folder of per-band files), keyed by path
    tiles(tile_id, scene_id, ...)    one row per grid cell a scene covers
    tile_rtree(id, lon/lat box, +tile_id)   one entry per footprint part (two for a tile across the antimeridian)
    scene_rtree(scene_id, entries)   scenes whose R*Tree entries have ids 2 * tile_id + part (found by id on removal);
                                     other scenes (written before, by an older rsretrieve, or beside higher
                                     automatic ids) have automatic ids and are found by box
    cell_labels(cell_id, scheme, label, ...)   dominant land-cover class per cell and label scheme, from
                                     land-cover rasters; labels compare only within a scheme
                                     (:mod:`rsretrieve.data.labels`)

Counts kept by triggers (what :meth:`Catalog.counts` reads instead of scanning a million tiles):
    tile_cells(cell_id, sensor, n)   tiles per cell and sensor
    sensor_counts(sensor, tiles, cells, valid_sum, valid_err)   per sensor; the sum of valid fractions is compensated
    scheme_counts(scheme, labels)    labels per scheme
    totals(name, n)                  'cells' (with a tile of any sensor) and 'labelled_cells'

Schema versions: 1 had one label per cell without a scheme (every source's class values in one integer space);
2 keys labels by (cell, scheme). Opening a version-1 catalog migrates it in place, in one transaction (the scheme of
each old label is found from its source raster as a fresh ingest would find it). The counts came within version 2:
their tables and triggers are created, and filled once, by the first open that finds them missing, and a version-2
rsretrieve without them still writes catalogs that have them correctly (the triggers are in the file).

Opening takes the write lock only when something of the schema is missing or older (a fresh file, a migration):
readers of a current catalog never wait for an ingest, nor an ingest for them (WAL).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scenes(
    scene_id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,          -- absolute path of the file, or folder/prefix of a per-band product
    fingerprint TEXT NOT NULL,         -- sizes and mtimes of its files and " rules=N" (ingest.INGEST_RULES)
    sensor TEXT NOT NULL,
    layout TEXT NOT NULL,
    files TEXT NOT NULL,               -- JSON: band name -> path, or {"*": path} for a stacked file
    aux TEXT NOT NULL,                 -- JSON: auxiliary files (cloud masks, metadata)
    crs TEXT NOT NULL,                 -- WKT of the reference grid
    transform TEXT NOT NULL,           -- JSON: the 6 affine coefficients of the reference grid
    width INTEGER NOT NULL, height INTEGER NOT NULL,
    res_m REAL NOT NULL,               -- pixel size of the reference grid in metres (approximate for degrees)
    acquired TEXT,                     -- ISO 8601 UTC, NULL when unknown
    acquired_ts INTEGER,               -- unix seconds, NULL when unknown
    west REAL NOT NULL, south REAL NOT NULL, east REAL NOT NULL, north REAL NOT NULL,  -- west > east: antimeridian
    footprint TEXT NOT NULL,           -- WKT, EPSG:4326
    grid_epsg INTEGER NOT NULL,
    valid_fraction REAL NOT NULL,
    cloud_fraction REAL NOT NULL,
    n_tiles INTEGER NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tiles(
    tile_id INTEGER PRIMARY KEY,
    scene_id INTEGER NOT NULL REFERENCES scenes(scene_id),
    cell_id TEXT NOT NULL,
    grid_epsg INTEGER NOT NULL, row INTEGER NOT NULL, col INTEGER NOT NULL,
    sensor TEXT NOT NULL,
    acquired_ts INTEGER,
    col_off INTEGER NOT NULL, row_off INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    coverage REAL NOT NULL,            -- fraction of the cell with data (inside the scene, not nodata)
    valid_fraction REAL NOT NULL,      -- fraction of the cell with data and no cloud
    cloud_fraction REAL NOT NULL,      -- fraction of the data pixels flagged as cloud
    lon REAL NOT NULL, lat REAL NOT NULL,
    footprint TEXT NOT NULL,           -- WKT, EPSG:4326
    UNIQUE(scene_id, cell_id)
);
CREATE INDEX IF NOT EXISTS tiles_cell ON tiles(cell_id);
CREATE INDEX IF NOT EXISTS tiles_scene ON tiles(scene_id);
CREATE INDEX IF NOT EXISTS tiles_sensor_time ON tiles(sensor, acquired_ts);
CREATE INDEX IF NOT EXISTS scenes_sensor ON scenes(sensor);      -- counts(): scenes per sensor without their rows
CREATE INDEX IF NOT EXISTS scenes_acquired ON scenes(acquired);  -- counts(): first and last acquired
CREATE VIRTUAL TABLE IF NOT EXISTS tile_rtree USING rtree(id, min_lon, max_lon, min_lat, max_lat, +tile_id INTEGER);
CREATE TABLE IF NOT EXISTS scene_rtree(
    scene_id INTEGER PRIMARY KEY,
    entries INTEGER NOT NULL           -- R*Tree entries written, ids 2 * tile_id + part, for its tiles
);
CREATE TABLE IF NOT EXISTS cell_labels(
    cell_id TEXT NOT NULL,
    scheme TEXT NOT NULL,              -- nomenclature of the label ("synthetic", "corine", "igbp", "local:DIR", ...)
    label INTEGER NOT NULL,            -- class value within the scheme
    label_name TEXT NOT NULL,
    purity REAL NOT NULL,              -- fraction of the cell in the dominant class
    source TEXT NOT NULL,              -- the land-cover raster it came from
    PRIMARY KEY (cell_id, scheme)
);
"""

#: one label per cell for views that show a single class: the purest, ties by scheme name
_PRIMARY_LABELS = """
CREATE VIEW IF NOT EXISTS primary_labels AS
SELECT l.* FROM cell_labels l WHERE l.scheme = (
    SELECT l2.scheme FROM cell_labels l2 WHERE l2.cell_id = l.cell_id ORDER BY l2.purity DESC, l2.scheme LIMIT 1);
CREATE INDEX IF NOT EXISTS cell_labels_scheme ON cell_labels(scheme, label);
CREATE INDEX IF NOT EXISTS cell_labels_source ON cell_labels(source);
"""

#: (a, b, x) -> SQL for the error term of Neumaier's compensated sum when x is added to a sum a (b is a + x):
#: the rounding error of a sum kept through a million additions and removals stays that of a few additions
_NEUMAIER = "CASE WHEN abs({a}) >= abs({x}) THEN ({a} - {b}) + {x} ELSE ({x} - {b}) + {a} END"


def _count_tile(row: str, sign: int) -> str:
    """Trigger statements that count the tile ``row`` (``NEW``) in (sign 1) or out (sign -1, ``OLD``) of the counts;
    the distinct cells are those whose tile_cells count goes from or to zero."""
    if sign > 0:
        return f"""
    INSERT INTO totals VALUES ('cells', NOT EXISTS (SELECT 1 FROM tile_cells WHERE cell_id = {row}.cell_id))
        ON CONFLICT(name) DO UPDATE SET n = n + excluded.n;
    INSERT INTO sensor_counts VALUES ({row}.sensor, 1, NOT EXISTS (SELECT 1 FROM tile_cells
            WHERE cell_id = {row}.cell_id AND sensor = {row}.sensor), {row}.valid_fraction, 0.0)
        ON CONFLICT(sensor) DO UPDATE SET tiles = tiles + 1, cells = cells + excluded.cells,
            valid_sum = valid_sum + excluded.valid_sum,
            valid_err = valid_err + {_NEUMAIER.format(a="valid_sum", b="(valid_sum + excluded.valid_sum)",
                                                      x="excluded.valid_sum")};
    INSERT INTO tile_cells VALUES ({row}.cell_id, {row}.sensor, 1)
        ON CONFLICT(cell_id, sensor) DO UPDATE SET n = n + 1;"""
    return f"""
    UPDATE tile_cells SET n = n - 1 WHERE cell_id = {row}.cell_id AND sensor = {row}.sensor;
    DELETE FROM tile_cells WHERE cell_id = {row}.cell_id AND sensor = {row}.sensor AND n <= 0;
    UPDATE sensor_counts SET tiles = tiles - 1, cells = cells - NOT EXISTS (SELECT 1 FROM tile_cells
            WHERE cell_id = {row}.cell_id AND sensor = {row}.sensor),
        valid_sum = valid_sum - {row}.valid_fraction,
        valid_err = valid_err + {_NEUMAIER.format(a="valid_sum", b=f"(valid_sum - {row}.valid_fraction)",
                                                  x=f"(-{row}.valid_fraction)")}
        WHERE sensor = {row}.sensor;
    DELETE FROM sensor_counts WHERE sensor = {row}.sensor AND tiles <= 0;
    UPDATE totals SET n = n - NOT EXISTS (SELECT 1 FROM tile_cells WHERE cell_id = {row}.cell_id)
        WHERE name = 'cells';"""


#: the tables and triggers that keep the counts; created after the migrations (the label triggers need version 2's
#: cell_labels). A REPLACE fires the delete triggers of the rows it replaces only with ``recursive_triggers`` on,
#: which every Catalog connection turns on (write_labels replaces labels).
_COUNTS = f"""
CREATE TABLE IF NOT EXISTS tile_cells(
    cell_id TEXT NOT NULL, sensor TEXT NOT NULL,
    n INTEGER NOT NULL,                -- tiles of this sensor on this cell
    PRIMARY KEY (cell_id, sensor)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_counts(
    sensor TEXT PRIMARY KEY,
    tiles INTEGER NOT NULL, cells INTEGER NOT NULL,
    valid_sum REAL NOT NULL,           -- sum of the tiles' valid_fraction is valid_sum + valid_err
    valid_err REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scheme_counts(scheme TEXT PRIMARY KEY, labels INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS totals(name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS tiles_count_insert AFTER INSERT ON tiles BEGIN{_count_tile("NEW", 1)}
END;
CREATE TRIGGER IF NOT EXISTS tiles_count_delete AFTER DELETE ON tiles BEGIN{_count_tile("OLD", -1)}
END;
CREATE TRIGGER IF NOT EXISTS tiles_count_update AFTER UPDATE OF cell_id, sensor, valid_fraction ON tiles
BEGIN{_count_tile("OLD", -1)}{_count_tile("NEW", 1)}
END;
CREATE TRIGGER IF NOT EXISTS labels_count_insert AFTER INSERT ON cell_labels BEGIN
    INSERT INTO totals VALUES ('labelled_cells', NOT EXISTS (SELECT 1 FROM cell_labels
            WHERE cell_id = NEW.cell_id AND rowid <> NEW.rowid))
        ON CONFLICT(name) DO UPDATE SET n = n + excluded.n;
    INSERT INTO scheme_counts VALUES (NEW.scheme, 1) ON CONFLICT(scheme) DO UPDATE SET labels = labels + 1;
END;
CREATE TRIGGER IF NOT EXISTS labels_count_delete AFTER DELETE ON cell_labels BEGIN
    UPDATE totals SET n = n - NOT EXISTS (SELECT 1 FROM cell_labels WHERE cell_id = OLD.cell_id)
        WHERE name = 'labelled_cells';
    UPDATE scheme_counts SET labels = labels - 1 WHERE scheme = OLD.scheme;
    DELETE FROM scheme_counts WHERE scheme = OLD.scheme AND labels <= 0;
END;
CREATE TRIGGER IF NOT EXISTS labels_count_update AFTER UPDATE OF cell_id, scheme ON cell_labels BEGIN
    -- the table already holds NEW: OLD's cell lost its last label if none is left, NEW's cell gained its first if
    -- no row but NEW has it (nothing changes for a label that stays on its cell)
    UPDATE totals SET n = n - (OLD.cell_id <> NEW.cell_id AND NOT EXISTS (SELECT 1 FROM cell_labels
            WHERE cell_id = OLD.cell_id))
                            + (OLD.cell_id <> NEW.cell_id AND NOT EXISTS (SELECT 1 FROM cell_labels
            WHERE cell_id = NEW.cell_id AND rowid <> NEW.rowid))
        WHERE name = 'labelled_cells';
    UPDATE scheme_counts SET labels = labels - 1 WHERE scheme = OLD.scheme;
    DELETE FROM scheme_counts WHERE scheme = OLD.scheme AND labels <= 0;
    INSERT INTO scheme_counts VALUES (NEW.scheme, 1) ON CONFLICT(scheme) DO UPDATE SET labels = labels + 1;
END;
"""

#: computes every count from the tables (a catalog written before the counts, or one whose triggers were dropped)
_RECOUNT = """
DELETE FROM tile_cells;
DELETE FROM sensor_counts;
DELETE FROM scheme_counts;
DELETE FROM totals;
INSERT INTO tile_cells SELECT cell_id, sensor, COUNT(*) FROM tiles GROUP BY cell_id, sensor;
INSERT INTO sensor_counts SELECT sensor, COUNT(*), COUNT(DISTINCT cell_id), SUM(valid_fraction), 0.0 FROM tiles
    GROUP BY sensor;
INSERT INTO scheme_counts SELECT scheme, COUNT(*) FROM cell_labels GROUP BY scheme;
INSERT INTO totals VALUES ('cells', (SELECT COUNT(DISTINCT cell_id) FROM tiles)),
    ('labelled_cells', (SELECT COUNT(DISTINCT cell_id) FROM cell_labels));
"""


#: the label keys of :meth:`Catalog.tiles` rows and the columns they come from
_LABEL_COLUMNS = {"label_scheme": "l.scheme", "label": "l.label", "label_name": "l.label_name"}


class SchemaError(Exception):
    """A catalog whose schema this version cannot use; the message names the file and what to do."""


@dataclass
class TileRow:
    """A tile to be written: one grid cell of one scene."""

    cell_id: str
    grid_epsg: int
    row: int
    col: int
    col_off: int
    row_off: int
    width: int
    height: int
    coverage: float
    valid_fraction: float
    cloud_fraction: float
    lon: float
    lat: float
    footprint: str
    #: (min_lon, min_lat, max_lon, max_lat) per footprint part
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class SceneRow:
    """A scene to be written."""

    key: str
    fingerprint: str
    sensor: str
    layout: str
    files: dict[str, str]
    aux: dict[str, str]
    crs: str
    transform: list[float]
    width: int
    height: int
    res_m: float
    acquired: str | None
    acquired_ts: int | None
    west: float
    south: float
    east: float
    north: float
    footprint: str
    grid_epsg: int
    valid_fraction: float
    cloud_fraction: float
    ingested_at: str


class Catalog:
    """The workspace catalog. Open with ``Catalog(path)``; use as a context manager to close it."""

    def __init__(self, path: str | Path, tile_m: float | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA recursive_triggers=ON")  # a REPLACE counts the rows it replaces out (_COUNTS)
        try:
            # the schema is checked by reading first: BEGIN IMMEDIATE on every open made a query wait for (or fail
            # beside) an ingest's transaction, and two readers take turns for a lock neither needed
            if not self._schema_current(tile_m):
                self._create_or_upgrade(tile_m)
        except SchemaError:
            self.conn.close()
            raise
        except sqlite3.OperationalError as e:
            self.conn.close()
            version = _stored_version(self.path)
            if version is not None and version < SCHEMA_VERSION:
                raise SchemaError(
                    f"{self.path}: catalog schema version {version} needs upgrading to {SCHEMA_VERSION} (land-cover "
                    f"labels keyed by scheme), which failed: {e}. Make the file and its folder writable and run "
                    f"`rsretrieve catalog --workspace {self.path.parent}` once to upgrade it, or ingest the data "
                    f"again into a new workspace") from None
            raise
        stored = self.meta("tile_m")
        if tile_m is not None and stored is not None and float(stored) != float(tile_m):
            raise ValueError(f"{self.path}: this workspace's grid has {float(stored):g} m tiles, not {tile_m:g} m")

    # -- schema versions -----------------------------------------------------------------------------------------
    def _schema_current(self, tile_m: float | None) -> bool:
        """Whether the catalog has every table, index, view and trigger of this version and nothing to record, read
        without a write lock (a newer version is refused here)."""
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        if "meta" not in names:
            return False
        self._check_not_newer()
        return (_SCHEMA_NAMES <= names and self.meta("schema_version") == str(SCHEMA_VERSION)
                and (tile_m is None or self.meta("tile_m") is not None))

    def _create_or_upgrade(self, tile_m: float | None) -> None:
        """Create what is missing of the schema and migrate an older catalog, in one write transaction (another
        process may have done it meanwhile: every step finds what is already there)."""
        with self.transaction():
            before = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
            for stmt in _split(_SCHEMA):
                self.conn.execute(stmt)
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            if tile_m is not None:
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('tile_m', ?)", (repr(float(tile_m)),))
            self._upgrade()
            for stmt in _split(_PRIMARY_LABELS) + _split(_COUNTS):
                self.conn.execute(stmt)
            if not _COUNT_NAMES <= before:
                # written before the counts (or a trigger was dropped, or cell_labels rebuilt by the migration):
                # the counts are computed once from the tables, in this transaction
                for stmt in _split(_RECOUNT):
                    self.conn.execute(stmt)

    def _check_not_newer(self) -> None:
        version = int(self.meta("schema_version") or SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{self.path}: catalog schema version {version} was written by a newer rsretrieve "
                              f"(this one reads up to {SCHEMA_VERSION}); upgrade rsretrieve to use this workspace")

    def _upgrade(self) -> None:
        """Bring an older catalog to :data:`SCHEMA_VERSION` (inside the opening transaction)."""
        self._check_not_newer()
        version = int(self.meta("schema_version") or SCHEMA_VERSION)
        if version < 2:
            self._upgrade_labels_to_schemes()
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _upgrade_labels_to_schemes(self) -> None:
        """v1 -> v2: each old label gets the scheme of its source raster (see :func:`~.labels.scheme_for`)."""
        from rsretrieve.data.labels import scheme_for

        c = self.conn
        cols = [r[1] for r in c.execute("PRAGMA table_info(cell_labels)")]
        if "scheme" in cols:
            return
        old = c.execute("SELECT cell_id, label, label_name, purity, source FROM cell_labels").fetchall()
        schemes = {src: scheme_for(src) for src in {r["source"] for r in old}}
        c.execute("ALTER TABLE cell_labels RENAME TO cell_labels_v1")
        for stmt in _split(_SCHEMA):
            if "cell_labels(" in stmt:
                c.execute(stmt)
        c.executemany("INSERT OR REPLACE INTO cell_labels VALUES (?,?,?,?,?,?)",
                      [(r["cell_id"], schemes[r["source"]], r["label"], r["label_name"], r["purity"], r["source"])
                       for r in old])
        c.execute("DROP TABLE cell_labels_v1")

    # -- plumbing ------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def tile_m(self) -> float | None:
        v = self.meta("tile_m")
        return None if v is None else float(v)

    # -- scenes --------------------------------------------------------------------------------------------------
    def scene_fingerprint(self, key: str) -> str | None:
        row = self.conn.execute("SELECT fingerprint FROM scenes WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def scenes_stamped_otherwise(self, suffix: str) -> list[dict[str, Any]]:
        """The scenes whose fingerprint does not end with ``suffix`` (``key``, ``fingerprint``, ``sensor`` and
        ``files``, decoded)."""
        rows = self.conn.execute("SELECT key, fingerprint, sensor, files FROM scenes WHERE substr(fingerprint, ?) != ?"
                                 " ORDER BY scene_id", (-len(suffix), suffix))
        return [{"key": k, "fingerprint": fp, "sensor": sensor, "files": json.loads(files)}
                for k, fp, sensor, files in rows]

    def restamp_scene(self, key: str, old: str, new: str) -> bool:
        """Record the scene ``key`` under the fingerprint ``new`` while it is the version with ``old`` (its tiles,
        and so their ids and vectors, are kept); whether it was."""
        return self.restamp_scenes([(key, old, new)]) == 1

    def restamp_scenes(self, stamps: Sequence[tuple[str, str, str]]) -> int:
        """Each (key, old, new) as :meth:`restamp_scene`, in one transaction; how many were restamped."""
        with self.transaction() as c:
            return sum(c.execute("UPDATE scenes SET fingerprint = ? WHERE key = ? AND fingerprint = ?",
                                 (new, key, old)).rowcount for key, old, new in stamps)

    def write_scene(self, scene: SceneRow, tiles: Sequence[TileRow]) -> int:
        """Insert a scene and its tiles in one transaction, replacing an older version of the same key.

        Returns:
            The new scene id.
        """
        d = asdict(scene)
        d["files"], d["aux"], d["transform"] = json.dumps(d["files"]), json.dumps(d["aux"]), json.dumps(d["transform"])
        d["n_tiles"] = len(tiles)
        with self.transaction() as c:
            # ids are never handed out twice (the high-water marks are read before the old version is deleted):
            # the index tells a replaced scene's tiles from their successors by tile id alone
            sid = self._next_id(c, "next_scene_id", "scenes", "scene_id")
            tid = self._next_id(c, "next_tile_id", "tiles", "tile_id")
            old = c.execute("SELECT scene_id FROM scenes WHERE key = ?", (scene.key,)).fetchone()
            if old is not None:
                self._delete_scene(c, old[0])
            # R*Tree ids 2 * tile_id + part let a removal look the scene's entries up by id (the R*Tree's one index
            # besides boxes); only where every such id is above those already used (automatic ids of a catalog
            # written before, which may run past 2 * tile_id) and a tile has at most two parts
            top = c.execute("SELECT COALESCE(MAX(rowid), 0) FROM tile_rtree_rowid").fetchone()[0]
            by_id = top < 2 * tid and all(len(t.boxes) <= 2 for t in tiles)
            cols = ", ".join(d)
            c.execute(f"INSERT INTO scenes (scene_id, {cols}) VALUES (?, {', '.join('?' * len(d))})",
                      (sid, *d.values()))
            for t in tiles:
                c.execute(
                    "INSERT INTO tiles (tile_id, scene_id, cell_id, grid_epsg, row, col, sensor, acquired_ts, col_off,"
                    " row_off, width, height, coverage, valid_fraction, cloud_fraction, lon, lat, footprint)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (tid, sid, t.cell_id, t.grid_epsg, t.row, t.col, scene.sensor, scene.acquired_ts, t.col_off,
                     t.row_off, t.width, t.height, t.coverage, t.valid_fraction, t.cloud_fraction, t.lon, t.lat,
                     t.footprint),
                )
                c.executemany(
                    "INSERT INTO tile_rtree (id, min_lon, max_lon, min_lat, max_lat, tile_id) VALUES (?,?,?,?,?,?)",
                    [(2 * tid + part if by_id else None, b[0], b[2], b[1], b[3], tid)
                     for part, b in enumerate(t.boxes)],
                )
                tid += 1
            if by_id:
                c.execute("INSERT INTO scene_rtree VALUES (?, ?)", (sid, sum(len(t.boxes) for t in tiles)))
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          [("next_scene_id", str(sid + 1)), ("next_tile_id", str(tid))])
        return int(sid)

    @staticmethod
    def _next_id(c: sqlite3.Connection, key: str, table: str, column: str) -> int:
        """The next unused id of ``table``: the high-water mark kept in ``meta`` (above every id ever handed out),
        or one above the largest id present for a catalog written before the mark existed."""
        row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        top = c.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}").fetchone()[0]
        return max(int(row[0]) if row is not None else 0, int(top) + 1)

    @staticmethod
    def _delete_scene(c: sqlite3.Connection, scene_id: int) -> None:
        # the R*Tree can look up ids and boxes, not its tile_id column: a delete by tile id alone scanned every entry
        # of the catalog (1.3 s per scene removed or replaced at a million tiles). A scene written with ids
        # 2 * tile_id + part has them deleted by id (an id range is not looked up: it scans, so a list of ids), the
        # tile_id column checked too; the entries of other scenes are looked up by the boxes of their tile
        # footprints (the boxes written are those of the footprint's parts); and if fewer come up than were written
        # (a footprint that does not parse, a box not found, tile ids changed since) by the full scan
        found = 0
        row = c.execute("SELECT entries FROM scene_rtree WHERE scene_id = ?", (scene_id,)).fetchone()
        if row is not None:
            found = c.execute(
                "DELETE FROM tile_rtree WHERE id IN (SELECT 2 * tile_id + part FROM tiles,"
                " (SELECT 0 AS part UNION ALL SELECT 1) WHERE scene_id = ?)"
                " AND tile_id IN (SELECT tile_id FROM tiles WHERE scene_id = ?)", (scene_id, scene_id)).rowcount
            c.execute("DELETE FROM scene_rtree WHERE scene_id = ?", (scene_id,))
        if row is None or found != row[0]:
            footprints = [r[0] for r in c.execute("SELECT footprint FROM tiles WHERE scene_id = ?", (scene_id,))]
            windows, parts = _rtree_windows(footprints)
            for w, s, e, n in windows:
                found += c.execute(
                    "DELETE FROM tile_rtree WHERE id IN (SELECT id FROM tile_rtree WHERE max_lon >= ? AND min_lon <= ?"
                    " AND max_lat >= ? AND min_lat <= ? AND tile_id IN (SELECT tile_id FROM tiles WHERE scene_id = ?))",
                    (w, e, s, n, scene_id)).rowcount
            if found < max(parts, row[0] if row is not None else 0):
                c.execute("DELETE FROM tile_rtree WHERE tile_id IN (SELECT tile_id FROM tiles WHERE scene_id = ?)",
                          (scene_id,))
        c.execute("DELETE FROM tiles WHERE scene_id = ?", (scene_id,))
        c.execute("DELETE FROM scenes WHERE scene_id = ?", (scene_id,))

    def remove_scene(self, key: str) -> bool:
        """Remove a scene and its tiles; ``False`` if no scene has that key."""
        return self._remove_scene(key, None) is not None

    def remove_scene_version(self, key: str, fingerprint: str) -> int | None:
        """Remove the scene ``key`` and its tiles only while it is the version with ``fingerprint`` (checked in the
        same transaction, so a version another ingest wrote meanwhile is kept).

        Returns:
            The number of tiles removed, or ``None`` when no scene ``key`` with that fingerprint is catalogued.
        """
        return self._remove_scene(key, fingerprint)

    def _remove_scene(self, key: str, fingerprint: str | None) -> int | None:
        with self.transaction() as c:
            row = c.execute("SELECT scene_id, fingerprint FROM scenes WHERE key = ?", (key,)).fetchone()
            if row is None or (fingerprint is not None and row["fingerprint"] != fingerprint):
                return None
            # the high-water marks are read before the delete: a removed scene's ids are never handed out again
            marks = [("next_scene_id", str(self._next_id(c, "next_scene_id", "scenes", "scene_id"))),
                     ("next_tile_id", str(self._next_id(c, "next_tile_id", "tiles", "tile_id")))]
            n = c.execute("SELECT COUNT(*) FROM tiles WHERE scene_id = ?", (row["scene_id"],)).fetchone()[0]
            self._delete_scene(c, row["scene_id"])
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", marks)
        return int(n)

    def scene_by_key(self, key: str) -> dict[str, Any] | None:
        """The scene catalogued under ``key`` (a row as :meth:`scenes` gives), or ``None``."""
        row = self.conn.execute("SELECT * FROM scenes WHERE key = ?", (key,)).fetchone()
        return None if row is None else _scene_dict(row)

    def scenes(self, sensor: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM scenes", ()
        if sensor:
            q, args = q + " WHERE sensor = ?", (sensor,)
        return [_scene_dict(r) for r in self.conn.execute(q + " ORDER BY scene_id", args)]

    def scene(self, scene_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM scenes WHERE scene_id = ?", (scene_id,)).fetchone()
        if row is None:
            raise KeyError(f"no scene with id {scene_id} in {self.path}")
        return _scene_dict(row)

    # -- tiles ---------------------------------------------------------------------------------------------------
    def tiles(self, where: str = "", args: Sequence[Any] = (), columns: Sequence[str] | None = None
              ) -> list[dict[str, Any]]:
        """Tile rows joined with their cell's label, optionally restricted by an SQL ``where`` over ``t.``/``l.``.

        A cell labelled in several schemes shows its purest label here (``label_scheme``, ``label``,
        ``label_name``); :meth:`labels` has them all.

        Args:
            columns: only these keys in each row (columns of the tiles table, and ``label_scheme``, ``label``,
                ``label_name``); all of them when None. A million rows of every column take a gigabyte.
        """
        if columns is None:
            sel = "t.*, l.scheme AS label_scheme, l.label, l.label_name"
        else:
            known = [r[1] for r in self.conn.execute("PRAGMA table_info(tiles)")]
            bad = [c for c in columns if c not in known and c not in _LABEL_COLUMNS]
            if bad or not columns:
                raise ValueError(f"{self.path}: tiles(columns=...) takes columns of {', '.join(known)} or "
                                 f"{', '.join(_LABEL_COLUMNS)}, got {list(columns)!r}")
            sel = ", ".join(f"{_LABEL_COLUMNS[c]} AS {c}" if c in _LABEL_COLUMNS else f"t.{c}" for c in columns)
        q = (f"SELECT {sel} FROM tiles t LEFT JOIN primary_labels l ON l.cell_id = t.cell_id"
             + (f" WHERE {where}" if where else "") + " ORDER BY t.tile_id")
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples zipped with the names: a third faster than dict(sqlite3.Row) per row
        cur.execute(q, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur]

    def tile(self, tile_id: int) -> dict[str, Any]:
        rows = self.tiles("t.tile_id = ?", (tile_id,))
        if not rows:
            raise KeyError(f"no tile with id {tile_id} in {self.path}")
        return rows[0]

    def tile_ids_in_bbox(self, west: float, south: float, east: float, north: float) -> list[int]:
        """Ids of tiles whose footprint box intersects the box (``west > east`` crosses the antimeridian)."""
        spans = [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]
        ids: set[int] = set()
        for w, e in spans:
            ids.update(r[0] for r in self.conn.execute(
                "SELECT tile_id FROM tile_rtree WHERE max_lon >= ? AND min_lon <= ? AND max_lat >= ? AND min_lat <= ?",
                (w, e, south, north)))
        return sorted(ids)

    def counts(self) -> dict[str, Any]:
        """Scenes and tiles per sensor, labelled cells, time span: the summary ``ingest`` prints.

        Read from the counts the triggers keep (a few rows, and the scene indexes) in one read transaction, so that
        an ingest committing meanwhile shows whole or not at all; grouping a million tiles took 1.4 s. A sensor's
        ``mean_valid_fraction`` is the compensated sum over its tile count, which ``AVG(valid_fraction)`` gives up
        to the rounding of the sum.
        """
        c = self.conn
        own = not c.in_transaction
        if own:
            c.execute("BEGIN")  # deferred: a read snapshot, no lock taken from writers
        try:
            per = {r[0]: {"scenes": r[1]} for r in c.execute(
                "SELECT sensor, COUNT(*) FROM scenes GROUP BY sensor ORDER BY sensor")}
            for sensor, tiles, cells, valid in c.execute(
                    "SELECT sensor, tiles, cells, valid_sum + valid_err FROM sensor_counts WHERE tiles > 0"
                    " ORDER BY sensor"):
                per.setdefault(sensor, {"scenes": 0}).update(tiles=tiles, cells=cells,
                                                             mean_valid_fraction=round(valid / tiles, 4))
            totals = dict(c.execute("SELECT name, n FROM totals").fetchall())
            t0, t1 = c.execute("SELECT MIN(acquired), MAX(acquired) FROM scenes").fetchone()
            out = {
                "scenes": c.execute("SELECT COUNT(*) FROM scenes").fetchone()[0],
                "tiles": c.execute("SELECT COALESCE(SUM(tiles), 0) FROM sensor_counts").fetchone()[0],
                "cells": totals.get("cells", 0),
                "labelled_cells": totals.get("labelled_cells", 0),
                "label_schemes": dict(c.execute(
                    "SELECT scheme, labels FROM scheme_counts WHERE labels > 0 ORDER BY scheme").fetchall()),
                "first_acquired": t0,
                "last_acquired": t1,
                "tile_m": self.tile_m,
                "sensors": per,
            }
        finally:
            if own:
                c.execute("COMMIT")
        return out

    # -- labels --------------------------------------------------------------------------------------------------
    def write_labels(self, rows: Iterable[tuple[str, str, int, str, float, str]], source: str | None = None,
                     stamp: str | None = None) -> int:
        """Upsert (cell_id, scheme, label, label_name, purity, source) rows in one transaction.

        Args:
            source: replace every label of this land-cover source (its earlier rows are removed first).
            stamp: recorded as meta ``labels:SOURCE`` in the same transaction (what ingest skips on).
        """
        rows = list(rows)
        for r in rows:
            if len(r) != 6 or not isinstance(r[1], str) or not r[1]:
                raise ValueError(f"label row {r!r}: expected (cell_id, scheme, label, label_name, purity, source)")
        with self.transaction() as c:
            if source is not None:
                c.execute("DELETE FROM cell_labels WHERE source = ?", (source,))
            c.executemany("INSERT OR REPLACE INTO cell_labels VALUES (?,?,?,?,?,?)", rows)
            if source is not None and stamp is not None:
                c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"labels:{source}", stamp))
        return len(rows)

    def remove_labels(self, source: str, stamp: str | None = None) -> int | None:
        """Remove every label of the land-cover ``source`` and its ingest stamp (meta ``labels:SOURCE``), in one
        transaction; with ``stamp``, only while that is the stamp recorded.

        Returns:
            The number of labels removed, or ``None`` when ``source`` has no stamp (or another one than ``stamp``).
        """
        with self.transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (f"labels:{source}",)).fetchone()
            if row is None or (stamp is not None and row[0] != stamp):
                return None
            n = c.execute("DELETE FROM cell_labels WHERE source = ?", (source,)).rowcount
            c.execute("DELETE FROM meta WHERE key = ?", (f"labels:{source}",))
        return int(n)

    def label_sources(self) -> dict[str, str]:
        """Every land-cover source ingested (its path) and its ingest stamp (meta ``labels:SOURCE``)."""
        rows = self.conn.execute("SELECT key, value FROM meta WHERE key LIKE 'labels:%'")
        return {k[len("labels:"):]: v for k, v in rows}

    def labels(self, cells: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every label of the catalog (or of ``cells``): dicts with cell_id, scheme, label, label_name, purity."""
        q = "SELECT cell_id, scheme, label, label_name, purity FROM cell_labels"
        if cells is None:
            return [dict(r) for r in self.conn.execute(q + " ORDER BY cell_id, scheme")]
        out: list[dict[str, Any]] = []
        cells = list(cells)
        for i in range(0, len(cells), 500):
            chunk = cells[i:i + 500]
            out += [dict(r) for r in self.conn.execute(
                q + f" WHERE cell_id IN ({','.join('?' * len(chunk))}) ORDER BY cell_id, scheme", chunk)]
        return out


def _stored_version(path: Path) -> int | None:
    """The schema version recorded in a catalog file (read-only), or None when it cannot be read."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        finally:
            con.close()
        return None if row is None else int(row[0])
    except (sqlite3.Error, ValueError):
        return None


def _rtree_windows(footprints: Sequence[str]) -> tuple[list[tuple[float, float, float, float]], int]:
    """Boxes (W, S, E, N) covering the R*Tree entries of tiles with these WKT footprints (one box for the parts
    east of the meridian 0, one for those west of it, so that a scene across the antimeridian is two small boxes,
    not the whole globe), and the number of entries they were written with (one per footprint part).

    A footprint that does not parse gives ``([], 1)``: its entries cannot be found by box.
    """
    import numpy as np
    import shapely

    if not footprints:
        return [], 0
    try:
        geoms = shapely.from_wkt(list(footprints))
    except shapely.errors.ShapelyError:
        return [], 1
    if shapely.is_missing(geoms).any() or shapely.is_empty(geoms).any():
        return [], 1
    parts = shapely.get_parts(geoms)
    b = shapely.bounds(parts)
    # the R*Tree holds 32-bit floats rounded outward; the WKT may be rounded: a margin far below a tile's size
    pad = 1e-4
    out = []
    for side in ((b[:, 0] + b[:, 2]) >= 0, (b[:, 0] + b[:, 2]) < 0):
        if side.any():
            lo, hi = b[side].min(axis=0), b[side].max(axis=0)
            out.append((float(lo[0]) - pad, float(lo[1]) - pad, float(hi[2]) + pad, float(hi[3]) + pad))
    return out, int(np.asarray(parts).size)


def _scene_dict(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    for k in ("files", "aux", "transform"):
        d[k] = json.loads(d[k])
    return d


def _split(script: str) -> list[str]:
    """Split the schema into statements (``executescript`` would commit the surrounding transaction); a trigger's
    body is part of its statement."""
    out, buf = [], []
    for line in script.splitlines():
        buf.append(line.split("--", 1)[0])
        if buf[-1].rstrip().endswith(";") and sqlite3.complete_statement("\n".join(buf)):
            out.append("\n".join(buf))
            buf = []
    return [s for s in out if s.strip()]


def _names(script: str) -> set[str]:
    """The tables, indexes, views and triggers a schema script creates."""
    return set(re.findall(r"CREATE (?:VIRTUAL )?(?:TABLE|INDEX|VIEW|TRIGGER) IF NOT EXISTS (\w+)", script))


#: what a current catalog has (checked on open, without a write lock)
_COUNT_NAMES = _names(_COUNTS)
_SCHEMA_NAMES = _names(_SCHEMA) | _names(_PRIMARY_LABELS) | _COUNT_NAMES
