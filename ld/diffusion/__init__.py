"""Noise schedule, epsilon loss, samplers (DDPM, DDIM, DPM-Solver++) and guidance (classifier-free, energy)."""

from ld.diffusion.losses import eps_loss
from ld.diffusion.samplers import SAMPLERS, EpsFn, cfg_eps, energy_guided, sample, timesteps
from ld.diffusion.schedule import NoiseSchedule

__all__ = ["NoiseSchedule", "eps_loss", "EpsFn", "cfg_eps", "energy_guided", "sample", "timesteps", "SAMPLERS"]
