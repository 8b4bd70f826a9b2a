"""configs/add_sensor.yaml run through the real CLI on a workspace without the new sensor's scenes."""

from rsretrieve.data.catalog import Catalog
from rsretrieve.data.ingest import ingest
from rsretrieve.data.synthetic import make_archive
from tests.conftest import ROOT, run_cli, save_untrained_model


def test_adding_a_sensor_whose_scenes_are_not_ingested_is_refused_instead_of_writing_an_untrained_branch(tmp_path):
    """The run trained for its whole budget, nothing reaching the new branch, and wrote model.pt with exit 0: the
    Landsat 8 branch was Sentinel-2's copied weights, and `index` then embedded Landsat 8 with them."""
    make_archive(tmp_path / "archive", scenes=2, seed=3, size_m=1440, sensors=("sentinel1", "sentinel2"))
    ws = tmp_path / "ws"
    with Catalog(ws / "catalog.sqlite", tile_m=480) as cat:
        ingest([tmp_path / "archive"], cat)
    base = save_untrained_model(ws, sensors=["sentinel1", "sentinel2"])
    r = run_cli("train", "--config", ROOT / "configs/add_sensor.yaml", "--workspace", ws, "--name", "l8",
                "--model.pretrained", base, "--data.sensors", "[sentinel1,sentinel2,landsat8]",
                "--data.batch_size", "2", "--trainer.max_time", "00:00:00:05", "--trainer.enable_progress_bar",
                "false")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("rsretrieve train: error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert errors[0] == (f"rsretrieve train: error: --model.pretrained {base}: no training cell of the workspace "
                         "has a landsat8 tile beside another sensor's, so the new branch would not train; ingest "
                         "landsat8 scenes over the ground of sentinel1, sentinel2 first")
    assert not (ws / "checkpoints" / "l8" / "model.pt").exists()
