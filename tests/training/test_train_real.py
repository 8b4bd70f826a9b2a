"""The whole path on the real samples through the CLI: ingest -> train (a few seconds) -> evaluate.

BigEarthNet-MM pairs and the SSL4EO-S12 location, read in place, on a 120 m grid (what scripts/bench_real.py uses);
skipped when the samples are absent (see the ``real_data`` fixture).
"""

import json

import pytest

from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def real_ws(real_data, tmp_path_factory):
    ws = tmp_path_factory.mktemp("real") / "ws"
    r = run_cli("ingest", real_data / "bigearthnet_mm", real_data / "ssl4eo_s12", "--workspace", ws,
                "--tile-size", "120", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return ws, json.loads(r.stdout)


def test_real_samples_give_hundreds_of_co_registered_cells_at_120m(real_ws):
    _, ing = real_ws
    assert ing["report"]["problems"] == [] and ing["report"]["added"] == 18
    s = ing["catalog"]["sensors"]
    # 6 BigEarthNet-MM pairs (1.2 km: ~10 x 10 cells each) + SSL4EO-S12 (2.6 km: ~22 x 22 cells)
    assert s["sentinel1"]["cells"] > 500 and s["sentinel2"]["cells"] > 500


def test_real_ingest_train_evaluate_through_the_cli(real_ws, tmp_path):
    ws, _ = real_ws
    r = run_cli("train", "--config", ROOT / "configs/s1_s2.yaml", "--workspace", ws, "--data.batch_size", "16",
                "--data.max_train_cells", "64", "--trainer.max_epochs", "1", "--trainer.max_time", "null",
                "--trainer.enable_model_summary", "false")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("evaluate", "--workspace", ws, "--json", "--out", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    # the spatial split leaves a test set on this small ground, away from the training blocks
    assert rep["cells"]["test"] >= 100 and rep["cells"]["train"] >= 300
    assert set(rep["models"]) == {"default", "untrained", "band_stats"}
    for m in rep["models"].values():
        assert set(m["pairs"]) == {"sentinel1->sentinel2", "sentinel2->sentinel1"}
        for p in m["pairs"].values():
            assert p["queries"] == p["gallery"] == rep["cells"]["test"]  # every test cell has both sensors
            assert p["chance_recall@1"] == pytest.approx(1 / p["gallery"])
            assert 0 <= p["recall@1"] <= p["recall@5"] <= p["recall@10"] <= 1
            assert "mAP@10" not in p  # no land-cover labels in these samples: no class metric is made up
