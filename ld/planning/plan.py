"""What one planning decision returns, and the tail every planning path shares: decode -> energy -> select ->
action.

Both the reference path (`Planner.plan`) and the static / CUDA-graph path (`ld.planning.fast`) end in
`decode_tail`, so the decoding, the trajectory energy, the selection among candidate plans and the
inverse-dynamics action exist once.

Selection (beyond the paper; `planning.candidates` N > 1): each decision samples N plans per observation in
one batch (rows ordered observation-major: rows b*N .. b*N + N - 1 are observation b's candidates), decodes
all of them, and keeps one per observation by its decoded energy E (the codec's -sum_t Q, exact for the
decoded plan; the energy model f_eta is not involved):

- `argmin`: the lowest E;
- `resample`: candidate i with probability softmax(-beta E)_i, drawn by inverse CDF from one uniform u per
  observation (drawn outside, from the planner's generator, so a CUDA graph can replay it). With candidates
  from the prior mu this is self-normalized importance resampling toward Theorem 1's pi* ∝ mu exp(-beta E);
  with candidates from the guided sampler (already ≈ pi*) it tilts them once more.

- `critic`: the highest Q(s_t, a_1) of an IQL critic fitted on the data (`ld.stages.critic`), where a_1 is the
  candidate's first action as executed (the `planning.execution` pair at plan step 0) and s_t the real state:
  IDQL's selection. It ranks what will actually be executed from where the robot actually is, instead of the
  return the candidate's latent claims (-E ranks the prior's candidates no better than chance). Measured at
  `small`, it does not help either: its ranking is about as uninformative (bench/RESULTS.md, "The prior was
  undertrained; selection by an IQL critic does not help").

Execution (`planning.execution`): the pair the inverse dynamics f sees, for plan step i (0 at the decision)
and the real state s_t:

- `real_to_plan`: f(s_t, ŝ_{i+1}) -- what ld has always executed;
- `plan_pair`: f(ŝ_i, ŝ_{i+1}) -- the pair f is trained on in the VAE (â_t = f(ŝ_t, ŝ_{t+1})), open loop
  between replans;
- `real_plus_delta`: f(s_t, s_t + ŝ_{i+1} - ŝ_i) -- the plan's step, applied to the real state.

States are normalized per dimension by an affine map, so a difference of normalized states is the plan's step
in normalized units and adding it to the normalized real state is the same as doing so in environment units.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ld.data.normalizer import DatasetNormalizer
from ld.stages.codec import trajectory_energy

EXECUTIONS = ("real_to_plan", "plan_pair", "real_plus_delta")
SELECTIONS = ("argmin", "resample", "critic")
Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (s, a) normalized as the codec's -> Q [B]


@dataclass
class Plan:
    actions: np.ndarray  # [B, act] first action, environment units
    states: torch.Tensor  # [B, T, obs] planned states (the selected candidate's), normalized
    predicted_return: np.ndarray  # [B] Q(s_1, a_1) in environment return units
    energy: np.ndarray  # [B] E of the planned trajectory (normalized units)
    milliseconds: float  # wall time of this batched call (all candidates included)


def pair(s: torch.Tensor, states: torch.Tensor, i: torch.Tensor | int, execution: str) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(from, to) that the inverse dynamics executes at plan step i (an int, or a [B] tensor of steps) from
    the real states s [B, obs] along the plans `states` [B, T, obs]; a one-step plan targets its only state."""
    T = states.shape[1]
    if isinstance(i, int):  # plain slicing: no host-to-device copy (a CUDA graph captures the decision)
        cur, nxt = states[:, min(i, T - 1)], states[:, min(i + 1, T - 1)]
    else:
        rows = torch.arange(states.shape[0], device=states.device)
        cur = states[rows, i.clamp_max(T - 1)]
        nxt = states[rows, (i + 1).clamp_max(T - 1)]
    if execution == "real_to_plan":
        return s, nxt
    if execution == "plan_pair":
        return cur, nxt
    if execution == "real_plus_delta":
        return s, s + (nxt - cur)
    raise ValueError(f"planning.execution must be one of {', '.join(EXECUTIONS)}, got {execution!r}")


def select(energy: torch.Tensor, selection: str, beta: float = 0.0, u: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Index [B] of the chosen candidate in each row of `energy` [B, N] (no host synchronisation); for
    `critic`, `energy` is -Q of each candidate's first action."""
    if selection in ("argmin", "critic"):
        return energy.argmin(-1)
    if selection == "resample":
        if u is None:
            raise ValueError("resample needs one uniform u per row")
        cdf = torch.softmax(-beta * energy, -1).cumsum(-1)
        return (cdf < u.view(-1, 1)).sum(-1).clamp_max(energy.shape[-1] - 1)
    raise ValueError(f"planning.selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")


def decode_tail(codec, x0: torch.Tensor, cond: torch.Tensor, target: str, *, candidates: int = 1,
                selection: str = "argmin", beta: float = 0.0, u: Optional[torch.Tensor] = None,
                execution: str = "real_to_plan", critic: Optional[Critic] = None) -> dict[str, torch.Tensor]:
    """Sampled sequences x0 [B * N, ...] (codec space, not standardized) conditioned on `cond` [B * N, obs]
    (each s_1 repeated N = `candidates` times, observation-major) -> for each of the B observations the
    selected plan's first action, planned states, Q(s_1, a_1) and trajectory energy, all normalized."""
    decoded = codec.decode(x0, cond)
    energy = trajectory_energy(decoded, target)
    states, q0, s1 = decoded["states"], decoded["q"][:, 0], cond
    actions = None
    if candidates > 1:
        B = cond.shape[0] // candidates
        score = energy
        if selection == "critic":  # the critic scores what each candidate would execute: its first action
            if critic is None:
                raise ValueError("planning.selection=critic needs the critic stage's Q (none was given)")
            actions = codec.inverse_dynamics(*pair(cond, states, 0, execution))
            score = -critic(cond, actions)
        idx = select(score.view(B, candidates), selection, beta, u)
        rows = torch.arange(B, device=idx.device) * candidates + idx
        states, q0, energy, s1 = states[rows], q0[rows], energy[rows], cond[rows]
        actions = None if actions is None else actions[rows]
    if actions is None:  # E-based selection: the selected plans' actions only
        actions = codec.inverse_dynamics(*pair(s1, states, 0, execution))
    return {"actions": actions, "states": states, "q0": q0, "energy": energy}


def to_plan(normalizer: DatasetNormalizer, out: dict[str, torch.Tensor], t0: float, clone: bool = False) -> Plan:
    """The tail's tensors in environment units, timed from `t0` (perf_counter)."""
    actions = out["actions"].cpu().numpy()  # the one host synchronisation of the decision
    q0 = normalizer.unnormalize("returns", out["q0"].cpu().numpy())
    return Plan(
        actions=normalizer.unnormalize("actions", actions),
        states=out["states"].clone() if clone else out["states"],
        predicted_return=np.asarray(q0, dtype=float),
        energy=out["energy"].cpu().numpy().astype(float),
        milliseconds=(time.perf_counter() - t0) * 1000.0,
    )
