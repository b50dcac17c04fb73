"""Built-in locomotion datasets on HalfCheetah-v5, made like D4RL's, from a policy the project trains itself.

Behavior policies: a short TD3 run (Fujimoto et al. 2018; actor and twin critics 256x256 MLPs, CPU, one
gradient step per env step) with no pretrained weights. During training the deterministic actor is evaluated
every `eval_every` steps (one episode) and snapshotted. After training the candidates are re-evaluated on
`select_episodes` episodes (`select_snapshots`): "expert" = the best of the top snapshots, "medium" = the
pre-expert snapshot whose return is closest to MEDIUM_FRACTION of the way from the random policy's return to
the expert's (D4RL's medium policy is about 1/3 to 1/2 of its expert). The result (both actors, the replay buffer up to
the medium snapshot, the learning curve) is cached in `<policy_dir>/halfcheetah-td3-s<seed>[-fast].pt`
(tensors and plain values only, loaded with `weights_only=True`) so it trains once per seed.

Datasets (D4RL's recipes):
- `halfcheetah-medium`: rollouts of the medium actor with Gaussian action noise (std ROLLOUT_NOISE).
- `halfcheetah-medium-replay`: the TD3 replay buffer from the first step up to the medium snapshot (random
  warm-up included, exploration noise as collected); `episodes` keeps the last that many episodes.
- `halfcheetah-medium-expert`: medium rollouts and expert rollouts (same noise), equal halves.

References (measured in the real env, same episode length as the dataset): ref_min = uniformly random actions,
ref_max = the expert actor (deterministic). Every policy's normalized score goes in `info.extra`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ld.data.types import DatasetInfo

ENV_ID = "HalfCheetah-v5"
POLICY_STEM = "halfcheetah-td3"
MEDIUM_FRACTION = 0.4
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


@dataclass
class TD3Config:
    total_steps: int = 60_000
    start_steps: int = 5_000  # uniformly random actions first
    episode_steps: int = 1000  # training episode length (time limit; not a terminal)
    eval_every: int = 1_000
    eval_episodes: int = 1
    batch_size: int = 256
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    expl_noise: float = 0.1
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    select_episodes: int = 3  # episodes per candidate when confirming the medium / expert snapshots

    @classmethod
    def fast(cls) -> "TD3Config":
        """A few hundred steps of the same code, for tests."""
        return cls(total_steps=400, start_steps=150, episode_steps=100, eval_every=100, batch_size=64, hidden=64,
                   select_episodes=1)


def select_snapshots(curve: np.ndarray, rand: float, reeval, top: int = 5) -> tuple[int, int, dict[str, Any]]:
    """(expert index, medium index, what was measured).

    expert: the best of the `top` snapshots of the learning curve after re-evaluation. medium: among the
    snapshots before the expert whose curve value lies within [0.15, 0.75] of the way from random to the
    expert, the one whose re-evaluated return is closest to MEDIUM_FRACTION of the way (D4RL's medium is about
    1/3 to 1/2 of its expert); all pre-expert snapshots if none lies in that band.
    """
    measured: dict[int, float] = {}

    def ret(i: int) -> float:
        if i not in measured:
            measured[i] = reeval(i)
        return measured[i]

    order = [int(i) for i in np.argsort(-curve, kind="stable")[:top]]
    expert = max(order, key=lambda i: (ret(i), -i))
    span = ret(expert) - rand
    lo, hi = rand + 0.15 * span, rand + 0.75 * span
    cands = [i for i in range(expert) if lo <= curve[i] <= hi] or list(range(max(expert, 1)))
    target = rand + MEDIUM_FRACTION * span
    medium = min(cands, key=lambda i: (abs(ret(i) - target), i))
    selection = {
        "random_return": float(rand),
        "target_medium_return": float(target),
        "measured_indices": [int(i) for i in sorted(measured)],
        "measured_returns": [float(measured[i]) for i in sorted(measured)],
    }
    return expert, medium, selection


# ----------------------------------------------------------------------------------------------------
# policies


class NumpyActor:
    """The deterministic TD3 actor evaluated in numpy (fast single-step inference, no torch state)."""

    def __init__(self, state_dict: dict[str, Any], max_action: float = 1.0):
        self.layers = []
        i = 0
        while f"{i}.weight" in state_dict:
            w = np.asarray(state_dict[f"{i}.weight"], dtype=np.float64)
            b = np.asarray(state_dict[f"{i}.bias"], dtype=np.float64)
            self.layers.append((w.T.copy(), b))
            i += 2  # Linear, ReLU, Linear, ReLU, Linear
        self.max_action = max_action

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        h = np.asarray(obs, dtype=np.float64)
        for j, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if j < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return self.max_action * np.tanh(h)


def _mlp(torch, inp: int, out: int, hidden: int):
    nn = torch.nn
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))


def _make_env(max_episode_steps: Optional[int] = None):
    import gymnasium as gym

    return gym.make(ENV_ID, max_episode_steps=max_episode_steps) if max_episode_steps else gym.make(ENV_ID)


def run_episodes(
    policy, episodes: int, seed: int, max_episode_steps: Optional[int] = None, noise: float = 0.0,
    rng: Optional[np.random.Generator] = None, record: bool = False, bar=None, env=None,
) -> tuple[np.ndarray, Optional[dict[str, np.ndarray]]]:
    """Run `episodes` episodes of `policy(obs) -> action` (None = uniform random) with Gaussian action noise.
    Episode i is reset with seed + i. `env`: reuse this env (its own time limit) instead of making one.
    Returns (returns, arrays in D4RL layout if record)."""
    own = env is None
    if own:
        env = _make_env(max_episode_steps)
    rng = rng if rng is not None else np.random.default_rng(seed)
    env.action_space.seed(seed)
    lo, hi = env.action_space.low, env.action_space.high
    rets = np.zeros(episodes)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            if policy is None:
                a = rng.uniform(lo, hi)
            else:
                a = policy(obs)
                if noise > 0:
                    a = a + noise * rng.standard_normal(a.shape)
            a = np.clip(a, lo, hi)
            nobs, r, te, tr, _ = env.step(a)
            rets[i] += r
            done = te or tr
            if record:
                cols["observations"].append(obs)
                cols["actions"].append(a)
                cols["rewards"].append(r)
                cols["terminals"].append(te)
                cols["timeouts"].append(tr and not te)
            obs = nobs
            if bar is not None:
                bar.update(1)
    if own:
        env.close()
    if not record:
        return rets, None
    arrays = {
        "observations": np.asarray(cols["observations"], np.float32),
        "actions": np.asarray(cols["actions"], np.float32),
        "rewards": np.asarray(cols["rewards"], np.float32),
        "terminals": np.asarray(cols["terminals"], bool),
        "timeouts": np.asarray(cols["timeouts"], bool),
    }
    return rets, arrays


# ----------------------------------------------------------------------------------------------------
# TD3


def train_td3(cfg: TD3Config, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train TD3 on ENV_ID; returns a weights_only-loadable dict (see module doc)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small MLPs: one thread is fastest and leaves the other cores alone
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            env = _make_env(cfg.episode_steps)
            eval_env = _make_env(cfg.episode_steps)
            env.action_space.seed(seed)
            od = env.observation_space.shape[0]
            ad = env.action_space.shape[0]
            max_a = float(env.action_space.high[0])
            actor = _mlp(torch, od, ad, cfg.hidden)
            critic1, critic2 = _mlp(torch, od + ad, 1, cfg.hidden), _mlp(torch, od + ad, 1, cfg.hidden)
            actor_t, c1_t, c2_t = copy.deepcopy(actor), copy.deepcopy(critic1), copy.deepcopy(critic2)
            opt_a = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
            opt_c = torch.optim.Adam(list(critic1.parameters()) + list(critic2.parameters()), lr=cfg.lr)
            params = list(actor.parameters()) + list(critic1.parameters()) + list(critic2.parameters())
            tparams = list(actor_t.parameters()) + list(c1_t.parameters()) + list(c2_t.parameters())

            n = cfg.total_steps
            buf_o = np.zeros((n, od), np.float32)
            buf_a = np.zeros((n, ad), np.float32)
            buf_r = np.zeros(n, np.float32)
            buf_o2 = np.zeros((n, od), np.float32)
            buf_term = np.zeros(n, bool)
            buf_tout = np.zeros(n, bool)

            snapshots: list[dict[str, Any]] = []
            curve_steps: list[int] = []
            curve_returns: list[float] = []
            episode = 0
            obs, _ = env.reset(seed=seed)
            bar = tqdm(total=n, desc=f"TD3 {ENV_ID} seed {seed}", unit="step", disable=not progress, mininterval=1.0)
            upd = 0
            for t in range(n):
                if t < cfg.start_steps:
                    a = rng.uniform(-max_a, max_a, ad)
                else:
                    with torch.no_grad():
                        a = max_a * torch.tanh(actor(torch.as_tensor(obs, dtype=torch.float32))).numpy()
                    a = np.clip(a + cfg.expl_noise * max_a * rng.standard_normal(ad), -max_a, max_a)
                nobs, r, te, tr, _ = env.step(a)
                buf_o[t], buf_a[t], buf_r[t], buf_o2[t], buf_term[t] = obs, a, r, nobs, te
                buf_tout[t] = (tr or t == n - 1) and not te
                obs = nobs
                if te or tr:
                    episode += 1
                    obs, _ = env.reset(seed=seed + episode)

                if t + 1 >= cfg.start_steps and t + 1 >= cfg.batch_size:
                    idx = rng.integers(0, t + 1, cfg.batch_size)
                    o = torch.from_numpy(buf_o[idx])
                    ac = torch.from_numpy(buf_a[idx])
                    rw = torch.from_numpy(buf_r[idx]).unsqueeze(1)
                    o2 = torch.from_numpy(buf_o2[idx])
                    nd = torch.from_numpy(1.0 - buf_term[idx].astype(np.float32)).unsqueeze(1)
                    with torch.no_grad():
                        noise = (torch.randn_like(ac) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                        a2 = (max_a * torch.tanh(actor_t(o2)) + noise).clamp(-max_a, max_a)
                        oa2 = torch.cat([o2, a2], 1)
                        target = rw + cfg.gamma * nd * torch.min(c1_t(oa2), c2_t(oa2))
                    oa = torch.cat([o, ac], 1)
                    loss_c = F.mse_loss(critic1(oa), target) + F.mse_loss(critic2(oa), target)
                    opt_c.zero_grad(set_to_none=True)
                    loss_c.backward()
                    opt_c.step()
                    upd += 1
                    if upd % cfg.policy_freq == 0:
                        loss_a = -critic1(torch.cat([o, max_a * torch.tanh(actor(o))], 1)).mean()
                        opt_a.zero_grad(set_to_none=True)
                        loss_a.backward()
                        opt_a.step()
                        with torch.no_grad():
                            torch._foreach_lerp_(tparams, params, cfg.tau)

                if (t + 1) % cfg.eval_every == 0 or t == n - 1:
                    sd = {k: v.detach().clone() for k, v in actor.state_dict().items()}
                    rets, _ = run_episodes(
                        NumpyActor(sd, max_a), cfg.eval_episodes, seed=seed + 777_000, env=eval_env
                    )
                    curve_steps.append(t + 1)
                    curve_returns.append(float(rets.mean()))
                    snapshots.append(sd)
                    bar.set_postfix(eval_return=f"{rets.mean():.0f}")
                bar.update(1)
            bar.close()
            env.close()

            # The 1-episode learning curve is noisy (a cheetah can flip): pick from it, then confirm by
            # re-evaluating the candidates on `select_episodes` episodes each.
            def reeval(i: int) -> float:
                r, _ = run_episodes(NumpyActor(snapshots[i], max_a), cfg.select_episodes, seed=seed + 888_000, env=eval_env)
                return float(r.mean())

            rand_rets, _ = run_episodes(None, cfg.select_episodes, seed=seed + 888_000, env=eval_env)
            rand = float(rand_rets.mean())
            best, medium, selection = select_snapshots(np.asarray(curve_returns), rand, reeval)
            eval_env.close()
            medium_step = curve_steps[medium]
            m = medium_step
            tout = buf_tout[:m].copy()
            tout[m - 1] = not buf_term[m - 1]
            return {
                "config": asdict(cfg),
                "seed": seed,
                "env_id": ENV_ID,
                "max_action": max_a,
                "expert": snapshots[best],
                "medium": snapshots[medium],
                "expert_step": curve_steps[best],
                "medium_step": medium_step,
                "curve_steps": torch.tensor(curve_steps),
                "curve_returns": torch.tensor(curve_returns, dtype=torch.float64),
                "train_random_return": rand,
                "selection": selection,
                "train_seconds": time.perf_counter() - t0,
                "replay": {
                    "observations": torch.from_numpy(buf_o[:m].copy()),
                    "actions": torch.from_numpy(buf_a[:m].copy()),
                    "rewards": torch.from_numpy(buf_r[:m].copy()),
                    "terminals": torch.from_numpy(buf_term[:m].copy()),
                    "timeouts": torch.from_numpy(tout),
                },
            }
    finally:
        torch.set_num_threads(threads)


def policy_path(policy_dir: Path, seed: int, fast: bool) -> Path:
    return Path(policy_dir) / f"{POLICY_STEM}-s{seed}{'-fast' if fast else ''}.pt"


def ensure_policies(policy_dir: Path, seed: int, fast: bool = False, progress: bool = True) -> dict[str, Any]:
    """The cached TD3 result for `seed`, trained (once, under a file lock) if missing."""
    import os
    import tempfile

    import torch

    from . import file_lock

    path = policy_path(policy_dir, seed, fast)
    if not path.exists():
        with file_lock(path.with_name(path.name + ".lock")):
            if not path.exists():
                result = train_td3(TD3Config.fast() if fast else TD3Config(), seed, progress)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                os.close(fd)
                try:
                    torch.save(result, tmp)
                    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache is shared
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
    return torch.load(path, weights_only=True)


# ----------------------------------------------------------------------------------------------------
# datasets


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _episode_returns(arrays: dict[str, np.ndarray]) -> np.ndarray:
    ends = np.flatnonzero(arrays["terminals"] | arrays["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.array([arrays["rewards"][s : e + 1].sum() for s, e in zip(starts, ends)], dtype=np.float64)


def _replay_arrays(pol: dict[str, Any], episodes: Optional[int], max_episode_steps: Optional[int]) -> dict[str, np.ndarray]:
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
    env = _make_env(T)
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
