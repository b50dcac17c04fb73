"""Drawing sequences from the prior: classifier-free guidance, optional energy guidance, any sampler.

This is the single sampling entry point shared by the support stage (unguided prior samples) and the
planner (energy-guided samples), so both see exactly the same score.
"""

from __future__ import annotations

from typing import Optional

import torch

from ld.diffusion.samplers import cfg_eps, energy_guided, sample
from ld.diffusion.schedule import NoiseSchedule
from ld.models.energy import EnergyMLP, energy_grad


def draw(
    prior: torch.nn.Module,
    schedule: NoiseSchedule,
    cond: torch.Tensor,
    x_shape: tuple[int, int],
    *,
    guidance_scale: float,
    temperature: float,
    sampler: str = "ddpm",
    steps: Optional[int] = None,
    energy: Optional[EnergyMLP] = None,
    energy_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
    clip: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """x_0 [B, *x_shape] in the prior's (standardized) space, one sample per row of `cond` [B, cond_dim].

    `clip` = per-channel (lo, hi) of the training data (`Standardizer.bounds`): x0 predictions are clamped
    to it, as Diffuser clips to its normalized range; without it a few-step cosine schedule diverges.
    """
    eps_fn = cfg_eps(prior, cond, guidance_scale)
    if energy is not None and energy_scale > 0:
        eps_fn = energy_guided(eps_fn, lambda x, k: energy_grad(energy, x, cond, k), schedule, energy_scale)
    shape = (cond.shape[0], *x_shape)
    with torch.no_grad():
        return sample(eps_fn, shape, schedule, name=sampler, steps=steps, temperature=temperature,
                      generator=generator, device=cond.device, clip_x0=clip)
