"""Batched evaluation: N episodes in the dataset's real environment, one batched policy call per step.

All episodes start together and only live ones are stepped, so a planner sees one `act` call per
environment step for every episode still running. Normalized scores use the dataset's reference scores
(D4RL's constants for D4RL tasks, measured random / behavior references for built-in data).

Those references are full-episode returns. An evaluation capped below the environment's own limit
(`eval.max_steps`, the smoke preset) is normalized against references prorated to the same length
(`DatasetInfo.references`), and every row records the limit it ran under (`episode_limit`, `capped`) and the
references used, so a capped run never reads as a bad full-episode score. An episode that ends in a terminal
state (a Hopper or Walker2d fall) is finished, not capped: its row says `terminated` and its score uses the
full-episode references like any other full-limit episode.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Optional, Protocol

import numpy as np
from tqdm.auto import tqdm

from ld.data.types import DatasetInfo
from ld.envs import make_env_batch


class BatchPolicy(Protocol):
    def reset(self, n: int) -> None: ...

    def act(self, obs: np.ndarray, ids: np.ndarray) -> np.ndarray: ...


@dataclass
class EpisodeResult:
    episode: int
    env_seed: int
    episode_return: float
    normalized_score: float
    length: int
    success: bool
    plan_ms_per_decision: float
    env_steps_per_s: float
    predicted_return: float  # the planner's Q(s_1, a_1), averaged over the episode's decisions
    energy: float  # the decoded energy E of its plans, averaged over the episode's decisions
    episode_limit: int = 0  # the step limit this episode ran under
    capped: bool = False  # True if that limit is below the environment's own
    ref_min_score: float = float("nan")  # the references its normalized score used
    ref_max_score: float = float("nan")
    # the episode ended in a terminal state (a Hopper or Walker2d fall): finished, not cut by a limit
    terminated: bool = False
    predicted_return_last: float = float("nan")  # the same two at the episode's last decision
    energy_last: float = float("nan")
    decisions: int = 0  # plans the episode executed from (0 for a policy that does not plan)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    policy: BatchPolicy,
    info: DatasetInfo,
    episodes: int,
    seed: int,
    max_steps: Optional[int] = None,
    progress: bool = True,
    desc: str = "eval",
) -> list[EpisodeResult]:
    env_seed = 10_000 * (seed + 1)  # disjoint from the data generators' seeds
    batch = make_env_batch(info, episodes, seed=env_seed, max_episode_steps=max_steps)
    obs = batch.reset(seed=env_seed)
    if hasattr(policy, "attach"):  # a policy that reads the simulators (bench/planner_ceilings.py clones them)
        policy.attach(batch)
    low, high = batch.envs[0].action_space.low, batch.envs[0].action_space.high
    policy.reset(episodes)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    terminated = np.zeros(episodes, dtype=bool)
    limit = max_steps or info.max_episode_steps or 1000
    t0 = time.perf_counter()
    bar = tqdm(total=limit, desc=desc, leave=False, disable=not progress, mininterval=1.0)
    try:
        while batch.live.any():
            ids = np.flatnonzero(batch.live)
            actions = np.zeros((episodes, low.shape[0]))
            actions[ids] = np.clip(policy.act(obs[ids], ids), low, high)
            obs, rew, term, _, _ = batch.step(actions)
            terminated[ids] |= term[ids]
            returns[ids] += rew[ids]
            lengths[ids] += 1
            bar.update(1)
            bar.set_postfix(live=int(batch.live.sum()), ret=f"{returns.mean():.1f}")
    finally:
        bar.close()
        batch.close()
    wall = time.perf_counter() - t0
    decisions = max(1, getattr(policy, "decisions", 0))
    plan_ms = getattr(policy, "plan_ms", 0.0) / decisions
    nans = np.full(episodes, np.nan)
    pred, energy = getattr(policy, "pred_return", nans), getattr(policy, "energy", nans)
    pred_last, energy_last = getattr(policy, "pred_return_last", nans), getattr(policy, "energy_last", nans)
    n_plans = getattr(policy, "episode_decisions", np.zeros(episodes, dtype=np.int64))
    lo, hi, capped = info.references(limit)
    norm = np.asarray(info.normalize(returns, limit), dtype=float).reshape(-1)
    sps = float(lengths.sum() / wall) if wall > 0 else float("nan")
    nan = float("nan")
    return [
        EpisodeResult(i, env_seed + i, float(returns[i]), float(norm[i]), int(lengths[i]), bool(batch.success[i]),
                      float(plan_ms), sps, float(pred[i]), float(energy[i]), int(limit), capped,
                      nan if lo is None else float(lo), nan if hi is None else float(hi), bool(terminated[i]),
                      predicted_return_last=float(pred_last[i]), energy_last=float(energy_last[i]),
                      decisions=int(n_plans[i]))
        for i in range(episodes)
    ]
