"""VICReg variance/covariance, uncertainty weighting and gradient reversal against hand computations."""

import math

import pytest
import torch

from rsretrieve.losses import (
    DomainAdversarialLoss,
    UncertaintyWeighting,
    VICRegRegularizer,
    covariance_term,
    reverse_gradient,
    variance_term,
)

# two samples, two dimensions: dim 0 varies (values 0 and 2), dim 1 is constant (collapsed)
Z = torch.tensor([[0.0, 1.0], [2.0, 1.0]])


def test_variance_hinge_by_hand():
    # Var (unbiased) = [2, 0]; std = [sqrt(2 + eps), sqrt(eps)]; hinge at gamma=1: [0, 1 - sqrt(eps)]
    eps = 1e-4
    expected = (0.0 + (1 - math.sqrt(eps))) / 2
    assert variance_term(Z, gamma=1.0, eps=eps).item() == pytest.approx(expected, abs=1e-6)


def test_covariance_by_hand():
    # z = [[0, 0], [2, 2]]: Var = 2 each, Cov = 2; off-diagonal sum of squares = 2 * 2^2 = 8; / E = 4
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    assert covariance_term(z).item() == pytest.approx(4.0)
    assert covariance_term(Z).item() == pytest.approx(0.0)


def test_vicreg_weights_and_small_batches():
    reg = VICRegRegularizer(var_weight=2.0, cov_weight=3.0, eps=1e-4)
    z = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    # std sqrt(2) > gamma = 1 in both dimensions: no hinge, only the covariance term (4, see above)
    assert reg(z).item() == pytest.approx(2.0 * 0.0 + 3.0 * 4.0, abs=1e-5)
    assert reg(z[:1]).item() == 0.0  # one sample: no statistics, no loss


def test_uncertainty_weighting_by_hand():
    w = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.0, math.log(4.0)]))
    total = w({"a": torch.tensor(2.0), "b": torch.tensor(0.5)})
    expected = 0.5 * 1.0 * 2.0 + 0.5 * 0.0 + 0.5 * 0.25 * 0.5 + 0.5 * math.log(4.0)
    assert total.item() == pytest.approx(expected, abs=1e-6)
    assert w.weights() == pytest.approx({"a": 0.5, "b": 0.125})


def test_uncertainty_weighting_learns_to_downweight_a_large_term():
    w = UncertaintyWeighting(["small", "large"])
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        w({"small": torch.tensor(0.1), "large": torch.tensor(10.0)}).backward()
        opt.step()
    # the optimum is s = log(L): weights 0.5 / L
    assert w.weights()["large"] < w.weights()["small"]


def test_gradient_reversal_negates_and_scales():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = reverse_gradient(x, scale=0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 4.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.5, -2.0]))


def test_domain_adversarial_loss_is_cross_entropy_of_the_classifier():
    torch.manual_seed(0)
    adv = DomainAdversarialLoss(dim=4, num_domains=3)
    emb, ids = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    expected = torch.nn.functional.cross_entropy(adv.classifier(emb), ids)
    assert adv(emb, ids).item() == pytest.approx(expected.item(), abs=1e-6)
