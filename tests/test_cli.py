"""The ``rsretrieve`` command: help, sensors, export, exit codes."""

import json
import os
import subprocess
import sys

import geopandas as gpd
import pytest

from tests.conftest import ROOT, s1_scene


@pytest.mark.parametrize("command", ["sensors", "synth", "ingest", "catalog", "export", "train", "index", "query",
                                     "evaluate", "serve"])
def test_every_command_has_help(cli, command):
    r = cli(command, "--help")
    assert r.returncode == 0 and "usage: rsretrieve " + command in r.stdout


def test_sensors_list_and_show(cli):
    r = cli("sensors", "list", "--json")
    names = {s["name"]: s for s in json.loads(r.stdout)}
    assert names["enmap"]["bands"] == 224 and names["sentinel1"]["family"] == "sar"
    r = cli("sensors", "show", "sentinel2")
    assert r.returncode == 0 and "B8A" in r.stdout and "864.7" in r.stdout
    # the cloud test and the processing-baseline offset that decide how pixels are read
    assert ("  cloud test: mean reflectance of B02/B03/B04 above 0.3 is cloud, unless snow (NDSI of B03/B11 above "
            "0.4); the scene's SCL classes 8,9,10 add cloud\n") in r.stdout
    assert "processing baseline 04.00 and later" in r.stdout and "physical = DN * 0.0001 - 0.1" in r.stdout
    r = cli("sensors", "show", "landsat8")
    assert "; the scene's QA_PIXEL bits 1,2,3 add cloud\n" in r.stdout and "processing baseline" not in r.stdout
    assert "cloud test" not in cli("sensors", "show", "sentinel1").stdout
    r = cli("sensors", "show", "enmap", "--json")
    d = json.loads(r.stdout)
    assert len(d["bands"]) == 224 and d["baseline_offset"] is None
    assert d["cloud_test"]["qa_role"] == "QL_QUALITY_CLOUD" and d["cloud_test"]["qa_bits"] == [0]
    d = json.loads(cli("sensors", "show", "sentinel2", "--json").stdout)
    assert d["baseline_offset"] == {"since": "04.00", "offset": -0.1} and d["cloud_test"]["qa_classes"] == [8, 9, 10]
    assert d["cloud_test"]["snow_bands"] == ["B03", "B11"]


def test_synth_of_sites_too_large_for_this_machines_memory_is_refused_before_anything_is_written(cli, tmp_path):
    # a digit too many (3,000 km for 30 km) was an OOM kill after minutes, the output folder left half made
    r = cli("synth", tmp_path / "out", "--size-m", "3000000")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("rsretrieve synth: error: --size-m 3000000: a site that large needs about 28499 GiB "
                               "of memory to generate, ")
    assert r.stderr.rstrip().endswith(" GiB is available; use a smaller --size-m (and more --scenes)")
    assert not (tmp_path / "out").exists()


def test_sensors_show_unknown_is_a_usage_error(cli):
    r = cli("sensors", "show", "sentinel9")
    assert r.returncode == 2 and r.stderr.strip().startswith("rsretrieve sensors: error: unknown sensor 'sentinel9'")


def test_export_writes_geoparquet_one_row_per_tile(cli, tmp_path):
    s1_scene(tmp_path / "in" / "S1A_IW_GRDH_1SDV_20210101T101010_a.tif")
    assert cli("ingest", tmp_path / "in", "-w", tmp_path / "ws").returncode == 0
    r = cli("export", tmp_path / "out.parquet", "-w", tmp_path / "ws", "--json")
    assert r.returncode == 0, r.stderr
    df = gpd.read_parquet(tmp_path / "out.parquet")
    assert len(df) == json.loads(r.stdout)["rows"] == json.loads(cli("catalog", "-w", tmp_path / "ws", "--json")
                                                                 .stdout)["tiles"]
    assert df.crs.to_epsg() == 4326 and set(df["sensor"]) == {"sentinel1"}
    assert str(df["acquired"].iloc[0]) == "2021-01-01 10:10:10+00:00"
    assert df.geometry.is_valid.all() and (df.geometry.bounds["minx"] > 14).all()
    assert "embedding" not in df.columns  # nothing indexed yet


def test_export_needs_a_workspace_and_a_parquet_name(cli, tmp_path):
    r = cli("export", tmp_path / "o.parquet", "-w", tmp_path / "nope")
    assert r.returncode == 2 and "not a workspace (no catalog.sqlite)" in r.stderr
    s1_scene(tmp_path / "in" / "a.tif")
    cli("ingest", tmp_path / "in", "-w", tmp_path / "ws")
    r = cli("export", tmp_path / "o.csv", "-w", tmp_path / "ws")
    assert r.returncode == 2 and "OUT must end in .parquet" in r.stderr


def test_export_through_a_link_replaces_its_file_and_a_fifo_is_refused(cli, small_workspace, tmp_path):
    import os

    (tmp_path / "kept").mkdir()
    link = tmp_path / "tiles.parquet"
    link.symlink_to(tmp_path / "kept" / "tiles.parquet")
    r = cli("export", link, "-w", small_workspace)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink()  # the rename replaced the link, not the file it points to
    assert gpd.read_parquet(tmp_path / "kept" / "tiles.parquet").shape[0] > 0
    os.mkfifo(tmp_path / "fifo.parquet")  # a rename put a regular file in its place, and its reader got nothing
    r = cli("export", tmp_path / "fifo.parquet", "-w", small_workspace)
    assert r.returncode == 2 and r.stderr == (
        f"rsretrieve export: error: cannot write {tmp_path / 'fifo.parquet'}: not a regular file (a FIFO or a "
        "device): the GeoParquet file is written whole and renamed into place\n")
    assert (tmp_path / "fifo.parquet").is_fifo()


def test_export_carries_embeddings_once_indexed(cli, small_workspace, tmp_path):
    import numpy as np

    from rsretrieve.index.store import IndexStore

    r = cli("export", tmp_path / "e.parquet", "-w", small_workspace)
    assert r.returncode == 0, r.stderr
    df = gpd.read_parquet(tmp_path / "e.parquet")
    ids, vecs = IndexStore.open(small_workspace / "index").load_vectors()
    got = np.stack(df.set_index("tile_id").loc[ids, "embedding"].to_numpy())
    np.testing.assert_array_equal(got, vecs)
    assert got.shape[1] == 128 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_export_says_which_model_made_its_embeddings(cli, small_workspace, tmp_path):
    """The file's schema metadata names the model (checksum, trained names with that file, dimension) and the index
    generation: vectors of two models are not comparable, and the file did not say whose they were."""
    import pyarrow.parquet as pq

    from rsretrieve.index.indexer import model_checksum
    from rsretrieve.index.store import IndexStore

    r = cli("export", tmp_path / "e.parquet", "-w", small_workspace)
    assert r.returncode == 0, r.stderr
    meta = json.loads(pq.read_schema(tmp_path / "e.parquet").metadata[b"rsretrieve"])
    store = IndexStore.open(small_workspace / "index")
    assert meta == {"model_checksum": model_checksum(small_workspace / "checkpoints/default/model.pt"),
                    "models": ["default"], "dim": 128, "index_generation": store.generation}
    assert meta["model_checksum"] == store.model_checksum
    assert b"geo" in pq.read_schema(tmp_path / "e.parquet").metadata  # GeoParquet's own metadata kept
    assert gpd.read_parquet(tmp_path / "e.parquet").crs.to_epsg() == 4326


@pytest.mark.parametrize("size", ["nan", "inf", "480.7", "0.5"])
def test_a_tile_size_that_is_not_whole_finite_metres_is_refused_before_the_workspace_exists(cli, tmp_path, size):
    s1_scene(tmp_path / "in" / "S1A_IW_GRDH_1SDV_20210101T101010_a.tif")
    r = cli("ingest", tmp_path / "in", "-w", tmp_path / "ws", "--tile-size", size)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--tile-size must be > 0 metres, in whole metres" in r.stderr
    assert not (tmp_path / "ws" / "catalog.sqlite").exists()


def test_io_and_catalog_errors_are_one_line_with_the_path(cli, tmp_path):
    s1_scene(tmp_path / "in" / "S1A_IW_GRDH_1SDV_20210101T101010_a.tif")
    assert cli("ingest", tmp_path / "in", "-w", tmp_path / "ws").returncode == 0
    (tmp_path / "d.parquet").mkdir()
    for out in (tmp_path / "d.parquet", tmp_path / "in" / "S1A_IW_GRDH_1SDV_20210101T101010_a.tif" / "x.parquet"):
        r = cli("export", out, "-w", tmp_path / "ws")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr and str(tmp_path) in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "catalog.sqlite").write_bytes(b"this is not a database" * 100)
    for args in (("catalog", "-w", bad), ("ingest", tmp_path / "in", "-w", bad)):
        r = cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "catalog.sqlite is not a readable rsretrieve catalog" in r.stderr


def test_argparse_errors_are_one_line(cli):
    for args, message in ((("ingest",), "the following arguments are required: PATH"),
                          (("query", "-w", "ws", "-k", "abc"), "argument -k: k must be a positive integer, got 'abc'")):
        r = cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert message in r.stderr and "--help" in r.stderr


def test_export_of_an_empty_catalog_keeps_the_column_types(cli, tmp_path):
    import pyarrow.parquet as pq

    from rsretrieve.data.catalog import Catalog

    Catalog(tmp_path / "ws" / "catalog.sqlite", tile_m=480).close()
    r = cli("export", tmp_path / "e.parquet", "-w", tmp_path / "ws")
    assert r.returncode == 0, r.stderr
    schema = pq.read_schema(tmp_path / "e.parquet")
    assert str(schema.field("tile_id").type) == "int64" and str(schema.field("lon").type) == "double"
    assert str(schema.field("sensor").type) in ("string", "large_string") and str(schema.field("label").type) == "int64"


def test_an_invalid_sensor_yaml_is_one_line_naming_file_and_field(cli, tmp_path):
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "data_catalog/sensors/landsat8.yaml").read_text())
    spec["name"] = "landsat9"
    spec["bands"][3]["center_nm"] = "abc"
    (tmp_path / "landsat9.yaml").write_text(yaml.safe_dump(spec))
    r = cli("sensors", "list", env={"RSRETRIEVE_SENSOR_DIRS": str(tmp_path)})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "landsat9.yaml: bands[3].center_nm" in r.stderr and "Traceback" not in r.stderr


def test_export_embeddings_are_a_fixed_size_float32_list_of_the_index_dimension(cli, small_workspace, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = cli("export", tmp_path / "e.parquet", "-w", small_workspace, "--json")
    assert r.returncode == 0, r.stderr
    field = pq.read_schema(tmp_path / "e.parquet").field("embedding")
    assert field.type == pa.list_(pa.float32(), 128)  # was a variable-length list of float64
    out = json.loads(r.stdout)
    assert out["rows"] == out["embeddings"] == len(gpd.read_parquet(tmp_path / "e.parquet"))


def test_export_says_how_many_tiles_have_no_embedding_yet(cli, small_workspace, tmp_path):
    import shutil

    from rsretrieve.data.catalog import Catalog

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    with Catalog(ws / "catalog.sqlite") as cat:  # a scene ingested after the last `rsretrieve index`: new tile ids
        scene = cat.scenes()[0]
        n = scene["n_tiles"]
        cat.conn.execute("UPDATE tiles SET tile_id = tile_id + 100000 WHERE scene_id = ?", (scene["scene_id"],))
        cat.conn.commit()
        total = cat.counts()["tiles"]
    r = cli("export", tmp_path / "e.parquet", "-w", ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"wrote {total} tiles to {tmp_path / 'e.parquet'} ({total - n} with embeddings; "
                                f"{n} not indexed yet: run `rsretrieve index`)")
    assert gpd.read_parquet(tmp_path / "e.parquet")["embedding"].isna().sum() == n


def test_export_tells_tiles_of_a_sensor_the_model_lacks_from_tiles_not_indexed_yet(cli, small_workspace, tmp_path):
    # `rsretrieve index` never embeds a sensor the model has no branch for: "not indexed yet: run rsretrieve
    # index" sent the user to a command that could not help
    import shutil

    from rsretrieve.data.catalog import Catalog

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    with Catalog(ws / "catalog.sqlite") as cat:
        first, second = cat.scenes()[:2]
        cat.conn.execute("UPDATE tiles SET tile_id = tile_id + 100000 WHERE scene_id = ?", (first["scene_id"],))
        cat.conn.execute("UPDATE tiles SET tile_id = tile_id + 200000, sensor = 'landsat8' WHERE scene_id = ?",
                         (second["scene_id"],))
        cat.conn.commit()
        total = cat.counts()["tiles"]
    r = cli("export", tmp_path / "e.parquet", "-w", ws)
    assert r.returncode == 0, r.stderr
    a, b = first["n_tiles"], second["n_tiles"]
    assert r.stdout.strip() == (f"wrote {total} tiles to {tmp_path / 'e.parquet'} ({total - a - b} with embeddings; "
                                f"{a} not indexed yet: run `rsretrieve index`; {b} landsat8 tiles, a sensor the "
                                "index's model has no branch for)")
    r = cli("export", tmp_path / "e.parquet", "-w", ws, "--json")  # the same counts for scripts
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"out": str(tmp_path / "e.parquet"), "rows": total, "embeddings": total - a - b,
                                    "not_indexed": a, "sensors_without_branch": {"landsat8": b}}


def test_export_of_a_dual_encoder_index_counts_the_sensors_it_lacks_too(cli, small_workspace, tmp_path):
    # the plain dual encoder records no per-sensor fingerprints: the sensors it lacks were "not indexed yet"
    import shutil

    import torch

    from rsretrieve.data.catalog import Catalog
    from rsretrieve.index.indexer import index_workspace
    from rsretrieve.model.dual_encoder import DualEncoder

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    torch.manual_seed(0)
    (ws / "checkpoints" / "dual").mkdir()
    DualEncoder(["sentinel1", "sentinel2"]).save(ws / "checkpoints" / "dual" / "model.pt")
    summary = index_workspace(ws, "dual")
    with Catalog(ws / "catalog.sqlite") as cat:
        n = cat.counts()["tiles"]
        enmap = sum(1 for t in cat.tiles(columns=["sensor"]) if t["sensor"] == "enmap")
    assert summary["skipped_sensors"] == {"enmap": enmap}
    r = cli("export", tmp_path / "e.parquet", "-w", ws)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (f"wrote {n} tiles to {tmp_path / 'e.parquet'} ({n - enmap} with embeddings; "
                                f"{enmap} enmap tiles, a sensor the index's model has no branch for)")


def test_export_before_the_first_index_has_finished_writes_the_tiles_without_embeddings(cli, small_workspace,
                                                                                         tmp_path):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    (ws / "index" / "current").unlink()  # what a first `rsretrieve index` still running (or killed) leaves
    r = cli("export", tmp_path / "e.parquet", "-w", ws)
    assert r.returncode == 0, r.stderr
    df = gpd.read_parquet(tmp_path / "e.parquet")
    assert len(df) > 0 and "embedding" not in df.columns
    assert r.stderr.strip().splitlines() == [f"warning: no embeddings exported: no index at {ws / 'index'} yet: the "
                                             "first `rsretrieve index` has not finished (still running, or "
                                             "interrupted: run it again to complete it)"]


def test_export_to_a_folder_or_under_a_file_names_out_not_a_temporary_file(cli, tmp_path):
    s1_scene(tmp_path / "in" / "S1A_IW_GRDH_1SDV_20210101T101010_a.tif")
    assert cli("ingest", tmp_path / "in", "-w", tmp_path / "ws").returncode == 0
    (tmp_path / "d.parquet").mkdir()
    (tmp_path / "f").write_text("x")
    for out, message in ((tmp_path / "d.parquet", f"OUT {tmp_path / 'd.parquet'} is a directory; give a file name"),
                         (tmp_path / "f" / "x.parquet", f"OUT {tmp_path / 'f' / 'x.parquet'}: {tmp_path / 'f'} is "
                                                        "not a directory")):
        r = cli("export", out, "-w", tmp_path / "ws")
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"rsretrieve export: error: {message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet", "f", "in", "ws"]  # no temporary left


def test_export_acquired_is_utc_microseconds_whatever_the_rows(cli, tmp_path):
    import pyarrow.parquet as pq

    from rsretrieve.data.catalog import Catalog

    Catalog(tmp_path / "empty" / "catalog.sqlite", tile_m=480).close()
    s1_scene(tmp_path / "in" / "S1A_IW_GRDH_1SDV_20210101T101010_a.tif")
    assert cli("ingest", tmp_path / "in", "-w", tmp_path / "ws").returncode == 0
    for ws in ("empty", "ws"):
        assert cli("export", tmp_path / f"{ws}.parquet", "-w", tmp_path / ws).returncode == 0
        assert str(pq.read_schema(tmp_path / f"{ws}.parquet").field("acquired").type) == "timestamp[us, tz=UTC]"


def test_sensors_list_with_a_name_is_a_usage_error(cli):
    r = cli("sensors", "list", "sentinel2")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "rsretrieve sensors: error: sensors list takes no NAME; `rsretrieve sensors show sentinel2` shows one sensor"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a write error on stdout")
@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_a_write_error_on_stdout_is_one_line_naming_it(small_workspace, unbuffered):
    # a full disk under `rsretrieve catalog > out.txt`: it said "error: ?: No space left on device" or named the
    # workspace, or (buffered) printed a traceback from the exit flush and exited 120
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update({"PYTHONUNBUFFERED": unbuffered} if unbuffered else {})
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "rsretrieve.cli", "catalog", "--workspace", str(small_workspace)],
                           stdout=full, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["rsretrieve catalog: error: standard output: No space left on device"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a write error on stdout")
def test_an_interrupted_command_keeps_its_exit_code_when_its_buffered_output_cannot_be_written(small_workspace):
    # SIGTERM after a command printed (buffered, stdout full or its reader gone): the exit flush printed
    # "Exception ignored ... OSError" and the exit code was 120, not 143
    program = ("import os, signal, sys, time\nimport rsretrieve.cli as cli\norig = cli.cmd_catalog\n"
               "def cmd(args):\n    orig(args)\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(5)\n"
               "    return 0\ncli.cmd_catalog = cmd\nsys.exit(cli.main(['catalog', '-w', sys.argv[1]]))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-c", program, str(small_workspace)], stdout=full,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 143, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGTERM"), lines


def test_a_catalog_another_process_holds_the_write_lock_of_is_busy_not_damaged(small_workspace, tmp_path, capsys,
                                                                              monkeypatch):
    # "is not a readable rsretrieve catalog (database is locked)" sent the user to a catalog that was fine
    import shutil
    import sqlite3

    from rsretrieve.cli import main
    from rsretrieve.data import catalog as catalog_module
    from rsretrieve.data.catalog import Catalog

    ws = tmp_path / "ws"
    shutil.copytree(small_workspace, ws)
    real_connect = sqlite3.connect
    monkeypatch.setattr(catalog_module.sqlite3, "connect", lambda *a, **kw: real_connect(*a, **{**kw, "timeout": 0.2}))
    with Catalog(ws / "catalog.sqlite") as cat:
        key = cat.scenes()[0]["key"]
    other = real_connect(ws / "catalog.sqlite", isolation_level=None)  # another process's ingest, say
    other.execute("BEGIN IMMEDIATE")
    try:
        before = (ws / "catalog.sqlite").read_bytes()
        assert main(["catalog", "--workspace", str(ws), "--remove", key]) == 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rsretrieve catalog: error: {ws / 'catalog.sqlite'} is busy: another "
                                               "process (an ingest?) held its write lock for the 60 s this one waited")
    assert err[0].endswith("; run it again when that one has finished")
    assert (ws / "catalog.sqlite").read_bytes() == before
    with Catalog(ws / "catalog.sqlite") as cat:
        assert key in {s["key"] for s in cat.scenes()}
