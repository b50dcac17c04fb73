"""Small multilayer perceptrons: the builder every model uses, and the VAE's two modular heads.

Depth convention (used everywhere in `ld`): `layers` counts *hidden* layers, each `Linear -> activation`,
followed by one output `Linear`. So the paper's "2-layered MLP with 512 hidden units" for the inverse
dynamics is `mlp(in, 512, 2, out)`: Linear(in, 512) ReLU Linear(512, 512) ReLU Linear(512, out).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "mish": nn.Mish}


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int, act: str = "relu") -> nn.Sequential:
    """`layers` hidden layers of width `hidden` with activation `act`, then a linear map to `out_dim`."""
    if act not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; allowed: {', '.join(_ACTIVATIONS)}")
    if layers < 1:
        raise ValueError(f"mlp needs at least one hidden layer, got layers={layers}")
    mods: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), _ACTIVATIONS[act]()]
        width = hidden
    mods.append(nn.Linear(width, out_dim))
    return nn.Sequential(*mods)


class InverseDynamics(nn.Module):
    """Action decoder a_t = f(s_t, s_{t+1}) (paper: 2 hidden layers x 512, ReLU)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 512, layers: int = 2):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = mlp(2 * obs_dim, hidden, layers, act_dim, act="relu")

    def forward(self, s: Tensor, s_next: Tensor) -> Tensor:
        """s, s_next [..., obs_dim] -> a [..., act_dim]."""
        return self.net(torch.cat([s, s_next], dim=-1))


class ValueHead(nn.Module):
    """Reward and return decoder (s_t, a_t) -> (r_t, G_t) (paper: 3 hidden layers x 1024, ReLU).

    The return output is the Q estimate Q(s_t, a_t) that defines the planning energy E = -sum_t Q.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 1024, layers: int = 3):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = mlp(obs_dim + act_dim, hidden, layers, 2, act="relu")

    def forward(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """s [..., obs_dim], a [..., act_dim] -> (r [...], G [...])."""
        out = self.net(torch.cat([s, a], dim=-1))
        return out[..., 0], out[..., 1]
