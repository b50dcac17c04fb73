"""The fast planning path: static shapes, precomputed everything, one CUDA graph per batch bucket.

`Planner(..., fast=True)` routes `plan()` here. The result is the same `Plan` the eager planner returns and,
on CPU, the same numbers: `StaticSampler` replays exactly the operations of `ld.diffusion.guided.draw`
(classifier-free guidance in one doubled batch, energy guidance, DDPM / DDIM / DPM-Solver++ with x0 clipping)
in the same order, drawing the same noise from the same generator, so `tests/test_fast_planning.py` checks
outputs against `draw` for every sampler, guided and unguided.

What is static, per (batch, sampler, steps):

* the timestep tensors k (plain and doubled for CFG), the CFG masks, every per-step coefficient (computed in
  float64 by the same formulas as `ld.diffusion.samplers` and cast once), the energy model's time embedding
  of every step and the energy-guidance factor scale * sigma_k;
* the input buffers: s_1 (doubled once per call for CFG), x_T and the per-step noise of DDPM; the noise is
  drawn *before* the loop into those buffers, with the same `torch.randn` calls, in the same order, as
  `sample` draws it, so the result matches `draw` for a given generator;
* nothing inside the loop reads a value back to the host (no `.item()`, no Python branch on tensor data).

Energy guidance inside a graph. `draw` gets grad_x f_eta with `torch.autograd.grad`. Autograd inside a
CUDA-graph capture is fragile (the backward graph is built while capturing), so the fast path differentiates
the energy MLP by hand: f_eta is Linear -> SiLU -> ... -> Linear (`ld.models.mlp.mlp(act="silu")`); the
forward keeps each pre-activation u_l, and the backward is g <- W_L; g <- silu_backward(g, u_l) @ W_l for
l = L-1 .. 1, with `aten.silu_backward` and a plain matmul -- the very kernels autograd calls, so on CPU the
gradient equals `energy_grad`'s bit for bit. An energy model of any other structure falls back to autograd
(eager only; graph capture is then refused with a clear error).

Modes (`Planner(fast=...)`):

* ``True`` / ``"auto"``: a CUDA graph on CUDA devices, eager elsewhere;
* ``"graph"``: CUDA graph (CUDA only);
* ``"compile"``: `torch.compile(mode="reduce-overhead")` of the whole plan body (inductor + cudagraph trees
  on CUDA; on CPU inductor needs a C++ compiler and the 100-step loop is unrolled, so compiling takes
  minutes -- meant for long GPU evaluations);
* ``"eager"``: the same code without capture (what CPU runs, and what the tests compare).

Batch sizes. A graph has one batch size; requests of b rows run in the smallest bucket B >= b (powers of
two, 1 .. 1024) with rows b.. of the buffers left as they are (every op is per row, so they never touch the
first b rows). Eager mode runs the exact b. Graphs are captured lazily, one per bucket, and kept on the
planner; capture costs a few warm-up passes, paid on the first call of each bucket.

Only the sampling + decoding + selection + inverse dynamics run inside the graph; normalizing the observation
(numpy), copying it in, drawing the noise (and `resample`'s uniforms) and copying the actions out (the one host
synchronisation of a decision) stay outside.

Candidate plans (`planning.candidates` N > 1): a runner for b observations holds a static sampler of B * N rows
(each s_1 repeated N times, observation-major, as `Planner.plan` builds it) and selects inside the graph
(`ld.planning.plan.select`: argmin, or inverse-CDF resampling from a uniform buffer filled outside); the
selected plans come out with B rows, so the bucket is still chosen by the number of observations.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ld.diffusion import NoiseSchedule, timesteps
from ld.diffusion.samplers import SAMPLERS, coefficients
from ld.models.energy import EnergyMLP, energy_grad, sinusoidal_embedding
from ld.planning.plan import Plan, decode_tail, to_plan

if TYPE_CHECKING:  # pragma: no cover
    from ld.planning.planner import Planner

MODES = ("auto", "eager", "graph", "compile")
BUCKETS = tuple(2 ** i for i in range(11))  # 1 .. 1024


def bucket(b: int) -> int:
    for B in BUCKETS:
        if B >= b:
            return B
    return b


def resolve_mode(fast: Union[bool, str], device: torch.device) -> str:
    mode = "auto" if fast is True else str(fast)
    if mode not in MODES:
        raise ValueError(f"fast must be True/False or one of {', '.join(MODES)}; got {fast!r}")
    if mode == "auto":
        return "graph" if device.type == "cuda" else "eager"
    if mode == "graph" and device.type != "cuda":
        raise ValueError("fast='graph' needs a CUDA device (CUDA graphs); use fast='eager' or 'auto' on CPU")
    return mode


# ----------------------------------------------------------------------------------------------------
# energy gradient without autograd


class AnalyticEnergyGrad:
    """grad_x f_eta(x, cond, k) for an `EnergyMLP` whose net is Linear (-> SiLU -> Linear)*; no autograd.

    `supported(energy)` says whether the structure qualifies; `__call__(x, cond, temb)` takes the time
    embedding of k already computed (the fast sampler precomputes it per step).
    """

    def __init__(self, energy: EnergyMLP):
        if not self.supported(energy):
            raise ValueError("analytic energy gradient needs EnergyMLP.net = Linear (SiLU Linear)*")
        mods = list(energy.net)
        self.hidden = [mods[i] for i in range(0, len(mods) - 1, 2)]  # the Linear before each SiLU
        self.last = mods[-1]
        self.x_dim = energy.x_dim

    @staticmethod
    def supported(energy: Optional[nn.Module]) -> bool:
        if not isinstance(energy, EnergyMLP) or not isinstance(energy.net, nn.Sequential):
            return False
        mods = list(energy.net)
        if len(mods) < 3 or len(mods) % 2 == 0 or not isinstance(mods[-1], nn.Linear):
            return False
        if mods[-1].out_features != 1:
            return False
        return all(isinstance(mods[i], nn.Linear) and isinstance(mods[i + 1], nn.SiLU)
                   for i in range(0, len(mods) - 1, 2))

    def __call__(self, x: Tensor, cond: Tensor, temb: Tensor) -> Tensor:
        B = x.shape[0]
        h = torch.cat([x.flatten(-2), cond, temb], dim=-1)
        pre = []
        for lin in self.hidden:
            u = F.linear(h, lin.weight, lin.bias)
            pre.append(u)
            h = F.silu(u)
        # d(sum f)/dh_L = W_last (one output): ones[B, 1] @ W_last, exactly the rows of W_last
        g = self.last.weight.expand(B, -1)
        for lin, u in zip(reversed(self.hidden), reversed(pre)):
            g = torch.ops.aten.silu_backward(g, u)
            g = g.mm(lin.weight)
        return g[:, : self.x_dim].reshape(x.shape)


# ----------------------------------------------------------------------------------------------------
# the static sampler


class StaticSampler:
    """`draw(...)` for one batch size with every shape, coefficient and buffer fixed in advance.

    `load(cond, generator, b)` copies s_1 into the buffers and draws the noise (outside any graph); `body()`
    runs the whole sampling loop on the buffers and returns x_0 [batch, N, C] (graph-capturable).
    """

    def __init__(self, prior: nn.Module, schedule: NoiseSchedule, x_shape: tuple[int, int], cond_dim: int,
                 batch: int, *, guidance_scale: float, temperature: float, sampler: str = "ddpm",
                 steps: Optional[int] = None, energy: Optional[EnergyMLP] = None, energy_scale: float = 1.0,
                 clip: Optional[tuple[Tensor, Tensor]] = None, device: Union[str, torch.device] = "cpu",
                 analytic_energy: bool = True, dtype: torch.dtype = torch.float32):
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        self.prior, self.schedule = prior, schedule
        self.device, self.dtype = torch.device(device), dtype
        self.B, self.x_shape = int(batch), tuple(x_shape)
        self.name, self.temperature = sampler, float(temperature)
        self.w = float(guidance_scale)
        self.ts = timesteps(schedule.K, steps)
        S, B, dev, dt = len(self.ts), self.B, self.device, dtype
        self.clip = None if clip is None else (clip[0].to(dev), clip[1].to(dev))

        # buffers
        self.cond = torch.zeros(B, cond_dim, device=dev, dtype=dt)
        self.cond2 = torch.zeros(2 * B, cond_dim, device=dev, dtype=dt)
        self.x_T = torch.zeros(B, *self.x_shape, device=dev, dtype=dt)
        self.noisy = sampler == "ddpm" and self.temperature > 0 and S > 1
        self.noise = torch.zeros(S - 1 if self.noisy else 0, B, *self.x_shape, device=dev, dtype=dt)

        # timesteps and CFG masks (cfg_eps makes them per call; here once)
        self.ks = [torch.full((B,), t, dtype=torch.long, device=dev) for t in self.ts]
        self.ks2 = [torch.cat([k, k]) for k in self.ks]
        self.mask_all = torch.ones(B, device=dev, dtype=dt) if self.w == 1.0 else torch.zeros(B, device=dev, dtype=dt)
        self.mask2 = torch.cat([torch.ones(B, device=dev, dtype=dt), torch.zeros(B, device=dev, dtype=dt)])

        # energy guidance: scale * sigma_k and the time embedding of every step
        self.energy = energy if (energy is not None and float(energy_scale) > 0) else None
        self.grad: Optional[Callable] = None
        if self.energy is not None:
            scale = float(energy_scale)
            self.e_coef = []
            for k in self.ks:
                _, sigma = schedule.alpha_sigma(k)
                self.e_coef.append(scale * sigma.to(dt).view((-1,) + (1,) * len(self.x_shape)))
            if analytic_energy and AnalyticEnergyGrad.supported(self.energy):
                self.grad = AnalyticEnergyGrad(self.energy)
                self.temb = [sinusoidal_embedding(self.energy._time(k, self.x_T), self.energy.time_embed)
                             for k in self.ks]
            else:
                self.grad = None  # autograd (eager only)
        self._coefficients()

    @property
    def capturable(self) -> bool:
        return self.energy is None or self.grad is not None

    # -- coefficients: ld.diffusion.samplers.coefficients, the samplers' own ---------------------------------

    def _coefficients(self) -> None:
        c = coefficients(self.schedule, self.ts, self.name, self.temperature, self.device, self.dtype)
        for name, value in c.items():
            setattr(self, name, value)

    # -- inputs (outside the graph) ----------------------------------------------------------------------

    def load(self, cond: Tensor, generator: Optional[torch.Generator], b: Optional[int] = None) -> None:
        """Copy s_1 [b, cond_dim] into rows :b and draw x_T (+ DDPM's step noise) exactly as `sample` does."""
        b = cond.shape[0] if b is None else b
        if b > self.B:
            raise ValueError(f"batch {b} exceeds this sampler's static batch {self.B}")
        self.cond[:b].copy_(cond)
        self.cond2[:self.B].copy_(self.cond)
        self.cond2[self.B:].copy_(self.cond)
        shape = (b, *self.x_shape)
        self.x_T[:b].copy_(self._randn(shape, generator))
        if self.name != "ddpm" and self.temperature != 1.0:  # as `sample`: ODE samplers scale x_T by sqrt(alpha)
            self.x_T[:b].mul_(self.temperature ** 0.5)
        for i in range(self.noise.shape[0]):
            self.noise[i, :b].copy_(self._randn(shape, generator))

    def _randn(self, shape, generator) -> Tensor:
        gen_device = generator.device if generator is not None else self.device
        return torch.randn(shape, generator=generator, device=gen_device, dtype=self.dtype)

    # -- the loop (graph-capturable) ---------------------------------------------------------------------

    def _eps(self, x: Tensor, i: int) -> Tensor:
        B = self.B
        if self.w in (0.0, 1.0):
            eps = self.prior(x, self.ks[i], self.cond, self.mask_all)
        else:
            out = self.prior(torch.cat([x, x]), self.ks2[i], self.cond2, self.mask2)
            eps_c, eps_u = out[:B], out[B:]
            eps = eps_u + self.w * (eps_c - eps_u)
        if self.energy is None:
            return eps
        if self.grad is not None:
            g = self.grad(x, self.cond, self.temb[i])
        else:
            g = energy_grad(self.energy, x, self.cond, self.ks[i])
        return eps - self.e_coef[i] * g

    def _x0(self, x: Tensor, eps: Tensor, i: int) -> Tensor:
        x0 = (x - self.s[i] * eps) / self.a[i]
        if self.clip is None:
            return x0
        return torch.maximum(torch.minimum(x0, self.clip[1]), self.clip[0])

    def body(self) -> Tensor:
        x = self.x_T
        n = len(self.ts)
        if self.name == "ddpm":
            for i in range(n):
                eps = self._eps(x, i)
                x0 = self._x0(x, eps, i)
                x = self.c_x0[i] * x0 + self.c_xt[i] * x
                if i < n - 1 and self.noisy:
                    x = x + self.std[i] * self.noise[i]
            return x
        if self.name == "ddim":
            for i in range(n):
                eps = self._eps(x, i)
                x0 = self._x0(x, eps, i)
                if self.clip is not None:
                    eps = (x - self.a[i] * x0) / self.s[i]
                x = self.a_prev[i] * x0 + self.s_prev[i] * eps
            return x
        x0_prev = None
        for i in range(n - 1):
            eps = self._eps(x, i)
            x0 = self._x0(x, eps, i)
            D = x0 if x0_prev is None else self.c_cur[i] * x0 - self.c_prev[i] * x0_prev
            x = self.ratio[i] * x + self.phi[i] * D
            x0_prev = x0
        eps = self._eps(x, n - 1)
        return self._x0(x, eps, n - 1)

    def __call__(self, cond: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Eager convenience: x_0 [b, N, C] for cond [b, cond_dim] (b must equal the static batch)."""
        if cond.shape[0] != self.B:
            raise ValueError(f"cond has {cond.shape[0]} rows; this sampler is static at {self.B}")
        self.load(cond, generator)
        with torch.no_grad():
            return self.body().clone()


# ----------------------------------------------------------------------------------------------------
# the whole decision: sample -> decode -> energy -> inverse dynamics


class FastPlanRunner:
    """One static batch of `Planner.plan`: a StaticSampler plus the decoding, optionally in one CUDA graph."""

    def __init__(self, planner: "Planner", batch: int, mode: str):
        cfg = planner.cfg
        self.planner, self.B, self.mode = planner, int(batch), mode
        self.N = planner.candidates
        obs_dim = planner.normalizer["states"].dim
        self.u = torch.zeros(self.B, device=planner.device)  # resample's uniforms, one per observation
        self.sampler = StaticSampler(
            planner.prior, planner.prior.schedule, planner.x_shape, obs_dim, self.B * self.N,
            guidance_scale=cfg.guidance_scale, temperature=cfg.temperature, sampler=cfg.sampler.name,
            steps=cfg.sampling_steps, energy=planner.energy,
            energy_scale=cfg.energy.scale if planner.guided else 0.0,
            clip=planner.prior.standardizer.bounds(), device=planner.device)
        if mode in ("graph", "compile") and not self.sampler.capturable:
            raise ValueError("this energy model is not Linear/SiLU: its gradient needs autograd, which the "
                             "fast path does not capture; use fast='eager' or fast=False")
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.outputs: Optional[dict[str, Tensor]] = None
        self._fn = self._body
        if mode == "compile":
            self._fn = torch.compile(self._body, mode="reduce-overhead", dynamic=False)

    def _body(self) -> dict[str, Tensor]:
        p, cond = self.planner, self.sampler.cond
        x0 = self.sampler.body()
        return decode_tail(p.codec, p.prior.standardizer.back(x0), cond, p.cfg.energy.target,
                           **p.tail_kwargs(self.u))

    def _capture(self) -> None:
        stream = torch.cuda.Stream(device=self.planner.device)
        stream.wait_stream(torch.cuda.current_stream(self.planner.device))
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm-up: cuDNN/cuBLAS autotuning and workspace allocation happen here
                self._body()
        torch.cuda.current_stream(self.planner.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.outputs = self._body()

    def run(self, s1: Tensor, generator: Optional[torch.Generator]) -> dict[str, Tensor]:
        b = s1.shape[0]
        self.sampler.load(self.planner.repeat(s1), generator, b * self.N)
        u = self.planner.uniforms(b)  # after the sampling noise, as Planner.plan draws it
        if u is not None:
            self.u[:b].copy_(u)
        if self.mode == "graph":
            if self.graph is None:
                self._capture()  # warm-up and capture only read the buffers loaded above
            self.graph.replay()
            out = self.outputs
        else:
            with torch.no_grad():
                out = self._fn()
        return {k: v[:b] for k, v in out.items()}


def fast_plan(planner: "Planner", obs: np.ndarray) -> "Plan":
    """`Planner.plan` through the static path (what `Planner(fast=...)` calls)."""
    t0 = time.perf_counter()
    mode = resolve_mode(planner.fast, planner.device)
    runners = planner.__dict__.setdefault("_fast_runners", {})
    s1 = planner.normalize_obs(obs)
    b = s1.shape[0]
    B = b if mode == "eager" else bucket(b)
    runner = runners.get(B)
    if runner is None:
        runner = runners[B] = FastPlanRunner(planner, B, mode)
    out = runner.run(s1, planner.generator)
    return to_plan(planner.normalizer, out, t0, clone=True)
