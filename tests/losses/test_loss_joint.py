"""Joint objective: missing sensors, one flag per term, agreement with the single losses, the queue."""

import math

import pytest
import torch
import torch.nn.functional as F

from rsretrieve.losses import JointObjective, SensorEmbeddings, SymmetricInfoNCE

SENSORS = ["enmap", "sentinel1", "sentinel2"]
SCALE = torch.tensor(1.0 / 0.5)  # temperature 0.5


def _parts(seed: int = 0) -> dict[str, SensorEmbeddings]:
    g = torch.Generator().manual_seed(seed)
    cells = torch.arange(6)
    return {
        "sentinel1": SensorEmbeddings(torch.randn(4, 8, generator=g), cells[:4], torch.full((4,), -1)),
        "sentinel2": SensorEmbeddings(torch.randn(5, 8, generator=g), cells[1:], torch.tensor([0, 0, 1, 1, -1])),
        "enmap": SensorEmbeddings(torch.randn(0, 8), cells[:0], cells[:0]),  # absent from the whole batch
    }


def _only(**flags) -> JointObjective:
    base = dict(cross_sensor=False, within_sensor=False, vicreg=False, adversarial=False,
                uncertainty_weighting=False)
    return JointObjective(SENSORS, embed_dim=8, **(base | flags))


def test_cross_term_equals_symmetric_infonce_on_folded_vectors():
    parts = _parts()
    total, terms = _only(cross_sensor=True)(parts, SCALE)
    a, b = parts["sentinel1"], parts["sentinel2"]
    fold = math.sqrt(SCALE.item())
    expected = SymmetricInfoNCE()(F.normalize(a.z, dim=-1) * fold, a.cells, F.normalize(b.z, dim=-1) * fold, b.cells)
    assert set(terms) == {"cross"}
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_sensor_pairs_without_shared_cells_contribute_nothing():
    parts = _parts()
    parts["sentinel2"].cells = parts["sentinel2"].cells + 100  # no cell seen by both sensors
    parts["sentinel1"].z.requires_grad_()
    total, terms = _only(cross_sensor=True)(parts, SCALE)
    assert "cross" not in terms and total.item() == 0.0
    total.backward()  # still a graph: a batch without pairs is not an error


@pytest.mark.parametrize("flag,term", [("cross_sensor", "cross"), ("within_sensor", "within"),
                                       ("vicreg", "vicreg"), ("adversarial", "adversarial")])
def test_each_term_is_one_flag(flag, term):
    all_on = dict(cross_sensor=True, within_sensor=True, vicreg=True, adversarial=True)
    _, terms = JointObjective(SENSORS, embed_dim=8, **all_on)(_parts(), SCALE)
    assert set(terms) == {"cross", "within", "vicreg", "adversarial"}
    _, terms_off = JointObjective(SENSORS, embed_dim=8, **(all_on | {flag: False}))(_parts(), SCALE)
    assert set(terms_off) == set(terms) - {term}


def test_within_term_uses_labels_and_views():
    parts = _parts()
    _, terms = _only(within_sensor=True)(parts, SCALE)
    assert "within" in terms  # sentinel2 has two classes with two labelled tiles each
    parts["sentinel2"].labels = torch.full((5,), -1)
    _, none = _only(within_sensor=True)(parts, SCALE)
    assert "within" not in none  # no labels and no views: nothing to discriminate
    s1 = parts["sentinel1"]
    s1.view, s1.view_cells = s1.z + 0.01, s1.cells
    _, views = _only(within_sensor=True)(parts, SCALE)
    assert "within" in views


def test_uncertainty_weighting_starts_at_half_weights():
    parts = _parts()
    objective = JointObjective(SENSORS, embed_dim=8, within_sensor=False)
    total, terms = objective(parts, SCALE)
    assert total.item() == pytest.approx(0.5 * (terms["cross"] + terms["vicreg"]).item(), abs=1e-6)
    assert objective.term_weights() == pytest.approx({"cross": 0.5, "vicreg": 0.5})


def test_queue_adds_negatives_of_the_candidate_sensor():
    parts = _parts()
    objective = _only(cross_sensor=True, queue_size=16)
    before, _ = objective(parts, SCALE)
    objective.enqueue(_parts(seed=1))  # other embeddings of cells 0..5: same-cell rows are excluded
    assert len(objective.queue) == 9
    after, _ = objective(parts, SCALE)
    assert after.item() > before.item()  # more negatives, never fewer
    parts["sentinel1"].cells = parts["sentinel1"].cells + 50
    parts["sentinel2"].cells = parts["sentinel2"].cells + 50
    objective.enqueue(parts)
    assert len(objective.queue) == 16


def test_all_terms_off_is_refused():
    with pytest.raises(ValueError):
        _only()


def test_queued_vectors_are_recentred_on_the_current_batch():
    objective = JointObjective(SENSORS, embed_dim=2, within_sensor=False, vicreg=False, queue_size=4)
    objective.queue.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([7, 8]), sensor=1)  # sentinel1
    current = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]])
    emb, cells = objective._queue("sentinel1", current, torch.tensor(4.0))
    # queue mean (0.5, 0.5) replaced by the current mean (-1, 0): rows (-0.5, -0.5) and (-1.5, 0.5), normalised, x 2
    expected = torch.nn.functional.normalize(torch.tensor([[-0.5, -0.5], [-1.5, 0.5]]), dim=-1) * 2.0
    assert torch.allclose(emb, expected, atol=1e-6) and cells.tolist() == [7, 8]
