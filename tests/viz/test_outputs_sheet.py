"""The contact sheet and quicklooks as an engineer looks at them: nodata not drawn as black data, captions under
their own tile and clear of the others, north up."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

import rsretrieve.viz.charts as charts
from rsretrieve.viz.quicklook import contact_sheet, quicklook


def _s1(vv=-12.0, vh=-19.0, n=16):
    """A normalised Sentinel-1 tile of constant dB (sentinel1.yaml: VV mean -12.5 std 5, VH mean -19.5 std 5.5)."""
    return np.stack([np.full((n, n), (vv + 12.5) / 5.0), np.full((n, n), (vh + 19.5) / 5.5)]).astype(np.float32)


def test_quicklook_with_alpha_makes_nodata_transparent_and_the_rest_opaque():
    tile = _s1()
    tile[:, :, :8] = 0  # the west half outside the scene
    rgba = quicklook(tile, "sentinel1", alpha=True)
    assert rgba.shape == (16, 16, 4) and rgba.dtype == np.uint8
    assert (rgba[:, :8, 3] == 0).all() and (rgba[:, 8:, 3] == 255).all()
    np.testing.assert_array_equal(rgba[..., :3], quicklook(tile, "sentinel1"))


def test_nodata_on_a_contact_sheet_is_not_drawn_as_black(tmp_path):
    tile = _s1()
    tile[:, :, :8] = 0  # half the tile is nodata; the valid half renders in mid tones, nowhere black
    assert quicklook(tile, "sentinel1")[:, 8:].min() > 40
    img = np.asarray(Image.open(contact_sheet(tmp_path / "s.png", (tile, "sentinel1", "q"), [],
                                              cols=1)).convert("RGB"))
    black = (img.max(axis=-1) < 20).sum()
    # drawn black, the nodata half would be about (1.9 in x 110 dpi / 2)^2 x 2 = 20,000 px; text is a few hundred
    assert black < 2000, black


def _texts(fig):
    """The texts drawn on the sheet: the figure's (title, legend) and each tile's (caption, axes title)."""
    out = [*fig.texts, *([fig._suptitle] if fig._suptitle else [])]
    for ax in fig.axes:
        out += [*ax.texts, ax.title, ax._left_title, ax._right_title]
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _figure_of(monkeypatch, tmp_path, n):
    seen = []
    monkeypatch.setattr(charts, "save_png", lambda fig, path, dpi=120: seen.append(fig) or path)
    items = [(_s1(), "sentinel1", f"#{i}  0.{900 - i}  tile {i}\nsentinel1 2020-06-07") for i in range(n)]
    contact_sheet(tmp_path / "s.png", items[0], items[1:], title="tile 1  (33N_480m_r1_c1)")
    fig = seen[0]
    canvas = FigureCanvasAgg(fig)  # as savefig draws it
    canvas.draw()
    return fig, canvas.get_renderer()


@pytest.mark.parametrize("n", [2, 12, 20])
def test_captions_sit_under_their_own_tile_and_overlap_no_other_tile(monkeypatch, tmp_path, n):
    fig, renderer = _figure_of(monkeypatch, tmp_path, n)
    tiles = [ax for ax in fig.axes if ax.images]
    assert len(tiles) == n
    boxes = {ax: ax.get_window_extent(renderer) for ax in tiles}
    texts = _texts(fig)
    captions = [t for t in texts if t.axes in boxes]
    assert len(captions) == n
    for t in texts:
        tb = t.get_window_extent(renderer)
        for ax, ab in boxes.items():
            if ax is not t.axes:
                assert not tb.overlaps(ab), (t.get_text(), "overlaps another tile")
        if t.axes in boxes:  # under its tile, centred on it
            ab = boxes[t.axes]
            assert tb.y1 <= ab.y0 + 1 and ab.x0 <= (tb.x0 + tb.x1) / 2 <= ab.x1, t.get_text()
    for a, b in zip(captions, captions[1:]):
        assert not a.get_window_extent(renderer).overlaps(b.get_window_extent(renderer))


def test_tiles_are_drawn_north_up_not_flipped_or_transposed(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(charts, "save_png", lambda fig, path, dpi=120: seen.append(fig) or path)
    tile = _s1()
    tile[:, :4, :] = 0  # a nodata strip along the north edge (row 0), nowhere else
    contact_sheet(tmp_path / "s.png", (tile, "sentinel1", "q"), [])
    im = seen[0].axes[0].images[0]
    assert im.origin == "upper"
    shown = np.asarray(im.get_array())
    np.testing.assert_array_equal(shown[4:], quicklook(tile, "sentinel1")[4:])  # data pixels as they are
    assert (shown[:4] != 0).any(axis=-1).all()  # the north strip is the nodata pattern, at the top


def test_a_sheet_of_one_tile_with_a_long_title_keeps_every_line_inside_the_image(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(charts, "save_png", lambda fig, path, dpi=120: seen.append(fig) or path)
    title = "../shared/data/real/bigearthnet_mm/S1/S1A_IW_GRDH_1SDV_20170613T165043_33UUP_87_48/" * 2
    tile = _s1()
    contact_sheet(tmp_path / "s.png", (tile, "sentinel1", "query sentinel1\n2017-06-13"), [], title=title)
    fig = seen[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    page = fig.bbox
    texts = _texts(fig)
    for t in texts:
        b = t.get_window_extent(canvas.get_renderer())
        assert page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0 and b.y1 <= page.y1, t.get_text()[:40]
    assert any("VV-VH" in t.get_text() for t in texts)  # the legend says what the SAR colours are
