"""InfoNCE against hand computations on 2x2 inputs, missing positives, queue negatives."""

import math

import pytest
import torch

from rsretrieve.losses import InfoNCE, SymmetricInfoNCE, info_nce

A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
B = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
CELLS = torch.tensor([10, 20])


def _nll(pos: float, *others: float) -> float:
    """-log(exp(pos) / (exp(pos) + sum exp(others)))."""
    return -math.log(math.exp(pos) / (math.exp(pos) + sum(math.exp(o) for o in others)))


def test_one_direction_2x2_matches_hand_computation():
    # logits A @ B.T = [[1, 0.6], [0, 0.8]]; positives on the diagonal
    expected = (_nll(1.0, 0.6) + _nll(0.8, 0.0)) / 2
    loss, n = info_nce(A, CELLS, B, CELLS)
    assert n == 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_symmetric_2x2_with_temperature_matches_hand_computation():
    t = 0.5
    a_to_b = (_nll(1.0 / t, 0.6 / t) + _nll(0.8 / t, 0.0 / t)) / 2
    b_to_a = (_nll(1.0 / t, 0.0 / t) + _nll(0.8 / t, 0.6 / t)) / 2  # B @ A.T = [[1, 0], [0.6, 0.8]]
    loss = SymmetricInfoNCE(temperature=t)(A, CELLS, B, CELLS)
    assert loss.item() == pytest.approx((a_to_b + b_to_a) / 2, abs=1e-6)


def test_queries_without_positive_are_skipped_not_errors():
    # B has only cell 10: A's query of cell 20 has no positive and is left out
    loss, n = info_nce(A, CELLS, B[:1], CELLS[:1])
    assert n == 1
    assert loss.item() == pytest.approx(0.0, abs=1e-7)  # a single candidate, the positive: -log(1)
    none, n0 = info_nce(A, CELLS, B, torch.tensor([30, 40]))
    assert n0 == 0 and none.item() == 0.0


def test_queue_negatives_are_added_and_same_cell_entries_excluded():
    q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    q_cells = torch.tensor([99, 10])  # second entry is cell 10: never a negative for the query of cell 10
    # query 0 (cell 10): logits to B [1, 0.6], to queue [0, (excluded)]
    # query 1 (cell 20): logits to B [0, 0.8], to queue [1, 0]
    expected = (_nll(1.0, 0.6, 0.0) + _nll(0.8, 0.0, 1.0, 0.0)) / 2
    loss, _ = info_nce(A, CELLS, B, CELLS, q, q_cells)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_within_batch_form_excludes_self():
    # two views of two cells in one batch: rows 0, 2 are cell 1; rows 1, 3 are cell 2
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    labels = torch.tensor([1, 2, 1, 2])
    sims = emb @ emb.T
    expected = 0.0
    for i, p in ((0, 2), (1, 3), (2, 0), (3, 1)):
        others = [sims[i, j].item() for j in range(4) if j not in (i, p)]
        expected += _nll(sims[i, p].item(), *others) / 4
    assert InfoNCE()(emb, labels).item() == pytest.approx(expected, abs=1e-6)


def test_multiple_positives_sum_in_the_numerator():
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    ref_cells = torch.tensor([10, 10, 20])  # two tiles of cell 10 (two dates)
    q = torch.tensor([[1.0, 0.0]])
    expected = -math.log((math.exp(1) + math.exp(0)) / (math.exp(1) + math.exp(0) + math.exp(0.5)))
    assert InfoNCE()(q, torch.tensor([10]), ref, ref_cells).item() == pytest.approx(expected, abs=1e-6)
