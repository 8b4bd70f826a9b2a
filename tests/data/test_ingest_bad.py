"""Bad inputs: each is reported with its path and reason, the good files are committed, exit code 1, no traceback."""

import os
import sqlite3

import numpy as np
import pytest

from tests.conftest import s1_scene, write_tif


@pytest.fixture
def mixed_archive(tmp_path):
    d = tmp_path / "archive"
    good = [s1_scene(d / "S1A_IW_GRDH_1SDV_20210101T000000_good1.tif", seed=1),
            s1_scene(d / "S1A_IW_GRDH_1SDV_20210102T000000_good2.tif", seed=2, origin=(501_000.0, 5_000_000.0))]
    (d / "zero_bytes.tif").write_bytes(b"")
    full = s1_scene(tmp_path / "full.tif", seed=3).read_bytes()
    (d / "truncated.tif").write_bytes(full[: len(full) // 3])
    (d / "not_a_raster.tif").write_text("this is a text file, not a GeoTIFF\n")
    write_tif(d / "no_crs.tif", np.zeros((2, 32, 32), "float32"), crs=None)
    write_tif(d / "five_bands.tif", np.ones((5, 32, 32), "uint8"))
    write_tif(d / "S1A_IW_GRDH_1SDV_20210103T000000_allnodata.tif", np.full((2, 64, 64), np.nan, "float32"),
              nodata=float("nan"))
    os.symlink(d / "gone.tif", d / "dangling_link.tif")
    (d / "notes.txt").write_text("sidecar text files are ignored\n")
    return d, good


EXPECTED_REASONS = {
    "zero_bytes.tif": "empty file (0 bytes)",
    "truncated.tif": "truncated or unreadable (band 1)",  # opens, but its last block is gone; named once, by the path
    "not_a_raster.tif": "not a raster file GDAL can read",
    "no_crs.tif": "no CRS: the file is not georeferenced",
    "five_bands.tif": "5 band(s) of uint8 fit no registered sensor",
    "S1A_IW_GRDH_1SDV_20210103T000000_allnodata.tif": "all pixels are nodata",
    "dangling_link.tif": "cannot read: No such file or directory",
}


def test_bad_inputs_are_reported_and_good_ones_committed(cli, mixed_archive, tmp_path):
    d, good = mixed_archive
    ws = tmp_path / "ws"
    r = cli("ingest", d, "--workspace", ws)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    rejected = [line for line in r.stderr.splitlines() if line.startswith("rejected: ")]
    assert len(rejected) == len(EXPECTED_REASONS), r.stderr
    for name, reason in EXPECTED_REASONS.items():
        line = next((x for x in rejected if f"{d / name}: " in x), None)
        assert line is not None, f"{name} not reported:\n{r.stderr}"
        assert line.startswith(f"rejected: {d / name}: {reason}"), line
    assert "2 scenes added" in r.stdout
    con = sqlite3.connect(ws / "catalog.sqlite")
    keys = sorted(k for (k,) in con.execute("SELECT key FROM scenes"))
    assert keys == sorted(str(g) for g in good)
    assert con.execute("SELECT COUNT(*) FROM tiles").fetchone()[0] > 0
    # rerunning commits nothing new and reports the same rejections (nothing lost, nothing duplicated)
    r2 = cli("ingest", d, "--workspace", ws)
    assert r2.returncode == 1 and "0 scenes added, 0 replaced, 2 already in the catalog" in r2.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 file, so it is not unreadable here")
def test_unreadable_file_is_reported(cli, tmp_path):
    p = s1_scene(tmp_path / "a" / "S1A_IW_GRDH_1SDV_20210101T000000_x.tif")
    p.chmod(0)
    r = cli("ingest", tmp_path / "a", "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "cannot read: permission denied" in r.stderr


def test_missing_path_is_reported_and_others_still_ingested(cli, tmp_path):
    good = s1_scene(tmp_path / "S1A_IW_GRDH_1SDV_20210101T000000_x.tif")
    r = cli("ingest", tmp_path / "nope", good, "--workspace", tmp_path / "ws")
    assert r.returncode == 1
    assert f"rejected: {tmp_path / 'nope'}: no such file or directory" in r.stderr
    assert "1 scenes added" in r.stdout


def test_only_missing_paths_are_bad_usage_and_make_no_workspace(cli, tmp_path):
    # a typo made an empty workspace and exited 1, "partial failure", with nothing committed
    r = cli("ingest", tmp_path / "nope", tmp_path / "nor", "--workspace", tmp_path / "ws")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"rsretrieve ingest: error: nothing to ingest: no such file or "
                                             f"directory: {tmp_path / 'nope'}, {tmp_path / 'nor'}"]
    assert not (tmp_path / "ws").exists()
    good = s1_scene(tmp_path / "S1A_IW_GRDH_1SDV_20210101T000000_x.tif")
    assert cli("ingest", good, "--workspace", tmp_path / "ws").returncode == 0
    before = (tmp_path / "ws" / "catalog.sqlite").read_bytes()
    r = cli("ingest", tmp_path / "nope", "--workspace", tmp_path / "ws")
    assert r.returncode == 2 and (tmp_path / "ws" / "catalog.sqlite").read_bytes() == before  # nothing lost


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_a_reader_of_stdout_gone_early_loses_neither_the_rejections_nor_the_exit_code(mixed_archive, tmp_path,
                                                                                    unbuffered):
    # `rsretrieve ingest ARCHIVE | head -1`: the first write into the closed pipe ended the command with exit code 0
    # and without its `rejected:` lines (on stderr, still open)
    import subprocess
    import sys

    from tests.conftest import ROOT

    d, good = mixed_archive
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update({"PYTHONUNBUFFERED": unbuffered} if unbuffered else {})
    p = subprocess.Popen([sys.executable, "-m", "rsretrieve.cli", "ingest", str(d), "--workspace",
                          str(tmp_path / "ws")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=ROOT)
    p.stdout.close()  # the reader is gone before the command writes anything
    err = p.stderr.read()
    assert p.wait(timeout=300) == 1, err
    assert sorted(line.split(": ")[1].rsplit("/", 1)[-1] for line in err.splitlines()
                  if line.startswith("rejected: ")) == sorted(EXPECTED_REASONS), err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    with sqlite3.connect(tmp_path / "ws" / "catalog.sqlite") as c:  # the good scenes committed all the same
        assert c.execute("SELECT COUNT(*) FROM scenes").fetchone()[0] == len(good)


def test_a_file_named_on_its_own_that_is_no_raster_is_rejected_not_skipped(cli, tmp_path):
    # `rsretrieve ingest README.md` said "0 rejected" and exited 0; beside scenes (`ingest DIR/*` names every
    # sidecar) such files are ignored, as in a folder
    good = s1_scene(tmp_path / "S1A_IW_GRDH_1SDV_20210101T000000_x.tif")
    (tmp_path / "README.md").write_text("# notes\n")
    (tmp_path / "training.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    (tmp_path / "item.json").write_text('{"type": "FeatureCollection", "features": []}')
    os.symlink(tmp_path / "README.md", tmp_path / "notes")
    r = cli("ingest", tmp_path / "README.md", tmp_path / "training.h5", tmp_path / "item.json", tmp_path / "notes",
            "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    suffixes = ".img, .jp2, .tif, .tiff, .vrt"
    not_raster = f"not a raster file rsretrieve reads (its name must end in {suffixes}, or be a STAC Item .json)"
    assert sorted(r.stderr.strip().splitlines()) == sorted([
        f"rejected: {tmp_path / 'README.md'}: {not_raster}",
        f"rejected: {tmp_path / 'training.h5'}: {not_raster}",
        f"rejected: {tmp_path / 'item.json'}: a JSON file that is not a STAC Item (a GeoJSON Feature with "
        "stac_version and assets)"])  # the link resolves to README.md: one input, named as first given
    assert "0 scenes added" in r.stdout and "3 rejected" in r.stdout
    r = cli("ingest", *sorted(tmp_path.glob("*")), "--workspace", tmp_path / "ws2")  # `ingest DIR/*`
    assert r.returncode == 0 and "1 scenes added" in r.stdout and "0 rejected" in r.stdout and not r.stderr, r.stderr


def test_one_band_file_of_a_per_band_product_says_to_ingest_its_band_files_together(cli, tmp_path):
    # a BigEarthNet-style VV.tif named on its own was told "pass --sensor if it is one", and with
    # `--sensor sentinel1` only "has 1 bands but ... full: 2": no flag makes one band a scene
    vv = tmp_path / "S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_39" / "VV.tif"
    write_tif(vv, np.full((1, 64, 64), -12.0, "float32"))
    write_tif(vv.parent / "VH.tif", np.full((1, 64, 64), -19.0, "float32"))
    hint = ("it looks like band VV of a product delivered as one file per band: ingest its folder, or all its band "
            "files together, and they make one scene")
    r = cli("ingest", vv, "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"rejected: {vv}: 1 band(s) of float32 fit no registered sensor (enmap 224, landsat7 6, landsat8 7, "
        f"sentinel1 2, sentinel2 12, sentinel2_l1c 13); {hint}"]
    r = cli("ingest", vv, "--workspace", tmp_path / "ws", "--sensor", "sentinel1")
    assert r.returncode == 1
    assert r.stderr.strip().endswith(f"has 1 bands but sensor 'sentinel1' files have full: 2; {hint}")
    r = cli("ingest", vv.parent, "--workspace", tmp_path / "ws")  # as the hint says
    assert r.returncode == 0 and "1 scenes added" in r.stdout, r.stderr
    # a one-band file not named after a band keeps the --sensor hint
    one = write_tif(tmp_path / "mystery.tif", np.zeros((1, 32, 32), "float32"))
    assert cli("ingest", one, "--workspace", tmp_path / "ws").stderr.strip().endswith("; pass --sensor if it is one")


def test_a_broken_link_named_alone_is_named_as_one(cli, tmp_path):
    os.symlink(tmp_path / "gone.tif", tmp_path / "link.tif")  # not "no such file or directory", a typo's message
    r = cli("ingest", tmp_path / "link.tif", "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"rejected: {tmp_path / 'link.tif'}: cannot read: No such file or directory (broken symbolic link)"]


def test_forced_sensor_with_wrong_band_count_is_rejected(cli, tmp_path):
    good = s1_scene(tmp_path / "x.tif")
    r = cli("ingest", good, "--workspace", tmp_path / "ws", "--sensor", "sentinel2")
    assert r.returncode == 1
    assert "has 2 bands but sensor 'sentinel2' files have full: 12" in r.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--sensor", "sentinel9"], "unknown sensor 'sentinel9'"),
    (["--min-coverage", "1.5"], "--min-coverage must be within 0..1"),
    (["--tile-size", "-3"], "--tile-size must be > 0 metres"),
    (["--workers", "0"], "--workers must be >= 1 (processes cutting scenes in parallel), got 0"),
    (["--workers", "-1"], "--workers must be >= 1 (processes cutting scenes in parallel), got -1"),
])
def test_bad_ingest_arguments_exit_2_with_one_line(cli, tmp_path, args, message):
    r = cli("ingest", tmp_path, "--workspace", tmp_path / "ws", *args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_tile_size_of_an_existing_workspace_cannot_change(cli, tmp_path):
    good = s1_scene(tmp_path / "a" / "x.tif")
    assert cli("ingest", good, "--workspace", tmp_path / "ws").returncode == 0
    r = cli("ingest", good, "--workspace", tmp_path / "ws", "--tile-size", "960")
    assert r.returncode == 2 and "this workspace's grid has 480 m tiles, not 960 m" in r.stderr


@pytest.mark.parametrize(("link", "named", "suffixes"), [
    ("S1A_IW_GRDH_1SDV_20210101T000000_x.tif", True, ".img, .jp2, .tif, .tiff, .vrt"),
    ("item.json", True, ".json"),
    ("data/S1A_IW_GRDH_1SDV_20210101T000000_x.tif", False, ".img, .jp2, .tif, .tiff, .vrt"),
], ids=["raster-named", "json-named", "raster-in-a-folder"])
def test_a_link_to_a_content_addressed_blob_is_rejected_not_dropped(cli, tmp_path, link, named, suffixes):
    # DVC, Nix or a Hugging Face snapshot: NAME.tif -> cache/3f9a0c. Named, or in a folder (the cache walked too),
    # it said "0 rejected" and exited 0; item.json was told its name must end in ... "or be a STAC Item .json"
    blob = tmp_path / "d" / "cache" / "3f9a0c"
    blob.parent.mkdir(parents=True)
    if link.endswith(".json"):
        blob.write_text('{"type": "Feature"}')
    else:
        s1_scene(blob)
    (tmp_path / "d" / link).parent.mkdir(exist_ok=True)
    os.symlink(blob, tmp_path / "d" / link)
    r = cli("ingest", tmp_path / "d" / link if named else tmp_path / "d", "--workspace", tmp_path / "ws")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"rejected: {tmp_path / 'd' / link}: a link to {blob}, whose name does not end in {suffixes}: link or copy "
        "it to a name that does"]
