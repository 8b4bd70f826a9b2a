"""The joint objective: every term of the cross-sensor training, each behind one flag.

Terms (names as logged):

* ``cross``: symmetric InfoNCE between every pair of sensors present in the batch, positives = same ground cell;
  a cell without some sensor only drops out of the pairs with that sensor. Extra negatives come from the memory
  queue of the candidate sensor (``queue_size > 0``), same-cell entries excluded, once the caller turns the
  queue on (``use_queue``; cross-batch memory only helps once the embedding drifts slowly).
* ``within``: within-sensor discrimination: supervised contrastive over tiles with a land-cover label, and InfoNCE
  between two augmented views for tiles without one (``label == -1``).
* ``vicreg``: VICReg variance + covariance on each sensor's projections ``W h``.
* ``adversarial``: a sensor classifier behind gradient reversal (off by default; fixed weight).

``uncertainty_weighting`` learns the weights of ``cross``, ``within`` and ``vicreg`` (Kendall et al.); otherwise
``weights`` (default 1 each) are used. Similarities are ``logit_scale * cos`` with the learned temperature of the
model's metric, so the objective trains the metric and the embeddings together.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.losses.adversarial import DomainAdversarialLoss
from rsretrieve.losses.info_nce import SymmetricInfoNCE
from rsretrieve.losses.queue import MemoryQueue
from rsretrieve.losses.supcon import SupConLoss
from rsretrieve.losses.uncertainty import UncertaintyWeighting
from rsretrieve.losses.vicreg import VICRegRegularizer

#: terms whose weights uncertainty weighting learns
WEIGHTED_TERMS = ("cross", "within", "vicreg")


@dataclass
class SensorEmbeddings:
    """One sensor's share of a batch: the tiles where the sensor is present.

    Attributes:
        z: ``(n, E)`` projections ``W h`` (not normalised).
        cells: ``(n,)`` ground-cell ids.
        labels: ``(n,)`` land-cover classes, ``-1`` for unknown.
        view: ``(m, E)`` projections of a second augmented view of some tiles, or ``None``.
        view_cells: ``(m,)`` cell ids of those tiles.
    """

    z: Tensor
    cells: Tensor
    labels: Tensor
    view: Tensor | None = None
    view_cells: Tensor | None = None


class JointObjective(nn.Module):
    """All terms of the training objective.

    Args:
        sensors: sensor names (their order gives the queue's and the classifier's sensor indices).
        embed_dim: width ``E`` of the projections.
        cross_sensor: use the ``cross`` term.
        within_sensor: use the ``within`` term.
        vicreg: use the ``vicreg`` term.
        adversarial: use the ``adversarial`` term.
        uncertainty_weighting: learn the weights of the weighted terms.
        queue_size: rows of the memory queue (0: no queue).
        weights: fixed weights by term name (default 1; the adversarial weight applies in both modes).
        vicreg_gamma: target standard deviation of the variance hinge.
    """

    def __init__(self, sensors: list[str], embed_dim: int = 128, cross_sensor: bool = True,
                 within_sensor: bool = True, vicreg: bool = True, adversarial: bool = False,
                 uncertainty_weighting: bool = True, queue_size: int = 0, weights: dict[str, float] | None = None,
                 vicreg_gamma: float = 1.0):
        super().__init__()
        self.sensors = list(sensors)
        self.flags = {"cross": cross_sensor, "within": within_sensor, "vicreg": vicreg, "adversarial": adversarial}
        if not any(self.flags.values()):
            raise ValueError("every term of the objective is switched off")
        self.fixed_weights = {"cross": 1.0, "within": 1.0, "vicreg": 1.0, "adversarial": 0.1, **(weights or {})}
        self.info_nce = SymmetricInfoNCE(temperature=1.0)
        self.supcon = SupConLoss(temperature=1.0)
        self.vicreg = VICRegRegularizer(gamma=vicreg_gamma)
        self.adversarial = DomainAdversarialLoss(embed_dim, len(self.sensors)) if adversarial else None
        self.queue = MemoryQueue(queue_size, embed_dim) if queue_size > 0 else None
        weighted = [t for t in WEIGHTED_TERMS if self.flags[t]]
        self.weighting = UncertaintyWeighting(weighted) if uncertainty_weighting and weighted else None

    def _queue(self, sensor: str, current: Tensor, scale: Tensor) -> tuple[Tensor, Tensor] | None:
        """Queued vectors of ``sensor``, drift-compensated and scaled like the batch, with their cells.

        The queue holds unit vectors of earlier batches, made by an earlier state of the model. Their common part
        (the queue mean) is replaced by the mean of the sensor's current batch ``current`` (unit vectors, detached),
        a first-order correction of the drift; without it every query is pushed away from the same stale mean and
        the embedding collapses.
        """
        if self.queue is None or len(self.queue) == 0:
            return None
        emb, cells = self.queue.get(self.sensors.index(sensor))
        if not len(emb):
            return None
        emb = F.normalize(emb - emb.mean(0) + current.detach().mean(0), dim=-1)
        return emb * scale.sqrt(), cells

    def _cross(self, e: dict[str, Tensor], parts: dict[str, SensorEmbeddings], scale: Tensor,
               use_queue: bool) -> Tensor | None:
        losses = []
        for a, b in combinations(sorted(e), 2):
            if not torch.isin(parts[a].cells, parts[b].cells).any():
                continue
            qa, qb = (None, None)
            if use_queue:
                qa = self._queue(a, F.normalize(parts[a].z, dim=-1), scale)
                qb = self._queue(b, F.normalize(parts[b].z, dim=-1), scale)
            losses.append(self.info_nce(e[a], parts[a].cells, e[b], parts[b].cells, ref_queue=qb, emb_queue=qa))
        return torch.stack(losses).mean() if losses else None

    def _within(self, e: dict[str, Tensor], parts: dict[str, SensorEmbeddings], scale: Tensor) -> Tensor | None:
        losses = []
        for s, p in parts.items():
            known = p.labels[p.labels >= 0]
            if len(known) >= 2 and torch.unique(known, return_counts=True)[1].max() >= 2:
                losses.append(self.supcon(e[s], p.labels))  # some class has two labelled tiles
            if p.view is not None and len(p.view):
                v = F.normalize(p.view, dim=-1) * scale.sqrt()
                losses.append(self.info_nce(v, p.view_cells, e[s], p.cells))
        return torch.stack(losses).mean() if losses else None

    def forward(self, parts: dict[str, SensorEmbeddings], logit_scale: Tensor,
                use_queue: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """Total loss of a batch.

        Args:
            parts: per sensor present in the batch (sensors with no tile may be left out).
            logit_scale: ``1 / tau`` of the model's metric (0-d, trainable).
            use_queue: take extra negatives from the memory queue (the task turns it on after a warm-up: early
                in training the queued embeddings are stale, all alike, and pushing away from them collapses
                the embedding).

        Returns:
            ``(total, terms)``: the weighted total and each computed term (unweighted, for logging).
        """
        parts = {s: p for s, p in parts.items() if len(p.z)}
        e = {s: F.normalize(p.z, dim=-1) * logit_scale.sqrt() for s, p in parts.items()}  # (n_s, E), folded
        terms: dict[str, Tensor] = {}
        if self.flags["cross"] and (t := self._cross(e, parts, logit_scale, use_queue)) is not None:
            terms["cross"] = t
        if self.flags["within"] and (t := self._within(e, parts, logit_scale)) is not None:
            terms["within"] = t
        if self.flags["vicreg"] and any(len(p.z) >= 2 for p in parts.values()):
            terms["vicreg"] = torch.stack([self.vicreg(p.z) for p in parts.values()]).mean()
        if self.adversarial is not None and len(parts) >= 2:
            emb = torch.cat([F.normalize(p.z, dim=-1) for p in parts.values()])
            ids = torch.cat([torch.full((len(p.z),), self.sensors.index(s), device=emb.device)
                             for s, p in parts.items()])
            terms["adversarial"] = self.adversarial(emb, ids)
        return self._combine(terms, parts, logit_scale), terms

    def _combine(self, terms: dict[str, Tensor], parts: dict[str, SensorEmbeddings], scale: Tensor) -> Tensor:
        total = [scale * 0.0] + [p.z.sum() * 0.0 for p in parts.values()]  # keeps the graph when no term applies
        learned = {n: t for n, t in terms.items() if self.weighting is not None and n in self.weighting.names}
        if learned:
            total.append(self.weighting(learned))
        total += [self.fixed_weights[n] * t for n, t in terms.items() if n not in learned]
        return torch.stack(total).sum()

    def term_weights(self) -> dict[str, float]:
        """Current effective weight of each active term (for logging)."""
        out = {n: self.fixed_weights[n] for n, on in self.flags.items() if on}
        return out | (self.weighting.weights() if self.weighting is not None else {})

    @torch.no_grad()
    def enqueue(self, parts: dict[str, SensorEmbeddings]) -> None:
        """Push the batch's projections into the memory queue (no-op without a queue)."""
        if self.queue is None:
            return
        for s, p in parts.items():
            if s in self.sensors and len(p.z):
                self.queue.push(p.z, p.cells, self.sensors.index(s))
