"""SAR branch: backscatter in dB, a stem robust to speckle.

The input is already in the log domain (sigma0 in dB, normalised), where speckle is additive. Channels are placed
in fixed polarisation slots (VV, VH, HH, HV), so a dual-pol VV/VH sensor and an HH/HV sensor share the family
weights; an absent polarisation is a zero slot flagged by a presence channel. Before the patch convolution each
slot is summarised by its local 3x3 mean (a boxcar multi-look that averages speckle out) and local 3x3 standard
deviation (texture, which speckle alone keeps near a constant), as in the statistics of a Lee filter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.model.branches import SensorBranch, init_convolutions, register_branch
from rsretrieve.sensors.base import SensorSpec

#: polarisation slots, in order
POLARIZATIONS = ("VV", "VH", "HH", "HV")


def _local_stats(x: Tensor, size: int = 3) -> tuple[Tensor, Tensor]:
    """Local mean and standard deviation over ``size`` x ``size`` windows, same shape as ``x`` ``(B, C, H, W)``."""
    pad = size // 2
    mean = F.avg_pool2d(x, size, stride=1, padding=pad, count_include_pad=False)  # (B, C, H, W)
    sq = F.avg_pool2d(x * x, size, stride=1, padding=pad, count_include_pad=False)  # (B, C, H, W)
    return mean, (sq - mean * mean).clamp(min=0).add(1e-6).sqrt()


@register_branch("sar")
class SarBranch(SensorBranch):
    """Branch of SAR sensors (one band per polarisation, normalised dB).

    Args:
        spec: the sensor; every band needs ``polarization``.
        dim: token width ``D``.
        stem_dim: channels of the patch convolution.
        cells: stem grid positions per tile side.
        tokens: token grid positions per tile side at most.
        window: side of the speckle-smoothing window in pixels.
    """

    def __init__(self, spec: SensorSpec, dim: int, stem_dim: int = 32, cells: int = 16, tokens: int = 4,
                 window: int = 3):
        super().__init__(spec, dim, stem_dim=stem_dim, cells=cells, tokens=tokens)
        slots = []
        for b in spec.bands:
            if b.polarization not in POLARIZATIONS:
                raise ValueError(f"{spec.name}: band {b.name} has polarisation {b.polarization!r}, "
                                 f"expected one of {POLARIZATIONS}")
            slots.append(POLARIZATIONS.index(b.polarization))
        valid = torch.tensor([b.valid for b in spec.bands])
        present = torch.zeros(len(POLARIZATIONS))
        present[torch.tensor(slots)[valid]] = 1.0
        # the 3n stem channels are [mean x n, std x n, presence flag x n]. Only the mean and std of the slots that
        # receive a valid band vary from tile to tile; a slot without a band is 0, so its mean is 0 and its std
        # sqrt(1e-6) everywhere, and the flags are constant: their share of the convolution is the same for every
        # tile, computed on a (1, 3n, H, W) map of these values
        n = len(POLARIZATIONS)
        used = torch.nonzero(present).flatten().tolist()
        self.register_buffer("valid_bands", torch.nonzero(valid).flatten(), persistent=False)
        self.register_buffer("valid_slots", torch.tensor([used.index(s) for s, ok in zip(slots, valid.tolist()) if ok],
                                                         dtype=torch.long), persistent=False)
        self.register_buffer("varying", torch.tensor(used + [n + u for u in used], dtype=torch.long),
                             persistent=False)
        const = torch.cat([torch.zeros(n), torch.where(present > 0, 0.0, math.sqrt(1e-6)), present])  # (3n,)
        self.register_buffer("constants", const, persistent=False)
        self.window = window
        self.patch = nn.Conv2d(3 * n, stem_dim, kernel_size=3)
        init_convolutions(self)

    def stem(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        slots = x.new_zeros(b, len(self.varying) // 2, h, w)  # (B, P, H, W), the slots that receive a valid band
        slots = slots.index_add(1, self.valid_slots, x[:, self.valid_bands])  # (B, P, H, W)
        mean, std = _local_stats(slots, self.window)  # (B, P, H, W) each
        const = self.constants.to(x.dtype)[None, :, None, None].expand(1, -1, h, w)  # (1, 3n, H, W)
        stride = self.stride_for(h, w)
        pad = self.padding_for(stride)
        varying = F.conv2d(torch.cat([mean, std], dim=1), self.patch.weight[:, self.varying], None, stride=stride,
                           padding=pad)  # (B, S, ~cells, ~cells)
        return varying + F.conv2d(const, self.patch.weight, self.patch.bias, stride=stride,
                                  padding=pad)  # (B, S, ~cells, ~cells)
