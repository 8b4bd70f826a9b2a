"""Evaluation charts as read by eye: the legend hides no bar and no value label."""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.patches import Rectangle

import rsretrieve.viz.charts as charts


def test_the_recall_legend_hides_no_bar_of_a_recall_near_one(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(charts, "save_png", lambda fig, path, dpi=120: seen.append(fig) or path)
    pairs = {f"{a}->{b}": {"recall@1": 0.97, "recall@10": 0.995, "chance_recall@1": 0.0005,
                           "chance_recall@10": 0.005, "queries": 2000}
             for a in ("sentinel1", "sentinel2", "enmap") for b in ("sentinel1", "sentinel2", "enmap") if a != b}
    low = {p: {**v, "recall@1": 0.6, "recall@10": 0.9} for p, v in pairs.items()}
    report = {"models": {"default": {"kind": "ours", "pairs": pairs}, "dual": {"kind": "dual_encoder", "pairs": low},
                         "untrained": {"kind": "ours (random init)", "pairs": low},
                         "band_stats": {"kind": "per-band mean/std + ridge map", "pairs": low}}}
    charts.recall_chart(report, tmp_path / "recall.png")
    fig = seen[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    assert len(legends) == 1
    box = legends[0].get_window_extent(renderer)
    drawn = [a for ax in fig.axes for a in (*ax.patches, *ax.texts) if isinstance(a, Rectangle) or a.get_text()]
    assert len(drawn) >= 2 * 2 * 4 * 6  # bars and value labels of 4 models, 6 pairs, 2 panels
    for a in drawn:
        assert not box.overlaps(a.get_window_extent(renderer)), a
    for ax in fig.axes:  # nor a panel's title
        assert not box.overlaps(ax.title.get_window_extent(renderer))
    if fig._suptitle:
        assert not box.overlaps(fig._suptitle.get_window_extent(renderer))
