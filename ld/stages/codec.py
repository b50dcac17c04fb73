"""Codecs: the one place where the modeling selections differ.

The prior, the support latents, the energy model and the planner all work on a sequence x [B, N, C] that
a codec maps from a window of the dataset (`encode`) and back to a trajectory (`decode`), always in
normalized units:

- `LatentCodec` (modeling = latent or skill): x = z, the VAE's latent actions (N = T / L, C = latent_dim);
  decode = the state decoder, inverse dynamics for actions, the reward/return decoder for r and Q.
- `RawCodec` (modeling = raw, paper Algorithm 2): x = the raw window (s_t, a_t) (N = T, C = obs + act);
  decode = slice, and the same reward/return head on (s_t, a_t); inverse dynamics still drives control.

The energy of a decoded trajectory (`trajectory_energy`) is the same function for both.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ld.models.mlp import InverseDynamics, ValueHead
from ld.models.vae import TrajectoryVAE


class Codec(Protocol):
    x_shape: tuple[int, int]

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor, s1: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def inverse_dynamics(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor: ...


class LatentCodec(nn.Module):
    """A module, so one `.to(device)` moves everything planning decodes with."""

    def __init__(self, vae: TrajectoryVAE):
        super().__init__()
        self.vae = vae.eval()
        self.x_shape = tuple(vae.latent_shape)

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoder means, with the training mask (time-limit padding zeroed at the input), so the prior's
        targets are the latents the VAE was trained to decode."""
        mean, _ = self.vae.encode(batch["states"], batch["actions"], batch["rewards"], batch["returns"],
                                  mask=batch.get("mask"))
        return mean

    def decode(self, x: torch.Tensor, s1: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.vae.decode(x, s1)

    def inverse_dynamics(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return self.vae.inverse_dynamics(s, s_next)


class RawDynamics(nn.Module):
    """The raw-space stand-in for the VAE's heads: inverse dynamics + reward/return decoder."""

    def __init__(self, obs_dim: int, act_dim: int, id_hidden: int, id_layers: int, value_hidden: int,
                 value_layers: int):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.inverse_dynamics = InverseDynamics(obs_dim, act_dim, hidden=id_hidden, layers=id_layers)
        self.value_head = ValueHead(obs_dim, act_dim, hidden=value_hidden, layers=value_layers)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        s, a, m = batch["states"], batch["actions"], batch["mask"]
        pair = m[:, :-1] * m[:, 1:]
        a_hat = self.inverse_dynamics(s[:, :-1], s[:, 1:])
        id_loss = (((a_hat - a[:, :-1]) ** 2).mean(-1) * pair).sum() / pair.sum().clamp_min(1)
        r_hat, g_hat = self.value_head(s, a)
        err = 0.5 * ((r_hat - batch["rewards"]) ** 2 + (g_hat - batch["returns"]) ** 2)
        v_loss = (err * m).sum() / m.sum().clamp_min(1)
        return id_loss + v_loss, {"inv_dyn": float(id_loss.detach()), "value": float(v_loss.detach())}


class RawCodec(nn.Module):
    def __init__(self, dynamics: RawDynamics, horizon: int):
        super().__init__()
        self.dyn = dynamics.eval()
        self.obs_dim = dynamics.obs_dim
        self.x_shape = (horizon, dynamics.obs_dim + dynamics.act_dim)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([batch["states"], batch["actions"]], -1)

    def decode(self, x: torch.Tensor, s1: torch.Tensor) -> dict[str, torch.Tensor]:
        states, actions = x[..., : self.obs_dim], x[..., self.obs_dim:]
        rewards, q = self.dyn.value_head(states, actions)
        return {"states": states, "actions": actions, "rewards": rewards, "q": q}

    def inverse_dynamics(self, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        return self.dyn.inverse_dynamics(s, s_next)


def trajectory_energy(decoded: dict[str, torch.Tensor], target: str) -> torch.Tensor:
    """E(h(x, s_1)) per trajectory, [..., T] -> [...], in standardized return units of the dataset.

    q_sum: E = -sum_t Q(s_t, a_t), the paper's energy, summed (not averaged) over the window so that beta = 3
    is the paper's tilt. return: E = -G_1, Diffuser's value: the discounted reward-to-go from the window's
    first step to the end of the episode (the decoded return at t = 1).
    """
    if target == "q_sum":
        return -decoded["q"].sum(-1)
    if target == "return":
        return -decoded["q"][..., 0]
    raise ValueError(f"energy.target must be q_sum or return, got {target!r}")
