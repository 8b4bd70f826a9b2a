"""discover() at archive scale: auxiliary files (EnMAP's ten quality masks per scene, Landsat QA) are matched to their
scene by a sorted lookup per folder, not by comparing each with every file of the archive (quadratic: 65 s for 500
EnMAP scenes, over 300 s for 2000), and the matches are the ones the full comparison made."""

import os
from pathlib import Path

from rsretrieve.data import discover as discover_module
from rsretrieve.data.discover import discover

QL = ("QL_PIXELMASK", "QL_QUALITY_CLOUD", "QL_QUALITY_HAZE", "QL_SWIR", "QL_VNIR")


def _enmap(folder: Path, i: int) -> str:
    stem = f"ENMAP01-____L2A-DT{i:010d}_20221103T162438Z_001_V010110_20221118T145147Z-Y01460273_X{i:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    for s in ("SPECTRAL_IMAGE", *QL):
        (folder / f"{stem}-{s}.TIF").touch()
    return stem


def _reference_aux(sources, aux_files):
    """The matching as discover() defined it: for each auxiliary file, over every file of every source in the same
    folder, the longest common name prefix wins, the first in source and file order on a tie."""
    out = {}
    for a in aux_files:
        best, best_len = None, 0
        for s in sources:
            for v in s.files.values():
                v = Path(v)
                if v.parent == a.parent:
                    n = len(os.path.commonprefix([v.name, a.name]))
                    if n > best_len:
                        best, best_len = s, n
        out[str(a)] = None if best is None else best.key
    return out


def test_aux_files_go_to_the_scene_the_full_comparison_chose_ties_and_flat_folders_included(tmp_path):
    flat = tmp_path / "flat"
    for i in range(12):
        _enmap(flat, i)
    # two stacked files sharing the longest prefix with a mask: the first in source order takes it
    (flat / "X-SPECTRAL_A.TIF").touch()
    (flat / "X-SPECTRAL_B.TIF").touch()
    (flat / "X-QL_QUALITY_CLOUD.TIF").touch()
    (flat / "Y-QL_SWIR.TIF").touch()  # shares no prefix with any scene file: attached to none
    for i in range(12, 15):
        _enmap(tmp_path / f"scene{i}", i)
    sources, problems = discover([tmp_path])
    assert not problems
    aux_files = sorted(p.resolve() for p in tmp_path.rglob("*-QL_*.TIF"))
    ref = _reference_aux(sources, aux_files)
    got = {a: s.key for s in sources for a in s.aux.values()}
    assert {a: k for a, k in ref.items() if k is not None} == got
    assert ref[str((flat / "X-QL_QUALITY_CLOUD.TIF").resolve())] == str((flat / "X-SPECTRAL_A.TIF").resolve())
    assert ref[str((flat / "Y-QL_SWIR.TIF").resolve())] is None
    assert len(sources) == 17 and sum(len(s.aux) for s in sources) == 15 * len(QL) + 1


def test_matching_masks_in_a_flat_folder_compares_a_few_names_per_mask_not_every_scene(tmp_path, monkeypatch):
    for i in range(150):
        _enmap(tmp_path, i)
    calls = []
    real = os.path.commonprefix
    monkeypatch.setattr(discover_module.os.path, "commonprefix", lambda names: calls.append(1) or real(names))
    sources, _ = discover([tmp_path])
    assert len(sources) == 150 and all(len(s.aux) == len(QL) for s in sources)
    # two neighbours per mask; comparing with every scene's file made 150 per mask
    assert len(calls) <= 2 * 150 * len(QL)


def test_hundreds_of_enmap_scenes_in_folders_of_their_own_each_get_their_masks(tmp_path):
    for i in range(300):
        _enmap(tmp_path / f"s{i}", i)
    sources, _ = discover([tmp_path])
    assert len(sources) == 300 and all(len(s.aux) == len(QL) for s in sources)
