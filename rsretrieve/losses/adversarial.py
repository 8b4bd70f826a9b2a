"""Optional domain-adversarial term: a sensor classifier behind a gradient reversal layer (Ganin et al., 2016).

The classifier learns to tell which sensor an embedding came from; the reversed gradient pushes the encoder to make
that impossible, i.e. towards sensor-invariant embeddings. The loss value is the classifier's cross-entropy, so a
falling value means the classifier is winning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward."""
    return _ReverseGrad.apply(x, scale)


class GradientReversal(nn.Module):
    """Module form of :func:`reverse_gradient`.

    Args:
        scale: factor ``lambda`` of the reversed gradient.
    """

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return reverse_gradient(x, self.scale)


class DomainAdversarialLoss(nn.Module):
    """Cross-entropy of a sensor classifier on gradient-reversed embeddings.

    Args:
        dim: embedding width ``E``.
        num_domains: number of sensors.
        hidden: width of the classifier's hidden layer.
        scale: factor ``lambda`` of the reversed gradient.
    """

    def __init__(self, dim: int, num_domains: int, hidden: int = 64, scale: float = 1.0):
        super().__init__()
        self.reverse = GradientReversal(scale)
        self.classifier = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_domains))

    def forward(self, emb: Tensor, labels: Tensor, ref_emb: Tensor | None = None,
                ref_labels: Tensor | None = None) -> Tensor:
        """Loss of ``emb`` ``(N, E)`` with sensor indices ``labels`` ``(N,)`` (plus ``ref_emb``/``ref_labels``)."""
        if ref_emb is not None:
            if ref_labels is None:
                raise ValueError("ref_emb needs ref_labels")
            emb, labels = torch.cat([emb, ref_emb]), torch.cat([labels, ref_labels])
        return F.cross_entropy(self.classifier(self.reverse(emb)), labels)
