"""Anti-collapse regulariser: the variance and covariance terms of VICReg (Bardes et al., 2022).

For a batch ``z`` ``(N, E)``:

* variance: ``mean_j max(0, gamma - sqrt(Var(z_j) + eps))``, a hinge that keeps every dimension's standard
  deviation over the batch at least ``gamma`` (no dimension collapses to a constant);
* covariance: ``sum_{i != j} C_ij^2 / E`` with ``C`` the (unbiased) covariance matrix of ``z``, which decorrelates
  dimensions (no collapse to a low-dimensional subspace).

The invariance term of VICReg is not here: the contrastive terms play its role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def variance_term(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """Hinge on the per-dimension standard deviation of ``z`` ``(N, E)``, ``N >= 2``."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (E,)
    return F.relu(gamma - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances of ``z`` ``(N, E)`` divided by ``E``, ``N >= 2``."""
    n, e = z.shape
    zc = z - z.mean(dim=0)  # (N, E)
    cov = zc.T @ zc / (n - 1)  # (E, E)
    off = cov - torch.diag(torch.diag(cov))
    return off.pow(2).sum() / e


class VICRegRegularizer(nn.Module):
    """``var_weight * variance + cov_weight * covariance`` of one batch of embeddings.

    Args:
        var_weight: weight of the variance hinge (VICReg: 25 with invariance at 25; here relative to 1).
        cov_weight: weight of the covariance term.
        gamma: target standard deviation per dimension.
        eps: added to the variance before the square root.
    """

    def __init__(self, var_weight: float = 1.0, cov_weight: float = 1.0, gamma: float = 1.0, eps: float = 1e-4):
        super().__init__()
        self.var_weight, self.cov_weight, self.gamma, self.eps = var_weight, cov_weight, gamma, eps

    def forward(self, emb: Tensor, labels: Tensor | None = None, ref_emb: Tensor | None = None,
                ref_labels: Tensor | None = None) -> Tensor:
        """Regulariser of ``emb`` ``(N, E)`` (and of ``ref_emb`` when given: the mean of both).

        ``labels`` are unused (the signature matches the other losses). Batches with fewer than 2 rows give 0.
        """
        parts = []
        for z in (emb, ref_emb):
            if z is not None and len(z) >= 2:
                parts.append(self.var_weight * variance_term(z, self.gamma, self.eps)
                             + self.cov_weight * covariance_term(z))
        return torch.stack(parts).mean() if parts else emb.sum() * 0.0
