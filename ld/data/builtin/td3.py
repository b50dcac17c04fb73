"""The behavior policies of the built-in locomotion datasets: TD3 (Fujimoto et al. 2018) trained by the project
itself on HalfCheetah-v5, with no pretrained weights.

Actor and twin critics are 256x256 MLPs, trained on CPU with one gradient step per env step. During training the
deterministic actor is evaluated every `eval_every` steps (one episode) and snapshotted. After training the
candidates are re-evaluated on `select_episodes` episodes (`select_snapshots`): "expert" = the best of the top
snapshots, "medium" = the pre-expert snapshot whose return is closest to MEDIUM_FRACTION of the way from the random
policy's return to the expert's (D4RL's medium policy is about 1/3 to 1/2 of its expert). The result (both actors,
the replay buffer up to the medium snapshot, the learning curve) is cached in
`<policy_dir>/halfcheetah-td3-s<seed>[-fast].pt` (tensors and plain values only, loaded with `weights_only=True`)
so it trains once per seed (`ensure_policies`).

`NumpyActor` runs a cached actor in numpy and `run_episodes` rolls a policy out in the plain gymnasium env; the
dataset recipes built from them are in `locomotion.py`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

ENV_ID = "HalfCheetah-v5"
POLICY_STEM = "halfcheetah-td3"
MEDIUM_FRACTION = 0.4


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
    return nn.Sequential(
        nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out)
    )


def make_gym_env(max_episode_steps: Optional[int] = None):
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
        env = make_gym_env(max_episode_steps)
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
            env = make_gym_env(cfg.episode_steps)
            eval_env = make_gym_env(cfg.episode_steps)
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
                r, _ = run_episodes(NumpyActor(snapshots[i], max_a), cfg.select_episodes, seed=seed + 888_000,
                                    env=eval_env)
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


# Behavior policies shipped with ld (package data). TD3 on a CPU is not bit-reproducible across machines
# (the BLAS kernels differ), and its result decides the data: the same `halfcheetah-medium-expert`, seed 0,
# generated on three machines had behavior means of 61.8, 66.5 and 80.2. With the policies (and the replay
# buffer medium-replay is cut from) shipped, every machine rolls out the same policies; the rollouts also
# depend on the simulator (mujoco 3.17.0 and 4.0.0 give different medium-expert data from the same policies),
# which `make setup` pins in constraints.txt. A seed without a shipped file is trained here as before.
SHIPPED = Path(__file__).with_name("policies")


def shipped_policy(seed: int, fast: bool) -> Optional[Path]:
    path = policy_path(SHIPPED, seed, fast)
    return path if path.is_file() else None


def ensure_policies(policy_dir: Path, seed: int, fast: bool = False, progress: bool = True) -> dict[str, Any]:
    """The TD3 result for `seed`: the shipped one if ld has it, else cached, else trained (once, under a file
    lock) and cached."""
    import os
    import tempfile

    import torch

    from . import file_lock

    shipped = shipped_policy(seed, fast)
    if shipped is not None:
        return torch.load(shipped, weights_only=True)
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
