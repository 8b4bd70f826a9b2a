"""Supervised contrastive loss (Khosla et al., 2020), with unknown labels ignored.

Within one sensor's batch, tiles with the same land-cover class are positives. For an anchor ``i`` with positives
``P(i)`` (same label, not ``i`` itself) and candidates ``A(i)`` (every other labelled tile):

    loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )

averaged over anchors with at least one positive (the ``L_out`` form of the paper). Tiles labelled ``-1``
(unknown land cover) are ignored entirely: neither anchors nor candidates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SupConLoss(nn.Module):
    """Supervised contrastive loss, pytorch-metric-learning style ``forward(emb, labels, ref_emb, ref_labels)``.

    Args:
        temperature: divides every similarity (1 when the embeddings carry the temperature already).
        ignore_label: label of tiles to ignore.
    """

    def __init__(self, temperature: float = 1.0, ignore_label: int = -1):
        super().__init__()
        self.temperature, self.ignore_label = temperature, ignore_label

    def forward(self, emb: Tensor, labels: Tensor, ref_emb: Tensor | None = None,
                ref_labels: Tensor | None = None) -> Tensor:
        """Loss of anchors ``emb`` against ``ref_emb`` (the batch itself, self excluded, when ``None``).

        Args:
            emb: ``(N, E)`` anchors.
            labels: ``(N,)`` classes, ``ignore_label`` for unknown.
            ref_emb: ``(M, E)`` candidates or ``None``.
            ref_labels: ``(M,)`` their classes.

        Returns:
            The mean over anchors with a positive; 0 (connected to the graph) when there is none.
        """
        self_ref = ref_emb is None
        if self_ref:
            ref_emb, ref_labels = emb, labels
        elif ref_labels is None:
            raise ValueError("ref_emb needs ref_labels")
        known_q = labels != self.ignore_label  # (N,)
        known_r = ref_labels != self.ignore_label  # (M,)
        logits = emb @ ref_emb.T / self.temperature  # (N, M)
        keep = known_q[:, None] & known_r[None, :]  # (N, M)
        if self_ref:
            keep &= ~torch.eye(len(emb), dtype=torch.bool, device=emb.device)
        pos = keep & (labels[:, None] == ref_labels[None, :])  # (N, M)
        log_prob = logits - logits.masked_fill(~keep, torch.finfo(logits.dtype).min).logsumexp(1, keepdim=True)
        n_pos = pos.sum(1)  # (N,)
        has_pos = n_pos > 0
        if not has_pos.any():
            return emb.sum() * 0.0 + ref_emb.sum() * 0.0
        mean_log_prob = (log_prob * pos).sum(1)[has_pos] / n_pos[has_pos]  # (n,)
        return -mean_log_prob.mean()
