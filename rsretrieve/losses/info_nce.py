"""InfoNCE with label-defined positives, optional queue negatives, and its symmetric cross-sensor form.

For a query ``i`` with similarity ``s_ij = <e_i, r_j> / temperature`` to every candidate ``j`` (the reference batch
plus extra negatives), and positives ``P(i) = {j : ref_labels[j] == labels[i]}``:

    loss_i = -log( sum_{j in P(i)} exp(s_ij) / sum_j exp(s_ij) )

averaged over the queries that have at least one positive (queries without one are skipped: a cell seen by only one
sensor is normal, never an error). With one positive per query this is the usual InfoNCE / NT-Xent. Extra
negatives (a memory queue of past embeddings, :mod:`rsretrieve.losses.queue`) whose label equals the query's
are dropped, never used as negatives: the same ground is not a negative.

Labels are ground-cell ids here. Embeddings are used as given (no normalisation): pass unit vectors and a
temperature, or vectors that carry the temperature already (``LearnedMetric.export(h, fold_temperature=True)``)
with ``temperature=1``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def info_nce(emb: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor, neg_emb: Tensor | None = None,
             neg_labels: Tensor | None = None, temperature: float = 1.0,
             exclude_self: bool = False) -> tuple[Tensor, int]:
    """Multi-positive InfoNCE of queries ``emb`` against candidates ``ref_emb`` (+ negatives ``neg_emb``).

    Args:
        emb: ``(Nq, E)`` query embeddings.
        labels: ``(Nq,)`` query labels.
        ref_emb: ``(Nr, E)`` candidate embeddings.
        ref_labels: ``(Nr,)`` candidate labels; equal labels are positives.
        neg_emb: ``(Nn, E)`` extra candidates, negatives only, or ``None``.
        neg_labels: ``(Nn,)`` their labels; entries with the query's label are left out.
        temperature: divides every similarity.
        exclude_self: leave the diagonal out (``ref_emb`` is ``emb``).

    Returns:
        ``(loss, n)``: the mean over the ``n`` queries that have a positive (``0`` connected to the graph when
        ``n == 0``) and ``n``.
    """
    logits = emb @ ref_emb.T / temperature  # (Nq, Nr)
    pos = labels[:, None] == ref_labels[None, :]  # (Nq, Nr)
    keep = torch.ones_like(pos)
    if exclude_self:
        eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
        pos, keep = pos & ~eye, keep & ~eye
    if neg_emb is not None and len(neg_emb):
        if neg_labels is None:
            raise ValueError("neg_emb needs neg_labels")
        logits = torch.cat([logits, emb @ neg_emb.T / temperature], dim=1)  # (Nq, Nr + Nn)
        pos = torch.cat([pos, torch.zeros(len(emb), len(neg_emb), dtype=torch.bool, device=emb.device)], dim=1)
        keep = torch.cat([keep, labels[:, None] != neg_labels[None, :]], dim=1)  # (Nq, Nr + Nn)
    neg_inf = torch.finfo(logits.dtype).min
    log_denominator = logits.masked_fill(~keep, neg_inf).logsumexp(dim=1)  # (Nq,)
    log_numerator = logits.masked_fill(~pos, neg_inf).logsumexp(dim=1)  # (Nq,)
    has_pos = pos.any(dim=1)
    n = int(has_pos.sum())
    if n == 0:
        return emb.sum() * 0.0 + ref_emb.sum() * 0.0, 0
    return (log_denominator - log_numerator)[has_pos].mean(), n


class InfoNCE(nn.Module):
    """One-directional InfoNCE, pytorch-metric-learning style.

    ``forward(emb, labels)`` compares the batch with itself (self excluded); ``forward(emb, labels, ref_emb,
    ref_labels)`` compares queries of one sensor with candidates of another.

    Args:
        temperature: divides every similarity.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, emb: Tensor, labels: Tensor, ref_emb: Tensor | None = None, ref_labels: Tensor | None = None,
                neg_emb: Tensor | None = None, neg_labels: Tensor | None = None) -> Tensor:
        if ref_emb is None:
            return info_nce(emb, labels, emb, labels, neg_emb, neg_labels, self.temperature, exclude_self=True)[0]
        if ref_labels is None:
            raise ValueError("ref_emb needs ref_labels")
        return info_nce(emb, labels, ref_emb, ref_labels, neg_emb, neg_labels, self.temperature)[0]


class SymmetricInfoNCE(nn.Module):
    """Symmetric InfoNCE between two sensors: the mean of the loss of ``emb -> ref_emb`` and ``ref_emb -> emb``.

    Each direction is averaged over its queries that have a positive; a direction without any is left out.

    Args:
        temperature: divides every similarity.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, emb: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor,
                ref_queue: tuple[Tensor, Tensor] | None = None,
                emb_queue: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Loss of two sensors' batches.

        Args:
            emb: ``(Na, E)`` embeddings of sensor A.
            labels: ``(Na,)`` cell ids of A.
            ref_emb: ``(Nb, E)`` embeddings of sensor B.
            ref_labels: ``(Nb,)`` cell ids of B.
            ref_queue: ``(emb (Nq, E), labels (Nq,))`` past embeddings of B: extra negatives for A's queries.
            emb_queue: past embeddings of A: extra negatives for B's queries.
        """
        a_to_b, na = info_nce(emb, labels, ref_emb, ref_labels, *(ref_queue or (None, None)),
                              temperature=self.temperature)
        b_to_a, nb = info_nce(ref_emb, ref_labels, emb, labels, *(emb_queue or (None, None)),
                              temperature=self.temperature)
        parts = [loss for loss, n in ((a_to_b, na), (b_to_a, nb)) if n]
        return torch.stack(parts).mean() if parts else a_to_b
