"""A compact GPT-2 style transformer *without* a causal mask (LatentDiffuser, App. E.2.1).

Pre-LayerNorm blocks: x + Attn(LN(x)), then x + MLP(LN(x)) with a 4x GELU MLP; attention is
`torch.nn.functional.scaled_dot_product_attention` with `is_causal=False`, so every token sees every other
one (future rewards can shape early latents; the paper removes TAP's causal mask on purpose).
A final LayerNorm closes the stack. Input and output are [B, T, dim].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide dim ({dim})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=-1)
        # [B, T, C] -> [B, heads, T, C / heads]
        q, k, v = (y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=False
        )
        y = y.transpose(1, 2).reshape(b, t, c)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """`n_layers` bidirectional pre-LN blocks plus a final LayerNorm on [B, T, dim]."""

    def __init__(self, dim: int, n_layers: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(dim)
        self.apply(_init)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


def _init(m: nn.Module) -> None:
    # GPT-2 initialisation: N(0, 0.02) weights, zero biases.
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
