"""Sensor branches: one per sensor, chosen by the sensor's family, ``forward_features(x) -> tokens``.

A branch turns a normalised tile ``(B, C, H, W)`` (``(physical - mean) / std`` per band, nodata and invalid bands
set to 0, the sensor's full band order) into tokens ``(B, N, D)``. It never pools to one vector: only the shared
head does (timm style). Every branch has the same three stages:

1. a family **stem** (``optical.py``, ``sar.py``, ``hyperspectral.py``) that maps the bands to ``stem_dim``
   channels on a grid of about ``cells`` x ``cells`` positions per tile, whatever the tile's pixel size
   (480 m tiles: 48 px at 10 m use stride 3, 16 px at 30 m use stride 1, so both land on 30 m cells);
2. a **spatial stage**: two stride-2 3x3 convolutions to ``D`` channels (a 4 x 4 token grid of 120 m on a 480 m
   tile) and, for large inputs, an adaptive average pool to at most ``tokens`` x ``tokens``, plus a 2-D sine-cosine
   position code on tile-relative coordinates (so a token covers the same ground in every sensor);
3. a per-sensor **adapter**: a LayerNorm with its own affine parameters and a learned sensor embedding.

The stem and the spatial stage have the same parameter shapes for every sensor of a family (they are
band-agnostic), so a new sensor of a known family starts from an existing sensor's weights.

Branch classes are registered by family (``optical``) or, to override one sensor, by sensor name::

    @register_branch("optical")
    class OpticalBranch(SensorBranch): ...

    branch = build_branch(get_sensor("landsat8"), dim=64)
    tokens = branch.forward_features(x)   # (B, N, 64)
"""

from __future__ import annotations

import abc
import importlib
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.sensors.base import SensorSpec

log = logging.getLogger(__name__)

_BRANCHES: dict[str, type[SensorBranch]] = {}
_FAMILY_MODULES = ("rsretrieve.model.optical", "rsretrieve.model.sar", "rsretrieve.model.hyperspectral")

B = TypeVar("B", bound="type[SensorBranch]")


def register_branch(key: str) -> Callable[[B], B]:
    """Class decorator registering a branch class for a family (``"optical"``) or one sensor (``"sentinel1"``).

    Raises:
        ValueError: if ``key`` is registered already.
    """

    def _decorate(cls: B) -> B:
        if key in _BRANCHES:
            raise ValueError(f"branch {key!r} is registered twice: {_BRANCHES[key].__name__} and {cls.__name__}")
        _BRANCHES[key] = cls
        return cls

    return _decorate


def _import_families() -> None:
    for module in _FAMILY_MODULES:
        importlib.import_module(module)


def branch_class(spec: SensorSpec) -> type[SensorBranch]:
    """The branch class for ``spec``: one registered under its name, else under its family.

    Raises:
        KeyError: if neither is registered.
    """
    _import_families()
    cls = _BRANCHES.get(spec.name) or _BRANCHES.get(spec.family)
    if cls is None:
        raise KeyError(f"no branch for sensor {spec.name!r} of family {spec.family!r}; known: {sorted(_BRANCHES)}")
    return cls


def build_branch(spec: SensorSpec, dim: int, **kwargs: Any) -> SensorBranch:
    """Build the branch of ``spec`` producing tokens of width ``dim`` (``kwargs`` go to the branch class)."""
    return branch_class(spec)(spec, dim, **kwargs)


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> Tensor:
    """2-D sine-cosine position code of an ``h`` x ``w`` token grid on tile-relative coordinates.

    Args:
        h: rows of the grid.
        w: columns of the grid.
        dim: code width, a multiple of 4.
        device: where to build it.

    Returns:
        ``(h * w, dim)``, row-major like ``flatten(2)``; cell centres in ``[0, 1]`` so that grids of different
        sizes covering the same tile agree on the ground.
    """
    if dim % 4:
        raise ValueError(f"position code width must be a multiple of 4, got {dim}")
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h  # (h,)
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w  # (w,)
    freqs = math.pi * 2.0 ** torch.linspace(0, 5, dim // 4, device=device)  # (dim/4,), 1/2 to 16 periods a tile
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    ang_y = yy.reshape(-1, 1) * freqs  # (h*w, dim/4)
    ang_x = xx.reshape(-1, 1) * freqs  # (h*w, dim/4)
    return torch.cat([ang_y.sin(), ang_y.cos(), ang_x.sin(), ang_x.cos()], dim=1)  # (h*w, dim)


class _SpatialStage(nn.Module):
    """Stem features ``(B, S, h, w)`` -> token map ``(B, D, h/4, w/4)`` (or ``h/2``), at most ``tokens`` a side.

    Two 3x3 convolutions. With ``tokens <= cells / 4`` both have stride 2: on a 16 x 16 stem grid (30 m cells of a
    480 m tile) each token covers 120 m and sees 15 stem cells across, enough context for the head to start from
    (mean-pooled 60 m tokens of one convolution learned several times slower in the toy correspondence test). A finer
    token grid (``tokens = 8``: 60 m tokens on a 480 m tile) keeps the second convolution at stride 1, so its tokens
    still see 7 stem cells across.
    """

    def __init__(self, stem_dim: int, dim: int, tokens: int, cells: int):
        super().__init__()
        self.tokens = tokens
        self.conv1 = nn.Conv2d(stem_dim, dim, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, stride=2 if 4 * tokens <= cells else 1, padding=1)
        self.mix = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, f: Tensor) -> Tensor:
        f = self.conv1(F.gelu(f))  # (B, D, ceil(h/2), ceil(w/2))
        f = self.conv2(F.gelu(f))  # (B, D, ceil(h/4), ceil(w/4)), or (B, D, ceil(h/2), ceil(w/2)) at stride 1
        if f.shape[-2] > self.tokens or f.shape[-1] > self.tokens:
            f = F.adaptive_avg_pool2d(f, (min(f.shape[-2], self.tokens), min(f.shape[-1], self.tokens)))
        return self.mix(F.gelu(f))  # (B, D, h', w')


class _SensorAdapter(nn.Module):
    """Per-sensor part of a branch: LayerNorm with its own affine and a learned sensor embedding.

    The LayerNorm comes before the position code is added, so that the tile's content, not the position, dominates
    the tokens at initialisation.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.sensor_embedding = nn.Parameter(torch.zeros(dim))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.norm(tokens) + self.sensor_embedding  # (B, N, D)


def init_convolutions(module: nn.Module) -> None:
    """He-normal weights (fan in) and zero biases for every convolution in ``module``.

    Zero biases keep a constant offset from swamping the differences between tiles at initialisation.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SensorBranch(nn.Module, abc.ABC):
    """Base class of the branches: a family stem, the spatial stage, the sensor adapter.

    Subclasses implement :meth:`stem` and call :func:`init_convolutions` on themselves at the end of their
    ``__init__``. The position code is added after the adapter's LayerNorm, scaled by a learned factor that starts at
    ``0.1``. Buffers derived from the spec (band indices, wavelength codes) are
    registered with ``persistent=False``: they are rebuilt from the spec, so a checkpoint holds only weights.

    Args:
        spec: the sensor.
        dim: token width ``D`` (a multiple of 4).
        stem_dim: channels of the stem output.
        cells: stem grid positions per tile side (16: 30 m cells on a 480 m tile).
        tokens: token grid positions per tile side at most (4: ``N = 16`` tokens of 120 m on a 480 m tile; 8:
            ``N = 64`` tokens of 60 m, the second spatial convolution then at stride 1).
    """

    def __init__(self, spec: SensorSpec, dim: int, stem_dim: int = 32, cells: int = 16, tokens: int = 4):
        super().__init__()
        if dim % 4:
            raise ValueError(f"token width must be a multiple of 4, got {dim}")
        self.sensor = spec.name
        self.family = spec.family
        self.num_bands = spec.num_bands
        self.dim, self.stem_dim, self.cells, self.tokens = dim, stem_dim, cells, tokens
        self.spatial = _SpatialStage(stem_dim, dim, tokens, cells)
        self.adapter = _SensorAdapter(dim)
        self.pos_scale = nn.Parameter(torch.tensor(0.1))

    @abc.abstractmethod
    def stem(self, x: Tensor) -> Tensor:
        """Bands to stem features: ``(B, C, H, W)`` -> ``(B, stem_dim, h, w)`` with ``h ~ min(H, cells)``."""

    def stride_for(self, height: int, width: int) -> int:
        """Stride of the stem's 3x3 patch convolution so that the output has about ``cells`` positions a side."""
        return max(1, min(height, width) // self.cells)

    @staticmethod
    def padding_for(stride: int, kernel: int = 3) -> int:
        """Padding of the stem convolution: 'same' when patches overlap, none when they tile the input."""
        return kernel // 2 if stride < kernel else 0

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens of a batch of tiles.

        Args:
            x: ``(B, C, H, W)`` normalised tiles in the sensor's full band order.

        Returns:
            ``(B, N, D)`` tokens, ``N = h' * w'`` with ``h' = min(ceil(h / 4), tokens)`` for a stem grid ``h``
            (``min(ceil(h / 2), tokens)`` when ``tokens > cells / 4``).
        """
        if x.ndim != 4 or x.shape[1] != self.num_bands:
            raise ValueError(f"{self.sensor}: expected (B, {self.num_bands}, H, W), got {tuple(x.shape)}")
        f = self.spatial(self.stem(x))  # (B, D, h', w')
        _, d, h, w = f.shape
        tokens = self.adapter(f.flatten(2).transpose(1, 2))  # (B, h'*w', D)
        return tokens + self.pos_scale * sincos_2d(h, w, d, device=x.device).to(tokens.dtype)  # (B, N, D)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`forward_features` (a branch has no head of its own)."""
        return self.forward_features(x)
