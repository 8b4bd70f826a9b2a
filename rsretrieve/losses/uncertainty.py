"""Learned weights between loss terms: homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, 2018).

Each term ``k`` gets a learned log-variance ``s_k`` and the total is

    L = sum_k 0.5 * exp(-s_k) * L_k + 0.5 * s_k

so a term whose loss stays large is down-weighted, and the ``+ s_k`` part keeps the weights from going to 0. At
``s_k = 0`` (the start) every term has weight 0.5. ``s_k`` is clamped to ``[-min_log_var, max_log_var]`` so a term
that reaches 0 cannot drive its weight to infinity.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class UncertaintyWeighting(nn.Module):
    """Learned log-variances of named loss terms.

    Args:
        names: the terms, e.g. ``["cross", "within", "vicreg"]``.
        max_log_var: bound of ``|s_k|``.
    """

    def __init__(self, names: list[str], max_log_var: float = 6.0):
        super().__init__()
        if not names:
            raise ValueError("uncertainty weighting needs at least one term")
        self.names = list(names)
        self.max_log_var = max_log_var
        self.log_vars = nn.Parameter(torch.zeros(len(names)))

    def log_var(self, name: str) -> Tensor:
        """Clamped ``s_k`` of term ``name``."""
        return self.log_vars[self.names.index(name)].clamp(-self.max_log_var, self.max_log_var)

    def weights(self) -> dict[str, float]:
        """Current effective weights ``0.5 * exp(-s_k)`` (for logging)."""
        return {n: float(0.5 * torch.exp(-self.log_var(n).detach())) for n in self.names}

    def forward(self, losses: dict[str, Tensor]) -> Tensor:
        """Weighted total of the terms present in ``losses`` (a subset of ``names``; others are ignored)."""
        unknown = set(losses) - set(self.names)
        if unknown:
            raise KeyError(f"no learned weight for {sorted(unknown)}; terms: {self.names}")
        total = [0.5 * torch.exp(-self.log_var(n)) * loss + 0.5 * self.log_var(n) for n, loss in losses.items()]
        return torch.stack(total).sum()
