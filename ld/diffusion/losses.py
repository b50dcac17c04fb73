"""The epsilon-prediction (DDPM) training loss with classifier-free condition dropout."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ld.diffusion.schedule import NoiseSchedule


def _gen_device(generator: Optional[torch.Generator], device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def eps_loss(
    model: Callable[..., Tensor],
    x0: Tensor,
    cond: Optional[Tensor],
    schedule: NoiseSchedule,
    cond_dropout: float,
    generator: Optional[torch.Generator] = None,
    mask: Optional[Tensor] = None,
) -> Tensor:
    """Scalar MSE(model(x_k, k, cond, cond_mask), eps) with k ~ U{0..K-1} and eps ~ N(0, I) per example.

    x0: [B, N, C] (any [B, ...] works). cond: [B, cond_dim] or None (unconditional model; cond_mask None).
    cond_mask[b] = 0 with probability `cond_dropout` (the null condition), else 1.
    mask: optional weights broadcastable to x0 (e.g. [B, N, 1] or [B, N, C], 1 = counts, 0 = ignore);
    the loss is then sum(mask * err^2) / sum(mask expanded to x0's shape).
    Randomness (k, eps, dropout) is drawn from `generator` on its own device and moved to x0's device.
    """
    if not 0.0 <= cond_dropout <= 1.0:
        raise ValueError(f"cond_dropout must be in [0, 1], got {cond_dropout}")
    B, dev = x0.shape[0], x0.device
    gdev = _gen_device(generator, dev)
    k = torch.randint(0, schedule.K, (B,), generator=generator, device=gdev).to(dev)
    eps = torch.randn(x0.shape, generator=generator, device=gdev, dtype=x0.dtype).to(dev)
    cond_mask = None
    if cond is not None:
        u = torch.rand(B, generator=generator, device=gdev).to(dev)
        cond_mask = (u >= cond_dropout).to(x0.dtype)
    x_k = schedule.q_sample(x0, k, eps)
    pred = model(x_k, k, cond, cond_mask)
    err = (pred - eps) ** 2
    if mask is None:
        return err.mean()
    m = mask.to(err.dtype).expand_as(err)
    return (m * err).sum() / m.sum().clamp_min(1e-12)
