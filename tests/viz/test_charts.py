"""Evaluation and embedding charts on small made-up inputs: files written and readable, PCA values by hand."""

from itertools import permutations

import numpy as np
import pytest
from PIL import Image

from rsretrieve.viz.charts import MODEL_COLOURS, _model_colours, embedding_projection, pca_2d, recall_chart, subsample

SENSORS = ["sentinel1", "sentinel2", "enmap"]


def _report(models=("default", "dual", "untrained", "band_stats")):
    kinds = {"default": "ours", "dual": "dual_encoder", "untrained": "ours (random init)",
             "band_stats": "per-band mean/std + ridge map"}
    rng = np.random.default_rng(0)
    return {"models": {m: {"kind": kinds[m], "pairs": {
        f"{a}->{b}": {"queries": 40, "gallery": 40, "recall@1": float(rng.uniform(0, 0.6)),
                      "recall@10": float(rng.uniform(0.5, 1)), "chance_recall@1": 1 / 40, "chance_recall@10": 10 / 40}
        for a, b in permutations(SENSORS, 2)}} for m in models}}


def _png_size(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def test_recall_chart_writes_a_png(tmp_path):
    out = recall_chart(_report(), tmp_path / "sub" / "recall.png")
    assert out == tmp_path / "sub" / "recall.png" and out.stat().st_size > 10_000
    fmt, (w, h) = _png_size(out)
    assert fmt == "PNG" and w > 800 and h > 600


def test_recall_chart_tolerates_a_missing_pair_and_refuses_an_empty_report(tmp_path):
    report = _report(("default", "band_stats"))
    del report["models"]["band_stats"]["pairs"]["enmap->sentinel1"]
    assert _png_size(recall_chart(report, tmp_path / "r.png"))[0] == "PNG"
    with pytest.raises(ValueError, match="no model with results"):
        recall_chart({"models": {"default": {"kind": "ours", "pairs": {}}}}, tmp_path / "e.png")


def test_an_added_sensors_baselines_take_the_baselines_colours():
    """evaluate names the baselines of an added sensor's pairs untrained@SPLIT and band_stats@SPLIT."""
    models = {"default": {"kind": "ours"}, "untrained": {"kind": "ours (random init)"},
              "band_stats": {"kind": "per-band mean/std + ridge map"}, "with_l8": {"kind": "ours"},
              "untrained@with_l8": {"kind": "ours (random init; pairs of landsat8: ...)"},
              "band_stats@with_l8": {"kind": "per-band mean/std + ridge map"}}
    colours = _model_colours(models)
    assert colours["untrained@with_l8"] == colours["untrained"] == MODEL_COLOURS["untrained"]
    assert colours["band_stats@with_l8"] == colours["band_stats"] == MODEL_COLOURS["band_stats"]


def test_pca_puts_the_dominant_direction_on_the_first_axis():
    # a (std 10) along d1 and b (std ~1) along d2, both centred and exactly uncorrelated: the PCs are d1 and d2
    rng = np.random.default_rng(1)
    d = np.linalg.qr(rng.standard_normal((16, 2)))[0].T  # (2, 16) orthonormal rows
    a = 10 * rng.standard_normal(200)
    a -= a.mean()
    b = rng.standard_normal(200)
    b -= b.mean()
    b -= (b @ a) / (a @ a) * a
    vectors = 5.0 + a[:, None] * d[0] + b[:, None] * d[1]
    coords, explained = pca_2d(vectors)
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(a), atol=1e-9)
    np.testing.assert_allclose(np.abs(coords[:, 1]), np.abs(b), atol=1e-9)
    assert explained[0] == pytest.approx((a @ a) / (a @ a + b @ b))
    assert explained[0] > 0.98
    # sign convention: the largest loading of each axis is positive, so the same input gives the same picture
    sign = np.sign(d[0][np.abs(d[0]).argmax()])
    np.testing.assert_allclose(coords[:, 0], sign * a, atol=1e-9)


def test_subsample_is_deterministic_sorted_and_bounded():
    i = subsample(12_000, 5000)
    assert len(i) == 5000 == len(np.unique(i)) and (np.diff(i) > 0).all() and i.max() < 12_000
    np.testing.assert_array_equal(i, subsample(12_000, 5000))
    np.testing.assert_array_equal(subsample(30, 5000), np.arange(30))


def test_embedding_projection_writes_two_panels(tmp_path):
    rng = np.random.default_rng(2)
    n = 5200  # over the 5000-point cap
    labels = rng.integers(-1, 4, n)
    sensors = np.array(SENSORS)[rng.integers(0, 3, n)]
    vectors = rng.standard_normal((n, 32)) + 4 * np.eye(32)[labels + 1]
    out = embedding_projection(vectors, sensors, labels, ["water", "forest", "crop", "urban"], tmp_path / "p.png")
    fmt, (w, h) = _png_size(out)
    assert fmt == "PNG" and w > 2 * h * 0.9 and out.stat().st_size > 10_000


def test_embedding_projection_checks_its_inputs(tmp_path):
    v = np.zeros((4, 3))
    with pytest.raises(ValueError, match="one row each"):
        embedding_projection(v, ["s"] * 3, [0] * 4, ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="label 2 has no name"):
        embedding_projection(v, ["s"] * 4, [0, 1, 2, -1], ["a", "b"], tmp_path / "x.png")
