"""A critic of real (s, a) pairs fitted on the data: IQL's Q and V (Kostrikov et al., 2022), written for ld.

Why it exists: the paper's energy E = -sum_t Q reads Q from the decoder, and the decoder reconstructs the
return the latent was encoded with; for a latent the prior invented, that is the return the latent claims,
not one its decoded states earn (bench/RESULTS.md: among 16 prior plans, -E's rank correlation with their
true return is about 0). A critic of the real state and the action actually executed cannot be fooled by a
latent's claim, and IQL fits it from the data alone: V is an upper expectile of Q over the data's actions
(so it never queries an action outside the data), Q regresses r + gamma V(s'). Selection among the prior's
candidate plans by this Q is IDQL's recipe (Hansen-Estruch et al., 2023: a diffusion behavior model
proposes, an IQL critic picks), here applied to the first action of each candidate plan.

The module takes environment units: it carries its own input standardization and reward scale as buffers,
so a planner with another normalizer can call it directly.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ld.models.mlp import mlp


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Asymmetric squared loss |tau - 1(diff < 0)| diff^2: its minimizer over a constant is the tau-expectile
    of `diff`'s distribution (tau = 0.5: the mean; tau -> 1: the maximum)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return (weight * diff.pow(2)).mean()


class IQLCritic(nn.Module):
    """Twin Q(s, a), V(s) and Polyak-averaged target Qs; `forward(s, a)` = min of the target Qs, the value
    IQL's policy extraction reads (in the critic's scaled reward units)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.q1 = mlp(obs_dim + act_dim, hidden, layers, 1)
        self.q2 = mlp(obs_dim + act_dim, hidden, layers, 1)
        self.v = mlp(obs_dim, hidden, layers, 1)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in [*self.q1_target.parameters(), *self.q2_target.parameters()]:
            p.requires_grad_(False)
        for name, dim in (("s", obs_dim), ("a", act_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def set_standardization(self, s_mean, s_std, a_mean, a_std) -> None:
        for name, v in (("s_mean", s_mean), ("s_std", s_std), ("a_mean", a_mean), ("a_std", a_std)):
            getattr(self, name).copy_(torch.as_tensor(v, dtype=torch.float32))

    def inputs(self, s: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Environment units -> the standardized inputs the networks see."""
        return (s - self.s_mean) / self.s_std, (a - self.a_mean) / self.a_std

    @staticmethod
    def _q(net: nn.Module, s: Tensor, a: Tensor) -> Tensor:
        return net(torch.cat([s, a], dim=-1)).squeeze(-1)

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        """Q(s, a) [...] for environment-unit s [..., obs], a [..., act]."""
        s, a = self.inputs(s, a)
        return torch.minimum(self._q(self.q1_target, s, a), self._q(self.q2_target, s, a))

    def loss(self, s: Tensor, a: Tensor, r: Tensor, s_next: Tensor, not_done: Tensor, discount: float,
             expectile: float) -> tuple[Tensor, dict[str, float]]:
        """IQL's value and Q losses on a batch of standardized transitions (one optimizer updates both: their
        gradients touch disjoint networks, each target is detached)."""
        with torch.no_grad():
            q_t = torch.minimum(self._q(self.q1_target, s, a), self._q(self.q2_target, s, a))
            target = r + discount * not_done * self.v(s_next).squeeze(-1)
        v = self.v(s).squeeze(-1)
        v_loss = expectile_loss(q_t - v, expectile)
        q1, q2 = self._q(self.q1, s, a), self._q(self.q2, s, a)
        q_loss = 0.5 * ((q1 - target).pow(2).mean() + (q2 - target).pow(2).mean())
        return v_loss + q_loss, {"v_loss": float(v_loss.detach()), "q_loss": float(q_loss.detach()),
                                 "q_mean": float(q_t.mean())}

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        for net, tgt in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
            for p, pt in zip(net.parameters(), tgt.parameters()):
                pt.lerp_(p, tau)
