"""Hyperspectral branch: spectra on a fixed wavelength grid, a 1-D spectral convolution, then spatial patching.

Each pixel's spectrum (the valid bands only: ~200 of EnMAP's 224 once the water-vapour bands are dropped) is
resampled with triangular weights onto a fixed grid of ``grid`` wavelengths (400-2500 nm, about 33 nm apart by
default, so every sample averages a few EnMAP bands; samples inside the water-vapour gaps stay 0). On that grid a
1-D convolution along the spectrum (stride 2, ``K`` channels) finds absorption features and slopes; a per-pixel
linear layer mixes them into ``hidden`` channels, and a strided 3x3 patch convolution builds the stem grid. The
grid makes every weight independent of the sensor's band count, so EnMAP, PRISMA or DESIS share the family
weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.model.branches import SensorBranch, init_convolutions, register_branch
from rsretrieve.sensors.base import SensorSpec


def wavelength_bins(center_nm: Tensor, bins: int, lo_nm: float = 400.0, hi_nm: float = 2500.0) -> Tensor:
    """Triangular resampling matrix from bands to a fixed wavelength grid.

    Args:
        center_nm: ``(L,)`` wavelengths in nm of the inputs (clipped to ``[lo_nm, hi_nm]``).
        bins: number of bin centres, evenly spaced from ``lo_nm`` to ``hi_nm``.
        lo_nm: first bin centre in nm.
        hi_nm: last bin centre in nm.

    Returns:
        ``(L, bins)``; column ``j`` holds weights ``max(0, 1 - |wl - c_j| / spacing)`` normalised to sum 1 (a bin
        that no band reaches stays all zero).
    """
    centres = torch.linspace(lo_nm, hi_nm, bins)  # (bins,)
    spacing = (hi_nm - lo_nm) / max(bins - 1, 1)
    wl = center_nm.float().clamp(lo_nm, hi_nm)  # (L,)
    w = (1 - (wl[:, None] - centres[None, :]).abs() / spacing).clamp(min=0)  # (L, bins)
    return w / w.sum(0, keepdim=True).clamp(min=1e-12)


def conv1d_matrix(weight: Tensor, length: int, stride: int) -> Tensor:
    """A 1-D convolution over ``length`` samples ('same' padding) written as a dense matrix.

    Args:
        weight: ``(K, 1, k)`` kernel of ``nn.Conv1d(1, K, k)``.
        length: input length ``G``.
        stride: convolution stride.

    Returns:
        ``(G, K * L)`` with ``L = ceil(G / stride)``: ``spectra @ M`` equals ``conv1d(spectra, weight)`` flattened
        channel-major. Per-pixel spectra are many short sequences with one channel, for which a matmul is several
        times faster on CPU than ``conv1d``.
    """
    k = weight.shape[-1]
    eye = torch.eye(length, dtype=weight.dtype, device=weight.device)[:, None, :]  # (G, 1, G), one impulse per row
    response = F.conv1d(eye, weight, stride=stride, padding=k // 2)  # (G, K, L)
    return response.reshape(length, -1)  # (G, K*L)


@register_branch("hyperspectral")
class HyperspectralBranch(SensorBranch):
    """Branch of imaging spectrometers (many narrow reflectance bands, some flagged invalid).

    Args:
        spec: the sensor; every band needs ``center_nm``.
        dim: token width ``D``.
        stem_dim: channels of the patch convolution.
        cells: stem grid positions per tile side.
        tokens: token grid positions per tile side at most.
        grid: samples of the fixed wavelength grid (400-2500 nm; 64: about 33 nm apart). The earlier default of 96
            samples and 8 channels took twice the time (99 against 45 ms forward + backward for 64 EnMAP tiles on
            2 cores), and EnMAP was the most expensive branch of a training step.
        spectral_channels: output channels ``K`` of the 1-D spectral convolution.
        kernel: length of the spectral kernel, in grid samples.
        hidden: channels after the per-pixel spectral mixing.
    """

    def __init__(self, spec: SensorSpec, dim: int, stem_dim: int = 32, cells: int = 16, tokens: int = 4,
                 grid: int = 64, spectral_channels: int = 6, kernel: int = 5, hidden: int = 32):
        super().__init__(spec, dim, stem_dim=stem_dim, cells=cells, tokens=tokens)
        valid = [i for i, b in enumerate(spec.bands) if b.valid]
        if not valid:
            raise ValueError(f"{spec.name}: no valid band")
        if kernel % 2 == 0:
            raise ValueError(f"spectral kernel must be odd, got {kernel}")
        wl = torch.tensor([spec.bands[i].center_nm for i in valid], dtype=torch.float32)
        resample = torch.zeros(spec.num_bands, grid)  # (C, G), invalid bands get no weight
        resample[torch.tensor(valid)] = wavelength_bins(wl, grid)
        self.register_buffer("resample", resample.T.contiguous()[:, :, None, None], persistent=False)  # (G, C, 1, 1)
        self.grid, self.stride = grid, 2
        self.spectral = nn.Conv1d(1, spectral_channels, kernel)
        out_len = -(-grid // self.stride)
        self.mix = nn.Conv2d(spectral_channels * out_len, hidden, kernel_size=1)
        self.patch = nn.Conv2d(hidden, stem_dim, kernel_size=3)
        init_convolutions(self)

    def stem(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        spectra = F.conv2d(x, self.resample.to(x.dtype))  # (B, G, H, W), per-pixel resampling as a 1x1 conv
        conv = conv1d_matrix(self.spectral.weight, self.grid, self.stride)  # (G, K*L)
        bias = self.spectral.bias.repeat_interleave(conv.shape[1] // self.spectral.out_channels)  # (K*L,)
        f = F.gelu(F.conv2d(spectra, conv.T[:, :, None, None], bias))  # (B, K*L, H, W)
        f = F.gelu(self.mix(f))  # (B, hidden, H, W)
        stride = self.stride_for(h, w)
        return F.conv2d(f, self.patch.weight, self.patch.bias, stride=stride,
                        padding=self.padding_for(stride))  # (B, S, ~cells, ~cells)
