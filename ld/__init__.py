"""ld: LatentDiffuser -- offline RL by planning with a latent diffusion model, run as Ray sweeps."""

__version__ = "0.1.0"
