"""A catalogued input whose file changed and is now refused: its earlier version leaves the catalog (its ids stay
retired), the rejection line says so, and nothing else in the catalog changes. It stays, and the line says why,
when the refusal need not be the file's fault (an unexpected error, another --sensor)."""

import os
import shutil
import sqlite3

import pytest
import rasterio

from rsretrieve.data import ingest as ingest_mod
from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from tests.conftest import make_workspace

REMOVED = ("its earlier version ({n} tiles) is removed from the catalog, since the file changed and can no longer be "
           "ingested (the next `rsretrieve index` drops its vectors)")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine")
    make_archive(out, scenes=2, sensors=("sentinel1", "sentinel2"), seed=4, size_m=1920)
    return out


@pytest.fixture
def archive(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "archive")


def _dump(db):
    """Every scene and tile row with its ids (ingest times left out), labels, meta and the R*Tree."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    scenes = {r["key"]: {k: r[k] for k in r.keys() if k != "ingested_at"} for r in con.execute("SELECT * FROM scenes")}
    tiles = {r["tile_id"]: dict(r) for r in con.execute("SELECT * FROM tiles")}
    rtree = sorted(tuple(r) for r in con.execute("SELECT * FROM tile_rtree"))
    labels = sorted(tuple(r) for r in con.execute("SELECT * FROM cell_labels"))
    meta = dict(tuple(r) for r in con.execute("SELECT key, value FROM meta"))
    con.close()
    return {"scenes": scenes, "tiles": tiles, "rtree": rtree, "labels": labels, "meta": meta}


def _without(dump, key):
    """``dump`` less the scene ``key``, its tiles and their R*Tree entries."""
    sid = dump["scenes"][key]["scene_id"]
    gone = {t for t, row in dump["tiles"].items() if row["scene_id"] == sid}
    return {**dump, "scenes": {k: v for k, v in dump["scenes"].items() if k != key},
            "tiles": {t: v for t, v in dump["tiles"].items() if t not in gone},
            "rtree": [r for r in dump["rtree"] if r[-1] not in gone]}


def _truncate(path, keep=0.5):
    os.truncate(path, int(os.path.getsize(path) * keep))


def _touch(path, seconds=1):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_truncated_changed_scene_is_removed_others_untouched_ids_never_reused(cli, archive, tmp_path):
    ws = tmp_path / "ws"
    assert cli("ingest", archive, "--workspace", ws).returncode == 0
    before = _dump(ws / "catalog.sqlite")
    f = sorted((archive / "sentinel2").glob("*.tif"))[0]
    original = f.read_bytes()
    n = before["scenes"][str(f)]["n_tiles"]
    assert n > 0
    _truncate(f)
    r = cli("ingest", archive, "--workspace", ws)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "; 1 rejected (1 earlier version taken out of the catalog)" in r.stdout, r.stdout
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rejected: ")]
    assert line.startswith(f"rejected: {f}: corrupt or truncated TIFF"), line
    assert line.endswith("; " + REMOVED.format(n=n)), line
    after = _dump(ws / "catalog.sqlite")
    assert after == _without(before, str(f))  # the other scenes, their tiles and ids, labels and meta: unchanged
    assert after["meta"]["next_scene_id"] == before["meta"]["next_scene_id"]  # the high-water marks stay
    # still truncated: refused again, with nothing more to remove
    r = cli("ingest", archive, "--workspace", ws)
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rejected: ")]
    assert "corrupt or truncated TIFF" in line and "earlier version" not in line
    assert r.stdout.splitlines()[0].endswith("; 1 rejected"), r.stdout
    assert _dump(ws / "catalog.sqlite") == after
    # repaired: back as a new scene whose ids were never handed out before
    f.write_bytes(original)
    r = cli("ingest", archive, "--workspace", ws)
    assert r.returncode == 0 and "1 scenes added, 0 replaced" in r.stdout
    back = _dump(ws / "catalog.sqlite")
    sid = back["scenes"][str(f)]["scene_id"]
    assert sid == int(before["meta"]["next_scene_id"]) > max(s["scene_id"] for s in before["scenes"].values())
    new_tiles = [t for t, row in back["tiles"].items() if row["scene_id"] == sid]
    assert len(new_tiles) == n and min(new_tiles) >= int(before["meta"]["next_tile_id"])


def test_index_drops_the_vectors_of_the_removed_scene(tmp_path):
    from rsretrieve.index.indexer import index_workspace
    from rsretrieve.index.store import IndexStore

    ws = make_workspace(tmp_path, scenes=1, size_m=1440)
    with Catalog(ws / "catalog.sqlite") as cat:
        (s1,) = cat.scenes("sentinel1")
        others = {t["tile_id"] for t in cat.tiles("t.scene_id != ?", (s1["scene_id"],))}
    _truncate(s1["files"]["*"])
    with Catalog(ws / "catalog.sqlite") as cat:
        report = ingest([tmp_path / "archive"], cat)
    assert report.removed == 1 and [p.path for p in report.problems] == [s1["key"]]
    summary = index_workspace(ws)
    assert summary["removed"] == s1["n_tiles"] and summary["added"] == 0
    assert set(IndexStore.open(ws / "index").indexed_tile_ids().tolist()) == others


def test_file_rewritten_with_a_type_the_sensor_cannot_have_is_removed(archive, tmp_path):
    f = sorted((archive / "sentinel2").glob("*.tif"))[0]
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([archive], cat)
        n = cat.scene_by_key(str(f))["n_tiles"]
        with rasterio.open(f) as src:  # the same scene saved again as reflectance 0..1 (float32)
            profile, refl = src.profile, src.read() / 1e4
        profile.update(dtype="float32", nodata=None, predictor=1)
        with rasterio.open(f, "w", **profile) as dst:
            dst.write(refl.astype("float32"))
        report = ingest([archive], cat)
        (p,) = report.problems
        assert p.reason.startswith("float32 pixels, but sentinel2 files hold uint16 DN")
        assert p.reason.endswith("; " + REMOVED.format(n=n))
        assert cat.scene_by_key(str(f)) is None and len(cat.scenes()) == 3


def test_changed_scene_refused_under_another_sensor_keeps_its_earlier_version(archive, tmp_path):
    f = sorted((archive / "sentinel1").glob("*.tif"))[0]
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([archive], cat)
        before = _dump(tmp_path / "c.sqlite")
        _touch(f)
        report = ingest([f], cat, sensor="sentinel2")
        (p,) = report.problems
        assert p.reason == ("has 2 bands but sensor 'sentinel2' files have full: 12; its earlier version (catalogued "
                            "as sentinel1) stays in the catalog, since --sensor sentinel2 may be what is refused: run "
                            "ingest without it to bring the scene up to date")
        assert _dump(tmp_path / "c.sqlite") == before
        # under its own sensor the touched file is simply re-ingested
        report = ingest([f], cat, sensor="sentinel1")
        assert (report.replaced, report.problems) == (1, [])


def test_changed_land_cover_raster_that_is_corrupt_loses_its_labels(archive, tmp_path):
    lc = sorted((archive / "truth").glob("*_landcover.tif"))[0]
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([archive], cat)
        mine = [r for r in cat.conn.execute("SELECT cell_id FROM cell_labels WHERE source = ?", (str(lc),))]
        total = cat.conn.execute("SELECT COUNT(*) FROM cell_labels").fetchone()[0]
        assert mine
        _truncate(lc, 0.3)
        report = ingest([archive], cat)
        (p,) = report.problems
        assert p.path == str(lc) and p.reason.endswith(
            f"; the land-cover labels of its earlier version ({len(mine)} cells) are removed from the catalog, since "
            "the file changed and can no longer be ingested")
        assert cat.conn.execute("SELECT COUNT(*) FROM cell_labels").fetchone()[0] == total - len(mine)
        assert cat.meta(f"labels:{lc}") is None
        assert len(cat.scenes()) == 4  # no scene touched
        assert report.removed == 1  # counted like a scene's earlier version (the CLI's summary shows it)


def test_remove_scene_version_removes_only_that_version_and_keeps_the_id_marks(tmp_path):
    archive = tmp_path / "a"
    make_archive(archive, scenes=1, sensors=("sentinel1",), seed=2, size_m=960)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([archive], cat)
        (s,) = cat.scenes()
        marks = cat.meta("next_scene_id"), cat.meta("next_tile_id")
        assert cat.remove_scene_version(s["key"], "another fingerprint") is None
        assert cat.scene_by_key(s["key"]) == s
        tiles = len(cat.tiles())
        assert cat.remove_scene_version(s["key"], s["fingerprint"]) == s["n_tiles"] == tiles > 0
        assert cat.scene_by_key(s["key"]) is None and cat.tiles() == []
        assert (cat.meta("next_scene_id"), cat.meta("next_tile_id")) == marks
        assert cat.remove_labels("no such source") is None
        (lc,) = (archive / "truth").glob("*.tif")
        stamp = cat.meta(f"labels:{lc}")
        assert cat.remove_labels(str(lc), stamp="another stamp") is None
        n = len(cat.labels())
        assert n > 0 and cat.remove_labels(str(lc), stamp=stamp) == n  # the only source: every label goes
        assert cat.labels() == [] and cat.meta(f"labels:{lc}") is None


KEPT = ("; its earlier version stays in the catalog (this refusal may not be the file's fault): run ingest again "
        "once it is fixed")


@pytest.mark.parametrize("cause", ["unexpected error", "permission denied"])
def test_a_changed_file_refused_not_for_its_pixels_keeps_its_earlier_version(archive, tmp_path, monkeypatch, cause):
    """An unexpected error (a bug) or a file that cannot be read now (permissions, I/O) says nothing about the
    file's pixels: the scene stays."""
    from rsretrieve.data import scene as scene_mod

    f = sorted((archive / "sentinel1").glob("*.tif"))[0]
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        ingest([archive], cat)
        before = _dump(tmp_path / "c.sqlite")
        _touch(f)
        if cause == "unexpected error":
            def boom(*a, **k):
                raise RuntimeError("a bug, not the file")
            monkeypatch.setattr(ingest_mod, "process_scene", boom)
            reason = "unexpected error: RuntimeError: a bug, not the file"
        else:
            real = os.access
            monkeypatch.setattr(scene_mod.os, "access", lambda p, mode: str(p) != str(f) and real(p, mode))
            reason = "cannot read: permission denied"
        report = ingest([archive], cat)
    (p,) = report.problems
    assert p.reason == reason + KEPT
    assert report.removed == 0 and _dump(tmp_path / "c.sqlite") == before


def test_a_changed_file_refused_by_a_stricter_min_coverage_keeps_its_earlier_version(tmp_path):
    """--min-coverage above the default may be what refuses a small scene, not its file."""
    archive = tmp_path / "a"
    make_archive(archive, scenes=1, sensors=("sentinel1",), seed=2, size_m=960)
    (f,) = sorted((archive / "sentinel1").glob("*.tif"))
    with rasterio.open(f) as src:  # a corner of the scene: every cell partly covered
        profile, data = src.profile, src.read(window=rasterio.windows.Window(0, 0, 60, 60))
        profile.update(width=60, height=60)
    small = tmp_path / "s" / f.name
    small.parent.mkdir()
    with rasterio.open(small, "w", **profile) as dst:
        dst.write(data)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([small], cat).added == 1
        before = _dump(tmp_path / "c.sqlite")
        _touch(small)
        report = ingest([small], cat, min_coverage=1.0)
        (p,) = report.problems
        assert "is covered to --min-coverage 1" in p.reason and p.reason.endswith(KEPT), p.reason
        assert report.removed == 0 and _dump(tmp_path / "c.sqlite") == before


def test_a_file_that_changes_while_it_is_read_is_ingested_again_by_the_next_run(archive, tmp_path, monkeypatch):
    """The scene is recorded under the fingerprint taken before its pixels were read: one taken after matched the new
    file, so the next run skipped it and the catalog kept the old content for good."""
    files = sorted((archive / "sentinel1").glob("*.tif"))
    target, newer = files[0], files[1]
    masks, changed = ingest_mod._masks, []

    def masks_then_the_file_changes(*a, **kw):  # a copy lands over the file while ingest reads it
        out = masks(*a, **kw)
        if not changed:
            changed.append(1)
            shutil.copyfile(newer, target)
        return out

    monkeypatch.setattr(ingest_mod, "_masks", masks_then_the_file_changes)
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        assert ingest([target], cat).added == 1
    monkeypatch.setattr(ingest_mod, "_masks", masks)
    assert changed
    with Catalog(tmp_path / "c.sqlite", tile_m=480) as cat:
        again = ingest([target], cat)
        assert (again.skipped, again.replaced) == (0, 1)
        scene = cat.scenes()[0]
    with Catalog(tmp_path / "fresh.sqlite", tile_m=480) as fresh:  # the file as it is now, ingested once
        ingest([target], fresh)
        want = fresh.scenes()[0]
    assert [scene[k] for k in ("west", "south", "east", "north", "n_tiles")] == \
        [want[k] for k in ("west", "south", "east", "north", "n_tiles")]
