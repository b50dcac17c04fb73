"""Intermediate energy model f_eta(z_k, s_1, k) and the losses that train it (Sec. 4.2, App. F).

Sign convention (used by the sampler): the energy of a clean plan is E(h(z_0, s_1)) = -sum_t Q(s_t, a_t)
(low energy = good plan); the target policy is pi*(z | s_1) ∝ mu(z | s_1) exp(-beta E); f_eta estimates
log E_{q(z_0 | z_k, s_1)}[exp(-beta E(z_0))] up to a per-s_1 constant, and guidance *adds* grad_z f_eta
to the prior's score. So f ≈ -beta E (+ const) at k = 0.

All losses take f [..., M] and energy [..., M], where the last axis is the support set of M latents
sharing one initial state s_1 (leading axes are averaged over).

- `contrastive_loss` (eq. 8, QGPO / CEP; exact): - sum_i softmax_i(-beta E) log softmax_i(f).
- `emse_loss` (E-MSE; exact in principle, numerically fragile): mean || exp(f) - exp(-beta E) ||^2, exactly
  as the paper defines it -- no shift, no rescaling, no clamping (and the energy stage trains it without
  gradient clipping). paper.md writes exp(beta E); with the sign convention above the target must be
  exp(-beta E) so that f ≈ -beta E. With E = -sum_t Q over a window, exp(-beta E) can overflow float32;
  that instability is the paper's reason E-MSE loses, so it is measured (the energy stage records the step
  at which the loss stopped being finite), not engineered away.
- `mse_loss` (Diffuser-style regression, eq. 13; the inexact baseline): || f - (-beta E) ||^2.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ld.models.mlp import mlp


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """t [...] float in [0, 1] -> [..., dim]; t is multiplied by `scale` (DDPM-like step frequencies)."""
    half = dim // 2
    steps = torch.arange(half, device=t.device, dtype=t.dtype)
    freqs = torch.exp(-math.log(10000.0) * steps / max(half - 1, 1))
    args = (t * scale).unsqueeze(-1) * freqs
    emb = torch.cat([args.sin(), args.cos()], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class EnergyMLP(nn.Module):
    """f_eta(z_k, s_1, k) -> scalar (paper: 4 hidden layers x 256, SiLU).

    Input: flattened z_k [..., N * d] ++ s_1 [..., cond_dim] ++ sinusoidal embedding of t = k / K.

    Diffusion time: pass `k` either as an *integer* tensor of step indices 0..K, in which case the model
    must have been built with `diffusion_steps=K` and uses t = k / K, or as a *floating* tensor already
    normalized to t in [0, 1] (k / K, or continuous time for ODE samplers). k = 0 is the clean latent.
    """

    def __init__(
        self,
        x_dim: int,
        cond_dim: int,
        hidden: int = 256,
        layers: int = 4,
        time_embed: int = 64,
        diffusion_steps: Optional[int] = None,
        x_shape: Optional[tuple[int, int]] = None,
    ):
        super().__init__()
        # With x_shape = (N, d) inputs are always [..., N, d]: unambiguous even when N = 1 or d = 1, where
        # a [..., N, d] tensor would otherwise also look like [..., x_dim].
        if x_shape is not None and x_shape[0] * x_shape[1] != x_dim:
            raise ValueError(f"x_shape {x_shape} does not match x_dim {x_dim}")
        self.x_shape = tuple(x_shape) if x_shape is not None else None
        self.x_dim, self.cond_dim, self.time_embed = x_dim, cond_dim, time_embed
        self.diffusion_steps = diffusion_steps
        self.net = mlp(x_dim + cond_dim + time_embed, hidden, layers, 1, act="silu")

    def _time(self, k: Tensor | float | int, like: Tensor) -> Tensor:
        k = torch.as_tensor(k, device=like.device)
        if k.is_floating_point():
            return k.to(like.dtype)
        if self.diffusion_steps is None:
            raise ValueError(
                "integer diffusion steps k need EnergyMLP(..., diffusion_steps=K); "
                "or pass k as a float tensor t = k / K in [0, 1]"
            )
        return k.to(like.dtype) / self.diffusion_steps

    def forward(self, x: Tensor, cond: Tensor, k: Tensor | float | int) -> Tensor:
        """x [..., N, d] or [..., x_dim], cond [..., cond_dim], k [...] (or scalar) -> f [...].

        cond and k may carry only a prefix of the leading axes (e.g. x [B, M, N, d], cond [B, obs],
        k [B]); they are broadcast over the remaining ones.
        """
        if self.x_shape is not None:
            if tuple(x.shape[-2:]) != self.x_shape:
                raise ValueError(f"x has shape {tuple(x.shape)}; expected [..., {self.x_shape[0]}, {self.x_shape[1]}]")
            x = x.flatten(-2)
        elif x.shape[-1] != self.x_dim:
            if x.dim() < 2 or x.shape[-2] * x.shape[-1] != self.x_dim:
                raise ValueError(f"x has shape {tuple(x.shape)}; expected [..., {self.x_dim}] or [..., N, d]")
            x = x.flatten(-2)
        lead = x.shape[:-1]
        t = self._time(k, x)
        # left-aligned broadcasting: k [B] and cond [B, cond_dim] serve x [B, M, ...] (one s_1, M latents)
        t = t.reshape(t.shape + (1,) * (len(lead) - t.dim())).expand(lead)
        cond = cond.reshape(cond.shape[:-1] + (1,) * (len(lead) - cond.dim() + 1) + cond.shape[-1:])
        cond = cond.expand(*lead, self.cond_dim)
        h = torch.cat([x, cond, sinusoidal_embedding(t, self.time_embed)], dim=-1)
        return self.net(h).squeeze(-1)


# ----------------------------------------------------------------------------------------------------
# losses: f [..., M], energy [..., M]; the last axis is the support set of one s_1


def contrastive_loss(f: Tensor, energy: Tensor, beta: float) -> Tensor:
    """Eq. 8: - sum_i softmax_i(-beta E) * log softmax_i(f), averaged over the leading axes."""
    target = torch.softmax(-beta * energy.detach(), dim=-1)
    return -(target * torch.log_softmax(f, dim=-1)).sum(dim=-1).mean()


def emse_loss(f: Tensor, energy: Tensor, beta: float) -> Tensor:
    """E-MSE, the paper's formula: mean over supports and states of (exp(f) - exp(-beta E))^2."""
    return (torch.exp(f) - torch.exp(-beta * energy.detach())).pow(2).mean()


def effective_sample_size(energy: Tensor, beta: float) -> Tensor:
    """ESS of the contrastive target softmax(-beta E) per support set, as a fraction of M: [..., M] -> [...].

    1 = a uniform target (the energy model would learn nothing), 1/M = one-hot (every support but one is
    ignored). ESS = 1 / sum_i w_i^2.
    """
    w = torch.softmax(-beta * energy.detach().double(), dim=-1)
    return (1.0 / w.pow(2).sum(-1) / energy.shape[-1]).float()


def mse_loss(f: Tensor, energy: Tensor, beta: float) -> Tensor:
    """Diffuser-style regression of the energy: mean (f - (-beta E))^2 (inexact for k > 0)."""
    return (f + beta * energy.detach()).pow(2).mean()


ENERGY_LOSSES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "contrastive": contrastive_loss,
    "emse": emse_loss,
    "mse": mse_loss,
}


def energy_grad(model: nn.Module, x_k: Tensor, cond: Tensor, k: Tensor | float | int) -> Tensor:
    """grad_x f_eta(x_k, cond, k), detached, same shape as x_k; safe to call under torch.no_grad().

    Only x_k gets a gradient: the model's parameter .grad fields are left untouched.
    """
    with torch.enable_grad():
        x = x_k.detach().requires_grad_(True)
        f = model(x, cond, k)
        (grad,) = torch.autograd.grad(f.sum(), x)
    return grad.detach()
