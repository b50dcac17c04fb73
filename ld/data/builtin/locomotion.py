"""Built-in locomotion datasets made like D4RL's: HalfCheetah, Hopper and Walker2d (v5), each `-medium`,
`-medium-replay`, `-medium-expert` and `-expert`, from behavior policies the project trained itself with TD3 to
convergence (td3.py) and ships (behavior.py), scored on D4RL's scale.

Recipes (D4RL's):
- `-medium`: rollouts of the medium policy with Gaussian action noise (std ROLLOUT_NOISE);
- `-expert`: rollouts of the expert policy, same noise;
- `-medium-expert`: medium rollouts and expert rollouts, equal halves (medium first);
- `-medium-replay`: the training run's replay stream from its first step up to the medium snapshot (random
  warm-up included, exploration noise as collected), regenerated from the shipped snapshots; `episodes` keeps
  the last that many episodes of it.
Hopper and Walker2d episodes end when the robot falls (a terminal, not a time-out).

Scores: D4RL's reference min/max for the environment (`ld/data/d4rl_reference_scores.csv`: random and expert
returns of D4RL's own policies), so a built-in score sits beside the paper's tables (on v5 environments, the
maintained successors of D4RL's v2: compare with that caveat). What every behavior policy scores here (random,
medium, expert, with and without the rollout noise) is measured at generation and stored in `info.extra`.

Every rollout is the same on every machine: the policies run in integer fixed point (actor.py), the noise and
resets are seeded, and the simulator is pinned (constraints.txt). `FINGERPRINTS` (fingerprints.json) records
the data's fingerprint for the default sizes and the sizes the tests regenerate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from ld.data.types import DataError, DatasetInfo

from . import behavior, td3
from .actor import NumpyActor

ROLLOUT_NOISE = 0.1
FULL_EPISODE = 1000  # the v5 locomotion time limit, and the length D4RL's references are returns over
REF_EPISODES = 10
KINDS = ("medium", "medium-replay", "medium-expert", "expert")
ENVS = tuple(td3.ENVS)
# name -> (env, kind)
DATASETS: dict[str, tuple[str, str]] = {f"{e}-{k}": (e, k) for e in ENVS for k in KINDS}
# Default sizes keep a `small` trial near its old time: 100 episodes (<= 100k transitions, 10% of D4RL's 1M;
# medium-expert 50 + 50). medium-replay: the whole stream up to the medium snapshot (None = no cap).
DEFAULT_EPISODES: dict[str, Optional[int]] = {
    name: (None if kind == "medium-replay" else 100) for name, (_, kind) in DATASETS.items()
}


def d4rl_references(env: str) -> tuple[float, float]:
    """D4RL's (ref_min_score, ref_max_score) for `env` (the same constants for every data kind and version)."""
    from ld.data.d4rl_tasks import reference_scores

    refs = reference_scores()
    for task in (f"{env}-medium-v2", f"{env}-medium-v0"):
        if task in refs:
            return refs[task]
    raise KeyError(f"D4RL reference scores for {env} are missing from d4rl_reference_scores.csv")


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _episode_returns(arrays: dict[str, np.ndarray]) -> np.ndarray:
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.array([arrays["rewards"][s : e + 1].sum() for s, e in zip(starts, ends)], dtype=np.float64)


def _last_episodes(arrays: dict[str, np.ndarray], episodes: Optional[int]) -> dict[str, np.ndarray]:
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    if episodes and len(ends) > episodes:
        first = ends[-episodes - 1] + 1
        return {k: v[first:] for k, v in arrays.items()}
    return arrays


def generate(
    name: str,
    episodes: Optional[int] = None,
    seed: int = 0,
    max_episode_steps: Optional[int] = None,
    progress: bool = True,
    policy_dir: Path = Path("policies"),
    fast: bool = False,
    policy_file: Optional[Path] = None,
) -> tuple[dict[str, np.ndarray], DatasetInfo, dict[str, np.ndarray]]:
    """Arrays (D4RL layout), info and per-step infos of `name`. The policies: `policy_file` if given, else the
    shipped ones (fast: trained tiny into `policy_dir`)."""
    import torch
    from tqdm.auto import tqdm

    env_name, kind = DATASETS[name]
    t0 = time.perf_counter()
    if policy_file is not None:
        pol = torch.load(policy_file, weights_only=True)
        if pol.get("env") != env_name:
            raise DataError(f"{policy_file} holds {pol.get('env')!r} policies, not {env_name!r} ones")
    else:
        pol = behavior.load_policies(env_name, seed, Path(policy_dir), fast=fast, progress=progress)
    max_a = float(pol["max_action"])
    medium = NumpyActor(pol["medium"], max_a)
    expert = NumpyActor(pol["expert"], max_a)
    env = td3.make_env(env_name, max_episode_steps)
    T = int(env.spec.max_episode_steps)
    # D4RL's references are 1000-step returns; a shorter episode gets them prorated (DatasetInfo.references)
    ref_min, ref_max = (r * T / FULL_EPISODE for r in d4rl_references(env_name))
    info = DatasetInfo(
        name=name, source=f"builtin:{name}", env_id=td3.ENVS[env_name], env_kwargs={}, reset_options={},
        max_episode_steps=T, ref_min_score=ref_min, ref_max_score=ref_max, seed=seed,
    )

    # every behavior policy's return here, on the dataset's env (reference episodes, their own seeds)
    ref_seed = seed + 900_000
    returns: dict[str, float] = {}
    for label, actor in (("random", None), ("medium", medium), ("expert", expert)):
        returns[label] = float(run(actor, REF_EPISODES, ref_seed, env).mean())
        if actor is not None:
            returns[f"{label}_noise{ROLLOUT_NOISE}"] = float(run(actor, REF_EPISODES, ref_seed, env,
                                                                 noise=ROLLOUT_NOISE).mean())

    if kind == "medium-replay":
        arrays = _last_episodes(behavior.replay_arrays(pol, max_episode_steps, progress), episodes)
        cfg = pol["config"]
        behavior_text = (
            f"TD3 replay stream (steps 1..{pol['medium_step']}: {cfg['start_steps']} uniformly random, then the "
            f"learning actor's snapshots every {cfg['snapshot_every']} steps + N(0, {cfg['expl_noise']}) "
            f"exploration) up to the medium snapshot"
        )
    else:
        n = episodes or DEFAULT_EPISODES[name] or 100
        plan = {"medium": [("medium", medium, n)], "expert": [("expert", expert, n)],
                "medium-expert": [("medium", medium, (n + 1) // 2), ("expert", expert, n // 2)]}[kind]
        plan = [p for p in plan if p[2] > 0]
        rng = np.random.default_rng(seed * 1_000_003 + 1)
        bar = tqdm(total=sum(p[2] for p in plan) * T, desc=f"{name}: rollouts", unit="step",
                   disable=not progress, mininterval=1.0)
        parts = []
        for j, (_, actor, k) in enumerate(plan):
            _, arr = td3.run_episodes(actor, k, seed * 1_000_003 + 1 + j * 100_000, env, noise=ROLLOUT_NOISE,
                                      rng=rng, record=True, bar=bar)
            parts.append(arr)
        bar.close()
        arrays = _concat(parts)
        behavior_text = " + ".join(f"{k} episodes of the TD3 {lab} actor" for lab, _, k in plan) + (
            f", Gaussian action noise std {ROLLOUT_NOISE}")
    env.close()

    rets = _episode_returns(arrays)
    cfg = pol["config"]
    info.behavior_policy = (
        f"{behavior_text}; TD3 trained by ld on {td3.ENVS[env_name]} for {pol['trained_steps']} steps (seed "
        f"{pol['seed']}, no pretrained weights), medium snapshot at step {pol['medium_step']}, expert at step "
        f"{pol['expert_step']}"
    )
    info.extra.update({
        "episodes": int(len(rets)),
        "transitions": int(arrays["rewards"].shape[0]),
        "terminal_episodes": int(arrays["terminals"].sum()),
        "generation_seconds": round(time.perf_counter() - t0, 2),
        "policy_fast": bool(fast),
        "policy_train_seconds": pol.get("train_seconds"),
        "td3_config": cfg,
        "trained_steps": int(pol["trained_steps"]),
        "medium_step": int(pol["medium_step"]),
        "expert_step": int(pol["expert_step"]),
        "selection": pol["selection"],
        "learning_curve": {"steps": list(pol["curve_steps"]), "returns": list(pol["curve_returns"])},
        "reference_scores": "D4RL" if T == FULL_EPISODE else f"D4RL, prorated to {T} of {FULL_EPISODE} steps",
        "reference_episodes": REF_EPISODES,
        "policy_returns": returns,
        "behavior_policy_normalized_scores": {k: float(info.normalize(v)) for k, v in returns.items()},
        "dataset_mean_return": float(rets.mean()),
        "dataset_normalized_score": float(info.normalize(float(rets.mean()))),
    })
    return arrays, info, {}


def run(actor, episodes: int, seed: int, env, noise: float = 0.0) -> np.ndarray:
    rets, _ = td3.run_episodes(actor, episodes, seed, env, noise=noise)
    return rets

