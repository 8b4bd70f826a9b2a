"""Optical multispectral branch: bands embedded by wavelength (DOFA-style dynamic patch embedding).

A small hypernetwork maps each band's centre wavelength and bandwidth (nm) to that band's 3x3 patch-embedding
kernel, so the weights do not depend on the number or order of bands: one set serves Sentinel-2 (12 bands),
Landsat 8 (7), Landsat 7 (6) or any new optical sensor described by a YAML spec. Bands marked ``valid: false``
are left out of the convolution.

Reference: Xiong et al., "Neural plasticity-inspired multimodal foundation model for Earth observation" (DOFA),
2024; ``torchgeo.models.dofa``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.model.branches import SensorBranch, init_convolutions, register_branch
from rsretrieve.sensors.base import SensorSpec

#: frequencies (cycles per micrometre) of the wavelength code
_WAVELENGTH_FREQS = tuple(0.25 * 2.0**k for k in range(8))
#: frequencies (cycles per unit of log(fwhm / 1 nm)) of the bandwidth code
_FWHM_FREQS = (0.25, 0.5, 1.0, 2.0)
#: width of the per-band code
CODE_DIM = 2 * len(_WAVELENGTH_FREQS) + 2 * len(_FWHM_FREQS) + 1


def band_code(center_nm: Tensor, fwhm_nm: Tensor) -> Tensor:
    """Sine-cosine code of bands.

    Args:
        center_nm: ``(C,)`` centre wavelengths in nm.
        fwhm_nm: ``(C,)`` full widths at half maximum in nm.

    Returns:
        ``(C, CODE_DIM)``: sin/cos of the wavelength in micrometres at 8 frequencies, sin/cos of log(fwhm) at 4,
        and log(wavelength / 1 um).
    """
    um = center_nm.float() / 1000.0  # (C,)
    lw = torch.log(fwhm_nm.float().clamp(min=1.0))  # (C,)
    ang = 2 * math.pi * um[:, None] * torch.tensor(_WAVELENGTH_FREQS)  # (C, 8)
    angw = lw[:, None] * torch.tensor(_FWHM_FREQS)  # (C, 4)
    return torch.cat([ang.sin(), ang.cos(), angw.sin(), angw.cos(), um.log()[:, None]], dim=1)  # (C, CODE_DIM)


def spec_band_code(spec: SensorSpec) -> tuple[Tensor, Tensor]:
    """Indices of the valid bands of ``spec`` and their codes.

    A band without ``fwhm_nm`` gets 5% of its wavelength as bandwidth.

    Returns:
        ``(index (Cv,) long, code (Cv, CODE_DIM))``.
    """
    idx = [i for i, b in enumerate(spec.bands) if b.valid]
    if not idx:
        raise ValueError(f"{spec.name}: no valid band")
    centers = torch.tensor([spec.bands[i].center_nm for i in idx], dtype=torch.float32)
    fwhm = torch.tensor([spec.bands[i].fwhm_nm or 0.05 * spec.bands[i].center_nm for i in idx], dtype=torch.float32)
    return torch.tensor(idx, dtype=torch.long), band_code(centers, fwhm)


class KernelGenerator(nn.Module):
    """Hypernetwork: band codes ``(C, CODE_DIM)`` -> conv kernel ``(out, C, k, k)`` and bias ``(out,)``.

    Each band gets a feature from its own code plus the mean feature of all bands (so a band's kernel knows which
    other bands are there), layer-normalised; the kernel is scaled by ``1 / sqrt(C)`` so activations keep their
    size whatever the number of bands (He initialisation over ``C * k * k`` inputs).
    """

    def __init__(self, out_channels: int, kernel: int = 3, hidden: int = 64):
        super().__init__()
        self.out_channels, self.kernel = out_channels, kernel
        self.band_mlp = nn.Sequential(nn.Linear(CODE_DIM, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.context = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.to_kernel = nn.Linear(hidden, out_channels * kernel * kernel)
        self.to_bias = nn.Linear(hidden, out_channels)
        # He init of the generated kernel: entries of std sqrt(2 / k^2) per band, then / sqrt(C) in forward
        nn.init.normal_(self.to_kernel.weight, std=math.sqrt(2.0) / (kernel * math.sqrt(hidden)))
        nn.init.zeros_(self.to_kernel.bias)
        nn.init.zeros_(self.to_bias.weight)
        nn.init.zeros_(self.to_bias.bias)

    def forward(self, code: Tensor) -> tuple[Tensor, Tensor]:
        f = self.band_mlp(code)  # (C, hidden)
        f = self.norm(F.gelu(f + self.context(f.mean(0, keepdim=True))))  # (C, hidden)
        c = code.shape[0]
        w = self.to_kernel(f).view(c, self.out_channels, self.kernel, self.kernel)  # (C, out, k, k)
        w = w.transpose(0, 1) / math.sqrt(c)  # (out, C, k, k)
        return w, self.to_bias(f.mean(0))  # (out, C, k, k), (out,)


@register_branch("optical")
class OpticalBranch(SensorBranch):
    """Branch of optical multispectral sensors (reflectance bands with centre wavelengths).

    Args:
        spec: the sensor; every band needs ``center_nm``.
        dim: token width ``D``.
        stem_dim: channels of the dynamic patch embedding.
        cells: stem grid positions per tile side.
        tokens: token grid positions per tile side at most.
        hidden: width of the hypernetwork.
    """

    def __init__(self, spec: SensorSpec, dim: int, stem_dim: int = 32, cells: int = 16, tokens: int = 4,
                 hidden: int = 64):
        super().__init__(spec, dim, stem_dim=stem_dim, cells=cells, tokens=tokens)
        index, code = spec_band_code(spec)
        self.register_buffer("band_index", index, persistent=False)
        self.register_buffer("band_code", code, persistent=False)
        self.kernels = KernelGenerator(stem_dim, kernel=3, hidden=hidden)
        init_convolutions(self)

    def stem(self, x: Tensor) -> Tensor:
        x = x.index_select(1, self.band_index)  # (B, Cv, H, W)
        weight, bias = self.kernels(self.band_code)  # (S, Cv, 3, 3), (S,)
        stride = self.stride_for(x.shape[-2], x.shape[-1])
        return F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=stride,
                        padding=self.padding_for(stride))  # (B, S, ~cells, ~cells)
