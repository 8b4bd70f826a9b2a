"""Query result files: the contact sheet reads each hit's tile from its scene file."""

import json

from tests.conftest import make_workspace, run_cli


def test_a_hit_whose_scene_file_is_gone_is_named_as_unreadable_not_unwritable(tmp_path):
    ws = make_workspace(tmp_path, scenes=1, size_m=960)
    s2 = next((tmp_path / "archive" / "sentinel2").glob("*.tif"))
    r = run_cli("query", "-w", ws, "--tile-id", "1", "--target-sensors", "sentinel2", "-k", "2", "--json")
    hits = json.loads(r.stdout)["hits"]
    assert r.returncode == 0 and hits and {h["sensor"] for h in hits} == {"sentinel2"}, r.stderr
    s2.rename(tmp_path / "moved.tif")  # moved away after ingest
    r = run_cli("query", "-w", ws, "--tile-id", "1", "--target-sensors", "sentinel2", "-k", "2", "--png",
                tmp_path / "sheet.png")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"rsretrieve query: error: --png: cannot read tile {hits[0]['tile_id']} (sentinel2) "
                               f"for the contact sheet: {s2}: No such file or directory")
    assert not (tmp_path / "sheet.png").exists()


def test_a_contact_sheet_interrupted_while_written_leaves_the_earlier_sheet_whole(tmp_path, monkeypatch):
    import numpy as np
    from matplotlib.figure import Figure

    from rsretrieve.viz.quicklook import contact_sheet

    tile = np.zeros((2, 8, 8), np.float32)
    out = contact_sheet(tmp_path / "q.png", (tile, "sentinel1", "query"), [(tile, "sentinel1", "#1")])
    before = out.read_bytes()

    def interrupted(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", interrupted)
    try:
        contact_sheet(out, (tile, "sentinel1", "query"), [])
    except KeyboardInterrupt:
        pass
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.png"]  # no temporary file left either


def test_contact_sheet_captions_print_neighbouring_scores_that_differ_apart(small_workspace, tmp_path, monkeypatch):
    from dataclasses import replace

    import numpy as np

    import rsretrieve.viz.results as results
    from rsretrieve.workspace import Workspace

    ws = Workspace.open(small_workspace)
    try:
        res = ws.query(tile_id=1, k=3)
    finally:
        ws.close()
    # float32 scores, as searches give them: 0.812345 and 0.812346 read alike at 3 decimals, and at 5
    scores = [float(np.float32(s)) for s in (0.9, 0.812346, 0.812345)]
    hits = [replace(h, score=s) for h, s in zip(res.hits, scores)]
    seen = {}
    monkeypatch.setattr(results, "contact_sheet", lambda path, query, items, title="": seen.update(items=items) or path)
    results.write_png(tmp_path / "s.png", small_workspace, res.query, hits)
    assert [c.split()[1] for _, _, c in seen["items"]] == ["0.900000", "0.812346", "0.812345"]
