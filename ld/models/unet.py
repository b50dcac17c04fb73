"""Temporal U-Net eps-model of the score-based prior (Diffuser / Decision Diffuser architecture).

Input and output are [B, N, C] (N latent actions of C = transition_dim channels); internally [B, C, N] so
the 1-D convolutions run along the sequence ("width = number of latents, height = latent dim").

* residual temporal block: Conv1d(k=5) -> GroupNorm -> Mish, + Linear(Mish(embedding)) per channel,
  Conv1d(k=5) -> GroupNorm -> Mish, plus a 1x1-conv (or identity) residual;
* down path: per level two residual blocks, then a stride-2 Conv1d(k=3) (not after the last level);
  mid: two residual blocks; up path: per level (deepest first, len(dim_mults) - 1 of them) concatenate the
  skip, two residual blocks, ConvTranspose1d(k=4, stride 2); head: Conv1d(k=5)-GroupNorm-Mish, 1x1 conv;
* embedding: sinusoidal(k) -> Linear(embed_dim, embed_hidden) -> Mish -> Linear(., embed_dim), and
  s_1 -> Linear(cond_dim, embed_hidden) -> Mish -> Linear(., embed_dim); the two are concatenated
  (2 * embed_dim) and fed to every block;
* classifier-free dropout: the condition embedding is multiplied by cond_mask ([B], 1 keep / 0 drop), so a
  zeroed condition embedding is the null condition; cond=None means all dropped.

Any N >= 1 works: the sequence is replicate-padded at the end to a multiple of 2**(len(dim_mults)-1) and
the output cropped back to N. GroupNorm uses the largest group count <= 8 that divides the channels.

Size: the paper config TemporalUNet(16, 17, dim=64, dim_mults=(1, 2, 4), embed_dim=128, embed_hidden=256)
has 4,392,400 parameters (independent of N; N = 40 pads to 40, a multiple of 4). The default dim=32 with
the same embeddings has 1,295,600.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def n_groups(channels: int, max_groups: int = 8) -> int:
    """Largest g <= max_groups dividing `channels`."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, k: Tensor) -> Tensor:
        half = self.dim // 2
        steps = torch.arange(half, device=k.device, dtype=torch.float32)
        freqs = torch.exp(-math.log(10000.0) * steps / max(half - 1, 1))
        arg = k.float()[:, None] * freqs[None]
        emb = torch.cat([arg.sin(), arg.cos()], dim=-1)
        if self.dim % 2:
            emb = F.pad(emb, (0, 1))
        return emb


class ConvBlock(nn.Sequential):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 5):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(n_groups(c_out), c_out), nn.Mish()
        )


class ResidualTemporalBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel: int = 5):
        super().__init__()
        self.conv1 = ConvBlock(c_in, c_out, kernel)
        self.conv2 = ConvBlock(c_out, c_out, kernel)
        self.emb = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(x) + self.emb(emb)[:, :, None]
        return self.conv2(h) + self.skip(x)


class TemporalUNet(nn.Module):
    """eps_theta(x_k, k, s_1): model(x [B, N, C], k [B] long, cond [B, cond_dim] | None, cond_mask [B] | None)."""

    def __init__(
        self,
        transition_dim: int,
        cond_dim: int,
        dim: int = 32,
        dim_mults: Sequence[int] = (1, 2, 4),
        embed_dim: int = 128,
        embed_hidden: int = 256,
    ):
        super().__init__()
        if len(dim_mults) < 1:
            raise ValueError("dim_mults needs at least one level")
        self.transition_dim, self.cond_dim, self.embed_dim = transition_dim, cond_dim, embed_dim
        self.factor = 2 ** (len(dim_mults) - 1)
        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(embed_dim),
            nn.Linear(embed_dim, embed_hidden),
            nn.Mish(),
            nn.Linear(embed_hidden, embed_dim),
        )
        self.cond_mlp = nn.Sequential(nn.Linear(cond_dim, embed_hidden), nn.Mish(), nn.Linear(embed_hidden, embed_dim))
        emb = 2 * embed_dim

        dims = [transition_dim] + [dim * m for m in dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.downs = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                ResidualTemporalBlock(c_in, c_out, emb),
                ResidualTemporalBlock(c_out, c_out, emb),
                nn.Conv1d(c_out, c_out, 3, stride=2, padding=1) if not last else nn.Identity(),
            ]))
        mid = dims[-1]
        self.mid1 = ResidualTemporalBlock(mid, mid, emb)
        self.mid2 = ResidualTemporalBlock(mid, mid, emb)
        self.ups = nn.ModuleList()
        for c_in, c_out in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResidualTemporalBlock(2 * c_out, c_in, emb),
                ResidualTemporalBlock(c_in, c_in, emb),
                nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1),
            ]))
        self.head = nn.Sequential(ConvBlock(dim, dim, 5), nn.Conv1d(dim, transition_dim, 1))

    def embed(self, k: Tensor, cond: Optional[Tensor], cond_mask: Optional[Tensor], batch: int, like: Tensor) -> Tensor:
        t = self.time_mlp(k.reshape(-1).expand(batch) if k.numel() == 1 else k)
        if cond is None:
            c = torch.zeros(batch, self.embed_dim, device=like.device, dtype=t.dtype)
        else:
            c = self.cond_mlp(cond.to(t.dtype))
            if cond_mask is not None:
                c = c * cond_mask.to(c.dtype).reshape(-1, 1)
        return torch.cat([t, c], dim=-1)

    def forward(
        self, x: Tensor, k: Tensor, cond: Optional[Tensor] = None, cond_mask: Optional[Tensor] = None
    ) -> Tensor:
        B, N, _ = x.shape
        emb = self.embed(k, cond, cond_mask, B, x)
        h = x.transpose(1, 2)                                     # [B, C, N]
        pad = (-N) % self.factor
        if pad:
            h = F.pad(h, (0, pad), mode="replicate")
        skips = []
        for block1, block2, down in self.downs:
            h = block2(block1(h, emb), emb)
            skips.append(h)
            h = down(h)
        h = self.mid2(self.mid1(h, emb), emb)
        for block1, block2, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(block2(block1(h, emb), emb))
        out = self.head(h)[:, :, :N]
        return out.transpose(1, 2)
