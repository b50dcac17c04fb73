"""Planning = energy-guided sampling, then decoding, then receding-horizon control.

`Planner.plan(obs[B])` draws one sequence per observation from the prior, tilted by the trained energy
(score = prior score with classifier-free guidance + energy.scale * grad f_eta), decodes it to a state
trajectory and returns the first action. With `planning.candidates` N > 1 it draws N per observation in the
same batch and keeps one by its decoded energy, or by an IQL critic's Q of its first action (`planning.selection`,
`ld.planning.plan.select`).
`RecedingHorizonPolicy` keeps each episode's current plan and replans every `eval.replan_every` steps; between
replans it tracks the planned states with the inverse dynamics on the pair `planning.execution` names (default
f(s_t(actual), s_{t+1}(planned)), which closes the loop on the real state; `ld.planning.plan.pair`).

With `guided=False` (or beta = 0) the same object is the unguided behavior prior: the baseline every
evaluation reports beside the method.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from ld.config import Config
from ld.data.normalizer import DatasetNormalizer
from ld.diffusion.guided import draw
from ld.planning.fast import fast_plan
from ld.planning.plan import Plan, decode_tail, pair, to_plan
from ld.stages import critic as critic_stage
from ld.stages import dag
from ld.stages import energy as energy_stage
from ld.stages import prior as prior_stage
from ld.stages import vae as vae_stage
from ld.stages.artifact import Artifact


class Planner:
    def __init__(self, cfg: Config, artifacts: dict[str, Artifact], guided: bool = True,
                 device: torch.device | str = "cpu", seed: int = 0, fast: bool | str = False):
        self.cfg = cfg
        self.fast = fast  # opt-in static/CUDA-graph path (ld.planning.fast): True/"auto", "graph", "compile", "eager"
        self.device = torch.device(device)
        codec_art = artifacts[dag.stage_for(cfg, "codec").name]
        self.codec = vae_stage.load_codec(codec_art).to(self.device)
        self.normalizer = DatasetNormalizer.from_state_dict(codec_art.load_json("normalizer"))
        prior_art = artifacts[dag.stage_for(cfg, "prior").name]
        self.prior = prior_stage.load(prior_art).to(self.device)  # network, schedule and standardizer
        self.x_shape = self.prior.x_shape
        self.guided = guided and cfg.guided
        self.energy = None
        if self.guided:
            self.energy = energy_stage.load(artifacts[dag.stage_for(cfg, "energy").name]).to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        pc = cfg.planning
        self.candidates, self.selection, self.execution = pc.candidates, pc.selection, pc.execution
        self.selection_beta = float(cfg.beta if pc.selection_beta is None else pc.selection_beta)
        self.critic = None
        if dag.uses_critic(cfg):
            q = critic_stage.load(artifacts[dag.CRITIC.name]).to(self.device)
            # the codec's normalized (s, a) -> environment units, as affine constants made once (a CUDA graph
            # captures the call: no host-to-device copies inside it)
            ns, na = self.normalizer["states"], self.normalizer["actions"]
            ss, sm, as_, am = (torch.as_tensor(v, dtype=torch.float32, device=self.device)
                               for v in (ns.std, ns.mean, na.std, na.mean))
            self.critic = lambda s, a: q(s * ss + sm, a * as_ + am)

    def tail_kwargs(self, u: Optional[torch.Tensor]) -> dict:
        """`decode_tail`'s selection and execution arguments (shared with the fast path)."""
        return dict(candidates=self.candidates, selection=self.selection, beta=self.selection_beta, u=u,
                    execution=self.execution, critic=self.critic)

    def uniforms(self, b: int) -> Optional[torch.Tensor]:
        """One uniform per observation for `resample`, drawn after the sampling noise (None when unused, so
        N = 1 and argmin draw exactly what the single-sample planner draws)."""
        if self.candidates > 1 and self.selection == "resample":
            return torch.rand(b, generator=self.generator, device=self.generator.device).to(self.device)
        return None

    def repeat(self, s1: torch.Tensor) -> torch.Tensor:
        """s_1 [B, obs] -> [B * N, obs], observation-major: the conditions of the N candidates of each row."""
        return s1 if self.candidates == 1 else s1.repeat_interleave(self.candidates, dim=0)

    def normalize_obs(self, obs: np.ndarray) -> torch.Tensor:
        s = self.normalizer.normalize("states", np.asarray(obs, dtype=np.float32))
        return torch.as_tensor(s, dtype=torch.float32, device=self.device)

    def inverse_dynamics(self, obs: np.ndarray, target_states: torch.Tensor) -> np.ndarray:
        """Actions [B, act] (environment units) that move each obs towards its planned next state."""
        with torch.no_grad():
            a = self.codec.inverse_dynamics(self.normalize_obs(obs), target_states)
        return self.normalizer.unnormalize("actions", a.cpu().numpy())

    def track(self, obs: np.ndarray, plans: torch.Tensor, step: np.ndarray) -> np.ndarray:
        """Actions [B, act] (environment units) at plan step `step` [B] of `plans` [B, T, obs] from the real
        obs [B, obs], on the pair `planning.execution` names (between replans)."""
        with torch.no_grad():
            s = self.normalize_obs(obs)
            i = torch.as_tensor(step, device=plans.device)
            a = self.codec.inverse_dynamics(*pair(s, plans, i, self.execution))
        return self.normalizer.unnormalize("actions", a.cpu().numpy())

    def plan(self, obs: np.ndarray) -> Plan:
        if self.fast:
            return fast_plan(self, obs)
        t0 = time.perf_counter()
        cond = self.repeat(self.normalize_obs(obs))
        x0 = draw(
            self.prior, self.prior.schedule, cond, self.x_shape,
            guidance_scale=self.cfg.guidance_scale, temperature=self.cfg.temperature,
            sampler=self.cfg.sampler.name, steps=self.cfg.sampling_steps,
            energy=self.energy, energy_scale=self.cfg.energy.scale if self.guided else 0.0,
            generator=self.generator, clip=self.prior.standardizer.bounds(),
        )
        u = self.uniforms(len(obs))
        with torch.no_grad():
            out = decode_tail(self.codec, self.prior.standardizer.back(x0), cond, self.cfg.energy.target,
                              **self.tail_kwargs(u))
        return to_plan(self.normalizer, out, t0)


class RecedingHorizonPolicy:
    """Batched closed-loop control from a planner: replan every `replan_every` steps, track in between."""

    def __init__(self, planner: Planner, replan_every: int, action_low=None, action_high=None):
        self.planner = planner
        self.replan_every = max(1, int(replan_every))
        self.low, self.high = action_low, action_high
        self.plans: Optional[torch.Tensor] = None  # [n, T, obs]
        self.age: Optional[np.ndarray] = None
        self.decisions = 0
        self.plan_ms = 0.0
        self.last: dict[str, np.ndarray] = {}

    def reset(self, n: int) -> None:
        self.plans = None
        self.age = np.full(n, -1, dtype=np.int64)
        self.pred_return_last = np.full(n, np.nan)  # of each episode's latest decision
        self.energy_last = np.full(n, np.nan)
        self._pred_sum, self._energy_sum = np.zeros(n), np.zeros(n)
        self.episode_decisions = np.zeros(n, dtype=np.int64)

    @property
    def pred_return(self) -> np.ndarray:
        """Q(s_1, a_1) of each episode's plans, averaged over its decisions (NaN before the first)."""
        return self._pred_sum / np.where(self.episode_decisions > 0, self.episode_decisions, np.nan)

    @property
    def energy(self) -> np.ndarray:
        """The decoded energy E of each episode's plans, averaged over its decisions."""
        return self._energy_sum / np.where(self.episode_decisions > 0, self.episode_decisions, np.nan)

    def plan_for(self, obs: np.ndarray, ids: np.ndarray) -> Plan:
        """The new plans of the episodes `ids` at their observations `obs`: the planner's. A subclass may plan
        otherwise and keep this class's execution (bench/planner_ceilings.py: plans from cloned simulators)."""
        return self.planner.plan(obs)

    def act(self, obs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """obs [b, obs] of the live episodes `ids` (indices into the batch given to reset)."""
        assert self.age is not None, "call reset(n) first"
        # a plan covers the raw window T in every modeling selection (N latents x L, or T raw steps)
        stale = (self.age[ids] < 0) | (self.age[ids] >= min(self.replan_every, self.planner.cfg.horizon - 1))
        actions = np.zeros((len(ids), self.planner.normalizer["actions"].dim), dtype=np.float64)
        if stale.any():
            sel = ids[stale]
            plan = self.plan_for(obs[stale], sel)
            if self.plans is None:
                self.plans = torch.zeros(len(self.age), *plan.states.shape[1:], device=plan.states.device)
            self.plans[torch.as_tensor(sel, device=plan.states.device)] = plan.states
            self.age[sel] = 0
            self.pred_return_last[sel] = plan.predicted_return
            self.energy_last[sel] = plan.energy
            self._pred_sum[sel] += plan.predicted_return
            self._energy_sum[sel] += plan.energy
            self.episode_decisions[sel] += 1
            actions[stale] = plan.actions
            self.decisions += 1
            self.plan_ms += plan.milliseconds
        fresh = ~stale
        if fresh.any():
            sel = ids[fresh]
            rows = torch.as_tensor(sel, device=self.plans.device)
            actions[fresh] = self.planner.track(obs[fresh], self.plans[rows], self.age[sel])
        self.age[ids] += 1
        if self.low is not None:
            actions = np.clip(actions, self.low, self.high)
        return actions
