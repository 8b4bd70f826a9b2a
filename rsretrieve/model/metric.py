"""Learned cross-sensor metric: a linear map and a temperature, folded into the exported embedding.

The similarity of two head outputs ``h_a``, ``h_b`` (``(D,)`` each) is

    s(a, b) = <W h_a, W h_b> / (|W h_a| |W h_b|) / tau

with ``W`` a learned ``E x D`` matrix (a Mahalanobis metric ``W^T W`` of rank ``E``) and ``tau`` a learned
temperature. The exported embedding is ``e(h) = W h / |W h|`` (unit norm, ``E`` = 128): FAISS inner product on
exported vectors is the cosine, and the learned similarity is exactly ``s(a, b) = logit_scale * <e_a, e_b>`` with
``logit_scale = 1 / tau``, one positive constant per model, so every ranking (and every top-k) of the index is the
ranking of the learned similarity.

Decision: exported vectors are unit-norm and the constant stays out of them, so scores are cosines in
``[-1, 1]`` whatever ``tau`` a model learned, and two model versions' thresholds stay comparable. A caller that wants
the scores themselves gets them from ``export(h, fold_temperature=True)``, which multiplies by ``sqrt(1 / tau)`` so
that the inner product equals ``s(a, b)`` exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LearnedMetric(nn.Module):
    """Linear map ``W`` (``dim`` -> ``embed_dim``) and learned temperature.

    Args:
        dim: width ``D`` of the head output.
        embed_dim: width ``E`` of the exported embedding.
        temperature: initial ``tau``.
        max_logit_scale: upper bound of ``1 / tau`` (CLIP's 100), for stability.
        learn_temperature: whether ``tau`` is trained.
    """

    def __init__(self, dim: int, embed_dim: int = 128, temperature: float = 0.07, max_logit_scale: float = 100.0,
                 learn_temperature: bool = True):
        super().__init__()
        if not 0 < temperature:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.linear = nn.Linear(dim, embed_dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)),
                                            requires_grad=learn_temperature)
        self.max_log_logit_scale = math.log(max_logit_scale)

    @property
    def logit_scale(self) -> Tensor:
        """``1 / tau``, a 0-d tensor (clamped to ``max_logit_scale``)."""
        return self.log_logit_scale.clamp(max=self.max_log_logit_scale).exp()

    @property
    def temperature(self) -> float:
        """Current ``tau``."""
        return float(1.0 / self.logit_scale.detach())

    def project(self, h: Tensor) -> Tensor:
        """``W h``: ``(B, D)`` -> ``(B, E)``, not normalised."""
        return self.linear(h)

    def export(self, h: Tensor, fold_temperature: bool = False) -> Tensor:
        """Exported embedding of head outputs.

        Args:
            h: ``(B, D)``.
            fold_temperature: multiply by ``sqrt(1 / tau)`` so that inner products equal :meth:`similarity`.

        Returns:
            ``(B, E)``: unit vectors ``W h / |W h|`` (norm ``sqrt(1 / tau)`` when folding).
        """
        e = F.normalize(self.project(h), dim=-1)
        return e * self.logit_scale.sqrt() if fold_temperature else e

    def similarity(self, h_a: Tensor, h_b: Tensor) -> Tensor:
        """Learned similarity ``s(a, b)`` of every pair: ``(Na, D)``, ``(Nb, D)`` -> ``(Na, Nb)``."""
        za, zb = self.project(h_a), self.project(h_b)  # (Na, E), (Nb, E)
        cos = (za @ zb.T) / (za.norm(dim=-1)[:, None] * zb.norm(dim=-1)[None, :])  # (Na, Nb)
        return cos * self.logit_scale
