"""Discrete variance-preserving noise schedule with K steps.

Convention (as in Diffuser / Decision Diffuser): the data is x_0 at "k = -1" and the noised variables are
indexed k = 0 .. K-1,

    x_k = alpha_k x_0 + sigma_k eps,   alpha_k = sqrt(abar_k),  sigma_k = sqrt(1 - abar_k),
    abar_k = prod_{i <= k} (1 - beta_i),

so k = 0 is the least noisy step (beta_0 is small, not zero) and k = K-1 is (close to) pure noise.

The tables (`betas`, `alphas`, `alpha_bars`, `sqrt_alpha_bars`, `sqrt_one_minus_alpha_bars`,
`log_snr`) are **float64 buffers** of length K: the schedule is an `nn.Module`, so the prior that owns it
moves it with one `.to(device)` (moving keeps float64; nothing here casts it). The samplers derive their
per-step coefficients from them in float64 and cast once to the sample dtype; `alpha_sigma` / `q_sample`
look them up on the device of `k` (a no-op move when the schedule is already there).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SCHEDULES = ("cosine", "linear")


def cosine_betas(K: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine schedule: abar(t) = cos^2(pi/2 (t + s) / (1 + s)), t = (k + 1) / K.

    beta_k = 1 - abar((k+1)/K) / abar(k/K), clipped to `max_beta` (the last step would otherwise be 1).
    """
    t = torch.arange(K + 1, dtype=torch.float64) / K
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - f[1:] / f[:-1]
    return betas.clamp(0.0, max_beta)


def linear_betas(K: int) -> Tensor:
    """DDPM's linear schedule 1e-4 .. 2e-2 for K = 1000, rescaled by 1000 / K so other K keep the same
    total noise (as in improved DDPM's respacing), capped at 0.999."""
    scale = 1000.0 / K
    return torch.linspace(1e-4 * scale, 2e-2 * scale, K, dtype=torch.float64).clamp(max=0.999)


class NoiseSchedule(nn.Module):
    """K-step discrete VP schedule (`kind` = "cosine", the default as in Diffuser, or "linear")."""

    def __init__(self, K: int, kind: str = "cosine"):
        super().__init__()
        if int(K) != K or K < 1:
            raise ValueError(f"K must be a positive integer, got {K!r}")
        if kind not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {kind!r}; allowed: {', '.join(SCHEDULES)}")
        self.K = int(K)
        self.kind = kind
        betas = cosine_betas(self.K) if kind == "cosine" else linear_betas(self.K)
        alpha_bars = torch.cumprod(1.0 - betas, 0)
        tables = {"betas": betas, "alphas": 1.0 - betas, "alpha_bars": alpha_bars,
                  "sqrt_alpha_bars": alpha_bars.sqrt(), "sqrt_one_minus_alpha_bars": (1.0 - alpha_bars).sqrt()}
        # lambda_k = log(alpha_k / sigma_k), decreasing in k; DPM-Solver works in this variable.
        tables["log_snr"] = tables["sqrt_alpha_bars"].log() - tables["sqrt_one_minus_alpha_bars"].log()
        for name, t in tables.items():
            self.register_buffer(name, t, persistent=False)  # derived from K and kind: not in a state_dict

    def extra_repr(self) -> str:
        return f"K={self.K}, kind={self.kind!r}"

    def alpha_sigma(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_k, sigma_k) = (sqrt(abar_k), sqrt(1 - abar_k)) for integer k in 0..K-1, float64, shaped
        like k and on k's device."""
        k = k.long()
        return self.sqrt_alpha_bars.to(k.device)[k], self.sqrt_one_minus_alpha_bars.to(k.device)[k]

    def q_sample(self, x0: Tensor, k: Tensor, noise: Tensor) -> Tensor:
        """x_k = alpha_k x0 + sigma_k noise; k is [B] and broadcasts over x0's trailing dims. Result has
        x0's dtype."""
        a, s = self.alpha_sigma(k)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return a.to(x0.dtype).view(shape) * x0 + s.to(x0.dtype).view(shape) * noise
