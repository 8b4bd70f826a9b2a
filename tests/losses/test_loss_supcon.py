"""Supervised contrastive loss against a hand computation; unknown labels are ignored."""

import math

import pytest
import torch

from rsretrieve.losses import SupConLoss

EMB = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
LABELS = torch.tensor([3, 3, 5])


def _expected() -> float:
    s = EMB @ EMB.T
    # anchors 0 and 1 have one positive each (each other); anchor 2 has none and is left out
    l0 = -(s[0, 1] - torch.logsumexp(torch.stack([s[0, 1], s[0, 2]]), 0)).item()
    l1 = -(s[1, 0] - torch.logsumexp(torch.stack([s[1, 0], s[1, 2]]), 0)).item()
    return (l0 + l1) / 2


def test_supcon_matches_hand_computation():
    s01, s02, s12 = 0.8, 0.0, 0.6
    by_hand = (-math.log(math.exp(s01) / (math.exp(s01) + math.exp(s02)))
               - math.log(math.exp(s01) / (math.exp(s01) + math.exp(s12)))) / 2
    assert _expected() == pytest.approx(by_hand, abs=1e-6)
    assert SupConLoss()(EMB, LABELS).item() == pytest.approx(by_hand, abs=1e-6)


def test_unknown_labels_are_ignored_entirely():
    extra = torch.cat([EMB, torch.tensor([[0.9, 0.1], [0.7, 0.7]])])
    labels = torch.cat([LABELS, torch.tensor([-1, -1])])
    assert SupConLoss()(extra, labels).item() == pytest.approx(_expected(), abs=1e-6)


def test_no_positive_gives_zero():
    loss = SupConLoss()(EMB, torch.tensor([1, 2, -1]))
    assert loss.item() == 0.0


def test_temperature_divides_similarities():
    t = 0.1
    s01, s02, s12 = 0.8 / t, 0.0, 0.6 / t
    by_hand = (-math.log(math.exp(s01) / (math.exp(s01) + math.exp(s02)))
               - math.log(math.exp(s01) / (math.exp(s01) + math.exp(s12)))) / 2
    assert SupConLoss(temperature=t)(EMB, LABELS).item() == pytest.approx(by_hand, rel=1e-5)
