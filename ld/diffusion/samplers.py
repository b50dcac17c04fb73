"""Samplers for the discrete VP schedule, and the two guidances that compose with all of them.

Every sampler consumes an `EpsFn` -- `(x_k, k) -> eps`, with any guidance already folded in -- so
classifier-free guidance (`cfg_eps`) and energy guidance (`energy_guided`) work with DDPM, DDIM and
DPM-Solver++ alike, and one trained model serves every sampler.

Timesteps. With S = `steps` sampling steps (S <= K; None means S = K) the model is evaluated at the
subsequence t_{S-1} = K-1 > ... > t_0 = 0 of 0..K-1 (evenly spaced, rounded; S = 1 uses t = K-1 only), so
every sampler makes exactly S network evaluations:

* ``ddpm``: ancestral sampling on the respaced chain (the schedule restricted to the subsequence, i.e.
  beta'_i = 1 - abar_{t_i} / abar_{t_{i-1}}; with S = K it is plain DDPM). Each step draws
  x_{prev} ~ N(mu, temperature * Sigma), with the posterior mean mu and variance Sigma of
  q(x_prev | x_t, x0_hat): `temperature` is the paper's alpha ("sample z_{k-1} ~ N(mu, alpha Sigma)"),
  scaling the *variance* (temperature = 1 is plain DDPM, 0 is the posterior-mean chain). The last step
  (t_0 = 0 -> data) has zero posterior variance and returns x0_hat. x_T ~ N(0, I) is not rescaled.
  (Decision Diffuser's code multiplies the *standard deviation* of x_T and of every step's noise by 0.5;
  we follow the paper's stated variance scaling instead.)
* ``ddim``: eta = 0, deterministic: x_prev = alpha_prev x0_hat + sigma_prev eps_hat; the step from t_0 lands
  on the data (alpha = 1, sigma = 0), i.e. returns x0_hat at t_0.
* ``dpm_solver``: DPM-Solver++(2M), the multistep second-order solver in data-prediction form, in
  lambda = log(alpha / sigma) of the discrete schedule. It integrates from t_{S-1} = K-1 down to t_0 = 0
  in S - 1 steps (the first one first-order, i.e. DDIM; the rest use the previous step's x0 prediction
  for the second-order term), then *the end point* is handled by one last evaluation at k = 0 whose
  x0 prediction, x0_hat(x_{t_0}, 0) = (x - sigma_0 eps) / alpha_0, is returned (the data sits at
  lambda = +inf, which the solver cannot step to).

Temperature for the deterministic samplers: they add no noise during the solve, so `temperature` alpha
scales the *starting* noise instead, x_T ~ N(0, alpha I) (the usual temperature of ODE / flow samplers;
DDPM keeps the paper's per-step variance scaling). Nothing is clipped
unless `clip_x0` is given (latents are unbounded); with it, every x0 prediction is clamped to
[-clip_x0, clip_x0], or to [lo, hi] when it is a pair of tensors broadcastable to x (per-channel data
ranges, as Diffuser clips to its [-1, 1] normalization), and DDIM re-derives eps from the clamped x0.
Clipping matters with few steps: the cosine schedule's last alpha_bar is ~1e-5, so x0 = (x - sigma eps)
/ alpha amplifies any error of eps at the noisiest step a few hundred times.

Sampling runs under `torch.no_grad()`; per-step coefficients are computed once in float64 before the
loop and moved to the device, and the loop itself only indexes them with Python ints, so it issues no
host synchronisation. Randomness comes from `generator` only (noise is drawn on the generator's device and
moved), so a given generator makes the result deterministic on CPU.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from ld.diffusion.schedule import NoiseSchedule

EpsFn = Callable[[Tensor, Tensor], Tensor]
GradFn = Callable[[Tensor, Tensor], Tensor]
SAMPLERS = ("ddpm", "ddim", "dpm_solver")


# ----------------------------------------------------------------------------------------------------
# guidance


def cfg_eps(model: Callable[..., Tensor], cond: Optional[Tensor], w: float) -> EpsFn:
    """Classifier-free guidance: eps = eps_u + w (eps_c - eps_u), with eps_c = model(x, k, cond, 1) and
    eps_u = model(x, k, cond, 0) (the null condition) computed in ONE doubled batch.

    w = 0 evaluates only the unconditional model and w = 1 only the conditional one (so both are exact and
    cost one batch). `cond` is [B, cond_dim] for the sampled batch of B; cond None means an unconditional
    model (guidance is then moot and the model is called with cond = cond_mask = None).
    """
    w = float(w)

    if cond is None:
        return lambda x, k: model(x, k, None, None)

    def eps_fn(x: Tensor, k: Tensor) -> Tensor:
        B = x.shape[0]
        if w == 0.0:
            return model(x, k, cond, torch.zeros(B, device=x.device, dtype=x.dtype))
        if w == 1.0:
            return model(x, k, cond, torch.ones(B, device=x.device, dtype=x.dtype))
        mask = torch.cat([
            torch.ones(B, device=x.device, dtype=x.dtype), torch.zeros(B, device=x.device, dtype=x.dtype)
        ])
        out = model(torch.cat([x, x]), torch.cat([k, k]), torch.cat([cond, cond]), mask)
        eps_c, eps_u = out[:B], out[B:]
        return eps_u + w * (eps_c - eps_u)

    return eps_fn


def energy_guided(eps_fn: EpsFn, grad_fn: GradFn, schedule: NoiseSchedule, scale: float) -> EpsFn:
    """Add the intermediate energy's gradient to the score (Lu et al. 2023, as used by the paper):

        score = -eps / sigma_k + scale * grad_x f(x_k, k)   <=>   eps_guided = eps - scale * sigma_k * grad.

    `grad_fn(x_k, k)` returns grad_x f(x_k, k) with f ~ log E_{x0|x_k}[exp(-beta E(x0))] (shape of x_k). It is
    called with autograd enabled (the samplers run under no_grad) on a detached x_k, so it may do
    `x.requires_grad_(True)` and `torch.autograd.grad` itself. scale = 0 returns eps unchanged.
    """
    scale = float(scale)
    if scale == 0.0:
        return eps_fn

    def guided(x: Tensor, k: Tensor) -> Tensor:
        eps = eps_fn(x, k)
        with torch.enable_grad():
            g = grad_fn(x.detach(), k)
        _, sigma = schedule.alpha_sigma(k)
        sigma = sigma.to(x.dtype).view((-1,) + (1,) * (x.dim() - 1))
        return eps - scale * sigma * g.detach().to(x.dtype)

    return guided


# ----------------------------------------------------------------------------------------------------
# timesteps


def timesteps(K: int, steps: Optional[int] = None) -> list[int]:
    """The S model-evaluation timesteps, *descending*: K-1 first, 0 last (S = 1: [K-1])."""
    S = K if steps is None else int(steps)
    if S < 1 or S > K:
        raise ValueError(f"sampling steps must be in 1..{K} (the schedule's K), got {steps!r}")
    if S == 1:
        return [K - 1]
    ts = torch.linspace(0, K - 1, S, dtype=torch.float64).round().long().tolist()
    return ts[::-1]


def _randn(shape, generator: Optional[torch.Generator], device: torch.device, dtype: torch.dtype) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


# ----------------------------------------------------------------------------------------------------
# samplers


def sample(
    eps_fn: EpsFn,
    shape,
    schedule: NoiseSchedule,
    name: str = "ddpm",
    steps: Optional[int] = None,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    x_T: Optional[Tensor] = None,
    device=None,
    return_trajectory: bool = False,
    clip_x0: Union[None, float, tuple[Tensor, Tensor]] = None,
) -> Union[Tensor, tuple[Tensor, Tensor]]:
    """Draw x_0 of `shape` ([B, ...], usually [B, N, C]) with sampler `name` (see the module docstring).

    x_T: the starting noise (default N(0, I) from `generator`); it fixes device and dtype (else `device`,
    default CPU, float32). With `return_trajectory` the result is `(x_0, traj)` where traj is
    [S + 1, *shape]: x_T, then x after each of the S steps (the last equals x_0).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    ts = timesteps(schedule.K, steps)
    shape = tuple(shape)
    if x_T is not None:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        device, dtype = x_T.device, x_T.dtype
    else:
        device = torch.device(device) if device is not None else torch.device("cpu")
        dtype = torch.float32
    B = shape[0]
    run = {"ddpm": _ddpm, "ddim": _ddim, "dpm_solver": _dpm_solver}[name]
    with torch.no_grad():
        x = x_T.clone() if x_T is not None else _randn(shape, generator, device, dtype)
        if name != "ddpm" and x_T is None and temperature != 1.0:
            x = x * temperature ** 0.5
        traj = [x] if return_trajectory else None
        # k as a [B] long tensor per step, made before the loop
        ks = [torch.full((B,), t, dtype=torch.long, device=device) for t in ts]
        x = run(eps_fn, x, schedule, ts, ks, temperature, generator, clip_x0, traj)
    if return_trajectory:
        return x, torch.stack(traj)
    return x


def _coef(values, device, dtype) -> Tensor:
    """float64 values -> one device tensor in the sample dtype (indexed by Python ints in the loop)."""
    return torch.as_tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)


def _x0_from_eps(x: Tensor, eps: Tensor, a: Tensor, s: Tensor, clip_x0) -> Tensor:
    x0 = (x - s * eps) / a
    if clip_x0 is None:
        return x0
    if isinstance(clip_x0, tuple):
        return torch.maximum(torch.minimum(x0, clip_x0[1]), clip_x0[0])
    return x0.clamp(-clip_x0, clip_x0)


def coefficients(schedule: NoiseSchedule, ts: list[int], name: str, temperature: float, device,
                 dtype) -> dict[str, Tensor]:
    """Every per-step coefficient of sampler `name` on the timesteps `ts`: computed once, in float64 on the
    CPU from the schedule's tables, then cast to the sample's device and dtype. The one copy of these
    formulas, shared by `sample` and the static / CUDA-graph path (`ld.planning.fast`).

    ddpm: a, s (alpha, sigma at t_i), c_x0, c_xt (posterior mean = c_x0 x0_hat + c_xt x_t), std (the step
    noise, variance scaled by `temperature`); ddim: a, s, a_prev, s_prev; dpm_solver: a, s, ratio, phi,
    c_cur, c_prev (see `_dpm_solver`)."""
    idx = torch.tensor(ts)
    c: dict[str, Tensor] = {}
    if name in ("ddpm", "ddim"):
        abar = schedule.alpha_bars.cpu()
        ab_t = abar[idx]
        ab_prev = torch.cat([abar[idx[1:]], torch.ones(1, dtype=torch.float64)])  # data after t_0
        c["a"], c["s"] = ab_t.sqrt(), (1 - ab_t).sqrt()
        if name == "ddpm":
            beta = 1 - ab_t / ab_prev
            c["c_x0"] = beta * ab_prev.sqrt() / (1 - ab_t)
            c["c_xt"] = (1 - ab_prev) * (1 - beta).sqrt() / (1 - ab_t)
            c["std"] = (temperature * beta * (1 - ab_prev) / (1 - ab_t)).sqrt()
        else:
            c["a_prev"], c["s_prev"] = ab_prev.sqrt(), (1 - ab_prev).sqrt()
    elif name == "dpm_solver":
        alpha = schedule.sqrt_alpha_bars.cpu()[idx]
        sigma = schedule.sqrt_one_minus_alpha_bars.cpu()[idx]
        lam = schedule.log_snr.cpu()[idx]
        # step i goes t_i -> t_{i+1} (i = 0 .. n-2); h_i = lambda_{i+1} - lambda_i > 0
        h = lam[1:] - lam[:-1]
        r = torch.ones_like(h)
        r[1:] = h[:-1] / h[1:]                             # h_prev / h for the second-order correction
        c["a"], c["s"] = alpha, sigma
        c["ratio"] = sigma[1:] / sigma[:-1]                # sigma_{t+1} / sigma_t
        c["phi"] = -alpha[1:] * torch.expm1(-h)            # alpha_{t+1} (1 - e^{-h})
        c["c_cur"], c["c_prev"] = 1 + 0.5 / r, 0.5 / r     # D = c_cur x0_i - c_prev x0_{i-1}
    else:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    return {k: _coef(v, device, dtype) for k, v in c.items()}


def _ddpm(eps_fn, x, schedule, ts, ks, temperature, generator, clip_x0, traj):
    dev, dt = x.device, x.dtype
    c = coefficients(schedule, ts, "ddpm", temperature, dev, dt)
    a, s, c_x0, c_xt, std = c["a"], c["s"], c["c_x0"], c["c_xt"], c["std"]
    last = len(ts) - 1
    for i in range(len(ts)):
        eps = eps_fn(x, ks[i])
        x0 = _x0_from_eps(x, eps, a[i], s[i], clip_x0)
        x = c_x0[i] * x0 + c_xt[i] * x
        if i < last and temperature > 0:
            x = x + std[i] * _randn(x.shape, generator, dev, dt)
        if traj is not None:
            traj.append(x)
    return x


def _ddim(eps_fn, x, schedule, ts, ks, temperature, generator, clip_x0, traj):
    c = coefficients(schedule, ts, "ddim", temperature, x.device, x.dtype)
    a, s, a_prev, s_prev = c["a"], c["s"], c["a_prev"], c["s_prev"]
    for i in range(len(ts)):
        eps = eps_fn(x, ks[i])
        x0 = _x0_from_eps(x, eps, a[i], s[i], clip_x0)
        if clip_x0 is not None:
            eps = (x - a[i] * x0) / s[i]
        x = a_prev[i] * x0 + s_prev[i] * eps
        if traj is not None:
            traj.append(x)
    return x


def _dpm_solver(eps_fn, x, schedule, ts, ks, temperature, generator, clip_x0, traj):
    n = len(ts)
    c = coefficients(schedule, ts, "dpm_solver", temperature, x.device, x.dtype)
    a, s, ratio, phi, c_cur, c_prev = (c[k] for k in ("a", "s", "ratio", "phi", "c_cur", "c_prev"))
    x0_prev = None
    for i in range(n - 1):
        eps = eps_fn(x, ks[i])
        x0 = _x0_from_eps(x, eps, a[i], s[i], clip_x0)
        D = x0 if x0_prev is None else c_cur[i] * x0 - c_prev[i] * x0_prev
        x = ratio[i] * x + phi[i] * D
        x0_prev = x0
        if traj is not None:
            traj.append(x)
    # end point: the x0 prediction at the last timestep (k = 0 whenever S >= 2)
    eps = eps_fn(x, ks[n - 1])
    x = _x0_from_eps(x, eps, a[n - 1], s[n - 1], clip_x0)
    if traj is not None:
        traj.append(x)
    return x
