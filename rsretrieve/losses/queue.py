"""Memory queue of past embeddings (MoCo-style FIFO) with their ground-cell ids and sensors.

The contrastive terms take extra negatives from it: the embeddings of earlier batches, of the sensor on the
candidate side, with entries of the query's own cell left out (:func:`rsretrieve.losses.info_nce.info_nce`).
Entries are stored detached and unit-norm; the caller scales them like the current batch. The state is made of
buffers, so it is saved with a Lightning checkpoint and training resumes with the same queue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MemoryQueue(nn.Module):
    """Fixed-size FIFO of ``(embedding, cell, sensor)`` rows.

    Args:
        size: capacity in rows.
        dim: embedding width ``E``.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size <= 0:
            raise ValueError(f"queue size must be > 0, got {size}")
        self.size = size
        self.register_buffer("emb", torch.zeros(size, dim))
        self.register_buffer("cells", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("sensors", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.count)

    @torch.no_grad()
    def push(self, emb: Tensor, cells: Tensor, sensor: int) -> None:
        """Append a batch (oldest rows are overwritten once full).

        Args:
            emb: ``(N, E)``; stored detached and L2-normalised.
            cells: ``(N,)`` ground-cell ids.
            sensor: index of the sensor the rows come from.
        """
        n = len(emb)
        if n == 0:
            return
        if n > self.size:
            emb, cells, n = emb[-self.size:], cells[-self.size:], self.size
        idx = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size  # (N,)
        self.emb[idx] = F.normalize(emb.detach().to(self.emb.dtype), dim=-1)
        self.cells[idx] = cells.to(self.cells.device)
        self.sensors[idx] = sensor
        self.ptr.copy_((self.ptr + n) % self.size)
        self.count.copy_(torch.clamp(self.count + n, max=self.size))

    def get(self, sensor: int | None = None) -> tuple[Tensor, Tensor]:
        """Stored rows, optionally of one sensor.

        Returns:
            ``(emb (M, E), cells (M,))``, in storage order.
        """
        mask = self.cells >= 0
        if sensor is not None:
            mask &= self.sensors == sensor
        return self.emb[mask], self.cells[mask]
