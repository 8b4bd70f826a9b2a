"""Shared semantic head: a few transformer blocks over a branch's tokens, then attention pooling to one vector.

One head serves every sensor: it sees tokens ``(B, N, D)`` from any branch (plus a learned embedding of the
sensor family) and returns ``h`` ``(B, D)``. It is the only place in the model that pools.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsretrieve.sensors.base import FAMILIES


@dataclass
class HeadConfig:
    dim: int = 64  # token width D, the same as the branches' output
    depth: int = 2  # number of transformer blocks
    heads: int = 4  # attention heads per block and in the pooling (dim % heads == 0)
    mlp_ratio: float = 2.0  # hidden width of each block's MLP, as a multiple of dim
    dropout: float = 0.0  # dropout on attention weights and block outputs (0: train and eval modes agree)
    family_embedding: bool = True  # add a learned embedding of the sensor family to every token
    layout: int = 0  # > 0: add a read-out of the token grid resampled to layout x layout (where things are)

    def to_dict(self) -> dict[str, int | float | bool]:
        """Plain-typed fields, for checkpoints."""
        return asdict(self)


class SelfAttention(nn.Module):
    """Multi-head self-attention without a causal mask."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"dim {config.dim} is not a multiple of heads {config.heads}")
        self.heads, self.dropout = config.heads, config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # (B, N, D) each
        q = q.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, h, N, D/h)
        k = k.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, h, N, D/h)
        v = v.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, h, N, D/h)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)  # (B,h,N,D/h)
        y = y.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.proj(y)


class MLP(nn.Module):
    """Two-layer GELU MLP of a block."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        hidden = int(config.mlp_ratio * config.dim)
        self.fc = nn.Linear(config.dim, hidden)
        self.proj = nn.Linear(hidden, config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))  # (B, N, D)
        return x + self.mlp(self.ln_2(x))  # (B, N, D)


class AttentionPool(nn.Module):
    """Attention pooling with the mean token as query (as CLIP's ``AttentionPool2d``): ``(B, N, D)`` -> ``(B, D)``.

    The output is the mean token plus the attention read-out, so pooling starts as mean pooling (the residual
    projection starts near 0) and learns where to look. A fixed learned query instead lets training collapse early:
    it can settle on tokens that look the same in every tile.
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.heads = config.heads
        self.q = nn.Linear(config.dim, config.dim)
        self.kv = nn.Linear(config.dim, 2 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, D)
        ctx = torch.cat([mean, x], dim=1)  # (B, 1+N, D)
        k, v = self.kv(ctx).split(d, dim=2)  # (B, 1+N, D) each
        k = k.view(b, n + 1, self.heads, d // self.heads).transpose(1, 2)  # (B, h, 1+N, D/h)
        v = v.view(b, n + 1, self.heads, d // self.heads).transpose(1, 2)  # (B, h, 1+N, D/h)
        q = self.q(mean).view(b, 1, self.heads, d // self.heads).transpose(1, 2)  # (B, h, 1, D/h)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, h, 1, D/h)
        return mean.squeeze(1) + self.proj(y.reshape(b, d))  # (B, D)


class SemanticHead(nn.Module):
    """Transformer blocks + attention pooling shared by all sensors.

    Args:
        config: the head's shape.
    """

    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        self.family_embedding = nn.Embedding(len(FAMILIES), config.dim) if config.family_embedding else None
        if self.family_embedding is not None:
            nn.init.normal_(self.family_embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.ln_f = nn.LayerNorm(config.dim)
        self.pool = AttentionPool(config)
        self.layout = nn.Linear(config.layout ** 2 * config.dim, config.dim) if config.layout > 0 else None
        self.ln_out = nn.LayerNorm(config.dim)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections (GPT-2)
            if name.endswith(("attn.proj.weight", "mlp.proj.weight", "pool.proj.weight", "layout.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * max(config.depth, 1)))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """nanoGPT initialisation: N(0, 0.02) weights, zero biases, so every block starts close to the identity."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor, family: str) -> Tensor:
        """Pool tokens of one sensor family.

        Args:
            tokens: ``(B, N, D)`` from a branch.
            family: ``optical``, ``sar`` or ``hyperspectral``.

        Returns:
            ``h``: ``(B, D)``.
        """
        return self.forward_marked(self.mark_family(tokens, family))

    def mark_family(self, tokens: Tensor, family: str) -> Tensor:
        """Tokens ``(B, N, D)`` plus the family embedding (unchanged without one)."""
        if self.family_embedding is None:
            return tokens
        return tokens + self.family_embedding.weight[FAMILIES.index(family)]  # (B, N, D)

    def forward_marked(self, x: Tensor) -> Tensor:
        """The blocks and the pooling on tokens that already carry their family embedding: ``(B, N, D)`` ->
        ``(B, D)``. Every operation is per sample, so tiles of several sensors can share one call."""
        for block in self.blocks:
            x = block(x)  # (B, N, D)
        x = self.ln_f(x)
        h = self.pool(x)  # (B, D)
        if self.layout is not None:
            h = h + self.layout(token_grid(x, self.config.layout).flatten(1))  # (B, D)
        return self.ln_out(h)  # (B, D)


def token_grid(x: Tensor, size: int) -> Tensor:
    """Tokens ``(B, N, D)`` of a row-major ``s x s`` grid (``N = s * s``) resampled to ``(B, size * size, D)``.

    Area means when the grid is finer than ``size``, bilinear when coarser, unchanged when equal; a token count that
    is no square (not made by the branches, whose tiles are square) is read as one row.
    """
    b, n, d = x.shape
    s = math.isqrt(n)
    g = x.transpose(1, 2).reshape(b, d, s, s) if s * s == n else x.transpose(1, 2).reshape(b, d, 1, n)
    if g.shape[-2:] != (size, size):
        if g.shape[-2] >= size and g.shape[-1] >= size:
            g = F.adaptive_avg_pool2d(g, size)
        else:
            g = F.interpolate(g, size=(size, size), mode="bilinear", align_corners=False)
    return g.flatten(2).transpose(1, 2)  # (B, size * size, D)
