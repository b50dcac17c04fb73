"""Built-in locomotion datasets on HalfCheetah-v5, made like D4RL's, from a policy the project trains itself.

Behavior policies: a short TD3 run on the same env, no pretrained weights (`td3.py`: its training, the choice of
the medium and expert snapshots and the per-seed policy cache `<policy_dir>/halfcheetah-td3-s<seed>[-fast].pt`).

Datasets (D4RL's recipes):
- `halfcheetah-medium`: rollouts of the medium actor with Gaussian action noise (std ROLLOUT_NOISE).
- `halfcheetah-medium-replay`: the TD3 replay buffer from the first step up to the medium snapshot (random
  warm-up included, exploration noise as collected); `episodes` keeps the last that many episodes.
- `halfcheetah-medium-expert`: medium rollouts and expert rollouts (same noise), equal halves.

References (measured in the real env, same episode length as the dataset): ref_min = uniformly random actions,
ref_max = the expert actor (deterministic). Every policy's normalized score goes in `info.extra`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ld.data.types import DatasetInfo

from .td3 import ENV_ID, NumpyActor, ensure_policies, make_gym_env, run_episodes

ROLLOUT_NOISE = 0.1
REF_EPISODES = 5

# name -> which data it holds
DATASETS: dict[str, str] = {
    "halfcheetah-medium": "medium",
    "halfcheetah-medium-replay": "medium-replay",
    "halfcheetah-medium-expert": "medium-expert",
}
# D4RL has 1000 episodes (1M steps); 100 episodes keeps the default set at minutes on one core.
# medium-replay: a cap on episodes (the whole buffer up to the medium snapshot is smaller than this).
DEFAULT_EPISODES: dict[str, int] = {
    "halfcheetah-medium": 100,
    "halfcheetah-medium-replay": 200,
    "halfcheetah-medium-expert": 100,
}


# ----------------------------------------------------------------------------------------------------
# datasets


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _episode_returns(arrays: dict[str, np.ndarray]) -> np.ndarray:
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.array([arrays["rewards"][s : e + 1].sum() for s, e in zip(starts, ends)], dtype=np.float64)


def _replay_arrays(
    pol: dict[str, Any], episodes: Optional[int], max_episode_steps: Optional[int]
) -> dict[str, np.ndarray]:
    rep = {k: v.numpy().copy() for k, v in pol["replay"].items()}
    if max_episode_steps:  # shorter episodes: cut the buffer's episodes into chunks (time-limit cuts)
        ends = np.flatnonzero(rep["terminals"] | rep["timeouts"])
        starts = np.concatenate([[0], ends[:-1] + 1])
        for s, e in zip(starts, ends):
            cut = np.arange(s + max_episode_steps - 1, e, max_episode_steps)
            rep["timeouts"][cut] = ~rep["terminals"][cut]
    if episodes:
        ends = np.flatnonzero(rep["terminals"] | rep["timeouts"])
        if len(ends) > episodes:
            first = ends[-episodes - 1] + 1
            rep = {k: v[first:] for k, v in rep.items()}
    return rep


def generate(
    name: str,
    episodes: Optional[int] = None,
    seed: int = 0,
    max_episode_steps: Optional[int] = None,
    progress: bool = True,
    policy_dir: Path = Path("policies"),
    fast: bool = False,
) -> tuple[dict[str, np.ndarray], DatasetInfo, dict[str, np.ndarray]]:
    from tqdm.auto import tqdm

    kind = DATASETS[name]
    t0 = time.perf_counter()
    pol = ensure_policies(Path(policy_dir), seed, fast=fast, progress=progress)
    T = max_episode_steps or 1000
    max_a = float(pol["max_action"])
    medium = NumpyActor(pol["medium"], max_a)
    expert = NumpyActor(pol["expert"], max_a)

    # references and every policy's score, measured on the dataset's env (episode length T)
    env = make_gym_env(T)
    ref_seed = seed + 900_000
    r_rand, _ = run_episodes(None, REF_EPISODES, ref_seed, env=env)
    r_exp, _ = run_episodes(expert, REF_EPISODES, ref_seed, env=env)
    r_med, _ = run_episodes(medium, REF_EPISODES, ref_seed, env=env)
    r_med_noisy, _ = run_episodes(medium, REF_EPISODES, ref_seed, env=env, noise=ROLLOUT_NOISE)
    r_exp_noisy, _ = run_episodes(expert, REF_EPISODES, ref_seed, env=env, noise=ROLLOUT_NOISE)
    ref_min, ref_max = float(r_rand.mean()), float(r_exp.mean())

    info = DatasetInfo(
        name=name,
        source=f"builtin:{name}",
        env_id=ENV_ID,
        env_kwargs={},
        reset_options={},
        max_episode_steps=T,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        seed=seed,
    )

    def norm(x: float) -> float:
        return float(info.normalize(x))

    rng = np.random.default_rng(seed)
    data_seed = seed * 1_000_003 + 1
    if kind == "medium-replay":
        arrays = _replay_arrays(pol, episodes or DEFAULT_EPISODES[name], max_episode_steps)
        behavior = (
            f"TD3 replay buffer (steps 1..{pol['medium_step']}: {pol['config']['start_steps']} uniform random, "
            f"then the learning actor + N(0, {pol['config']['expl_noise']}) exploration) up to the medium snapshot"
        )
    else:
        n = episodes or DEFAULT_EPISODES[name]
        if kind == "medium":
            plan = [("medium", medium, n)]
        else:
            plan = [("medium", medium, (n + 1) // 2), ("expert", expert, n // 2)]
        plan = [p for p in plan if p[2] > 0]
        parts = []
        bar = tqdm(total=sum(p[2] for p in plan) * T, desc=f"{name}: rollouts", unit="step",
                   disable=not progress, mininterval=1.0)
        for j, (_, actor, k) in enumerate(plan):
            _, arr = run_episodes(actor, k, data_seed + j * 100_000, noise=ROLLOUT_NOISE, rng=rng,
                                  record=True, bar=bar, env=env)
            parts.append(arr)
        bar.close()
        arrays = _concat(parts)
        behavior = " + ".join(f"{k} episodes of the TD3 {lab} actor" for lab, _, k in plan) + (
            f", Gaussian action noise std {ROLLOUT_NOISE}"
        )
    env.close()
    rets = _episode_returns(arrays)
    cfg = pol["config"]
    info.behavior_policy = (
        f"{behavior}; TD3 trained by ld on {ENV_ID} for {cfg['total_steps']} steps (seed {seed}, no pretrained "
        f"weights), medium snapshot at step {pol['medium_step']}, expert (best) at step {pol['expert_step']}"
    )
    info.extra.update(
        {
            "episodes": int(len(rets)),
            "transitions": int(arrays["rewards"].shape[0]),
            "generation_seconds": round(time.perf_counter() - t0, 2),
            "policy_train_seconds": round(float(pol["train_seconds"]), 2),
            "policy_fast": bool(fast),
            "td3_config": cfg,
            "medium_step": int(pol["medium_step"]),
            "expert_step": int(pol["expert_step"]),
            "learning_curve": {
                "steps": [int(x) for x in pol["curve_steps"].tolist()],
                "returns": [float(x) for x in pol["curve_returns"].tolist()],
            },
            "policy_returns": {
                "random": ref_min,
                "medium": float(r_med.mean()),
                f"medium_noise{ROLLOUT_NOISE}": float(r_med_noisy.mean()),
                "expert": ref_max,
                f"expert_noise{ROLLOUT_NOISE}": float(r_exp_noisy.mean()),
            },
            "behavior_policy_normalized_scores": {
                "random": 0.0,
                "medium": norm(r_med.mean()),
                f"medium_noise{ROLLOUT_NOISE}": norm(r_med_noisy.mean()),
                "expert": 100.0,
                f"expert_noise{ROLLOUT_NOISE}": norm(r_exp_noisy.mean()),
            },
            "dataset_mean_return": float(rets.mean()),
            "dataset_normalized_score": norm(rets.mean()),
            "reference_episodes": REF_EPISODES,
        }
    )
    return arrays, info, {}
