"""TD3 (Fujimoto et al. 2018) for the built-in locomotion behavior policies: trained by the project itself, with
no pretrained weights, checkpointed and resumable, because training to convergence takes CPU-hours.

Hyperparameters are the TD3 authors' (256x256 MLPs, batch 256, Adam 3e-4, one critic step per env step, a
delayed actor step every 2, target smoothing 0.2 clipped at 0.5, exploration N(0, 0.1)), with uniformly
random actions for the first `start_steps`. A terminated episode (Hopper or Walker2d falling) ends the
bootstrap; a time limit does not.

A run lives in one directory (`train(..., out=DIR)`):

    config.json              env, seed, TD3Config (a resume must match it, except total_steps)
    curve.csv                step, mean/std of `eval_episodes` deterministic episodes, wall seconds
    snapshots/actor-STEP.pt  the actor every `snapshot_every` steps (float16, weights_only), evaluated above
    state.pt                 networks, targets, optimizers, RNG states and counters at the last checkpoint
    buffer.npz               the replay buffer at that checkpoint (large; not committed)

Checkpoints are taken at episode boundaries every `checkpoint_every` steps, so resuming restarts no episode
mid-way. Resuming with `buffer.npz` continues the run exactly on the same machine. Without it (a fresh
clone: the buffer is hundreds of MB and is not committed) the buffer is regenerated from the snapshots by
`replay_stream`, which replays the run as it filled the buffer (random actions, then each snapshot with the
exploration noise for the steps it stood for); training then goes on from the saved networks and optimizers.
That same stream up to the medium snapshot is the built-in `-medium-replay` data.
"""

from __future__ import annotations

import bisect
import copy
import csv
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from .actor import NumpyActor

# short name -> gymnasium env id (D4RL's locomotion family on its maintained v5 successors)
ENVS: dict[str, str] = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
EVAL_SEED = 10_000_000  # evaluation episodes are reset with EVAL_SEED + i
REPLAY_SEED_OFFSET = 5_000_000  # the regenerated stream draws its noise from seed + this


@dataclass
class TD3Config:
    total_steps: int = 1_000_000
    start_steps: int = 10_000
    batch_size: int = 256
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    expl_noise: float = 0.1
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    snapshot_every: int = 10_000
    eval_episodes: int = 5
    checkpoint_every: int = 50_000

    @classmethod
    def fast(cls) -> "TD3Config":
        """A few hundred steps of the same code, for tests."""
        return cls(total_steps=600, start_steps=200, batch_size=32, hidden=32, snapshot_every=100,
                   eval_episodes=1, checkpoint_every=300)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TD3Config":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_env(env: str, max_episode_steps: Optional[int] = None):
    import gymnasium as gym

    env_id = ENVS.get(env, env)
    return gym.make(env_id, max_episode_steps=max_episode_steps) if max_episode_steps else gym.make(env_id)


def mlp(torch, inp: int, out: int, hidden: int):
    nn = torch.nn
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


# ----------------------------------------------------------------------------------------------------
# rollouts (numpy actors; the same on every machine, see actor.py)


def run_episodes(
    policy: Optional[Callable[[np.ndarray], np.ndarray]], episodes: int, seed: int, env, noise: float = 0.0,
    rng: Optional[np.random.Generator] = None, record: bool = False, bar=None,
) -> tuple[np.ndarray, Optional[dict[str, np.ndarray]]]:
    """`episodes` episodes of `policy(obs)` (None = uniformly random) with N(0, noise) added, in `env` (its own
    time limit). Episode i is reset with seed + i. Returns (returns, D4RL-layout arrays if record)."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    rets = np.zeros(episodes)
    rec = Recorder() if record else None
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            a = behavior_action(policy, obs, env, noise, rng)
            nobs, r, te, tr, _ = env.step(a)
            rets[i] += r
            done = te or tr
            if rec is not None:
                rec.add(obs, a, r, te, tr)
            obs = nobs
            if bar is not None:
                bar.update(1)
    return rets, (rec.arrays() if rec is not None else None)


def behavior_action(policy, obs, env, noise: float, rng: np.random.Generator) -> np.ndarray:
    lo, hi = env.action_space.low, env.action_space.high
    if policy is None:
        return rng.uniform(lo, hi)
    a = policy(obs)
    if noise > 0:
        a = a + noise * hi * rng.standard_normal(a.shape)
    return np.clip(a, lo, hi)


class Recorder:
    """Transitions in D4RL's layout (timeouts = time limit without termination)."""

    def __init__(self):
        self.cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}

    def add(self, obs, a, r, te: bool, tr: bool) -> None:
        c = self.cols
        c["observations"].append(obs)
        c["actions"].append(a)
        c["rewards"].append(r)
        c["terminals"].append(bool(te))
        c["timeouts"].append(bool(tr and not te))

    def __len__(self) -> int:
        return len(self.cols["rewards"])

    def arrays(self) -> dict[str, np.ndarray]:
        c = self.cols
        return {
            "observations": np.asarray(c["observations"], np.float32),
            "actions": np.asarray(c["actions"], np.float32),
            "rewards": np.asarray(c["rewards"], np.float32),
            "terminals": np.asarray(c["terminals"], bool),
            "timeouts": np.asarray(c["timeouts"], bool),
        }


# ----------------------------------------------------------------------------------------------------
# a run directory


def snapshot_path(out: Path, step: int) -> Path:
    return Path(out) / "snapshots" / f"actor-{step:07d}.pt"


def snapshot_steps(out: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (Path(out) / "snapshots").glob("actor-*.pt"))


def load_snapshot(out: Path, step: int) -> dict[str, Any]:
    import torch

    return torch.load(snapshot_path(out, step), weights_only=True)


def read_curve(out: Path) -> list[dict[str, float]]:
    path = Path(out) / "curve.csv"
    if not path.exists():
        return []
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_snapshots(out: Path, below: Optional[int] = None) -> dict[int, dict[str, Any]]:
    """{step: actor state dict} of a run's snapshots (those before `below` if given)."""
    return {s: load_snapshot(out, s)["actor"] for s in snapshot_steps(out) if below is None or s < below}


def replay_stream(snapshots: Mapping[int, Mapping[str, Any]], max_action: float, upto: int, seed: int,
                  env_name: str, start_steps: int, expl_noise: float, progress: bool = False,
                  max_episode_steps: Optional[int] = None) -> dict[str, np.ndarray]:
    """A run's replay buffer for steps [0, upto), regenerated from its actor `snapshots` ({step: state dict}):
    uniformly random actions for the first `start_steps`, then at step t the latest snapshot at or before t
    with N(0, expl_noise), episodes running on across snapshot changes as they did in training. The last
    episode is cut at `upto` (a time-out, as a buffer's last episode is). The same on every machine (fixed-point
    actors, seeded noise)."""
    from tqdm.auto import tqdm

    steps = sorted(s for s in snapshots if s < upto)
    current: tuple[Optional[int], Optional[NumpyActor]] = (None, None)
    env = make_env(env_name, max_episode_steps)
    rng = np.random.default_rng(seed + REPLAY_SEED_OFFSET)
    rec = Recorder()
    bar = tqdm(total=upto, desc=f"{env_name} replay stream", unit="step", disable=not progress, mininterval=5.0)
    episode = 0
    obs, _ = env.reset(seed=seed + REPLAY_SEED_OFFSET)
    for t in range(upto):
        k = bisect.bisect_right(steps, t)
        snap = steps[k - 1] if t >= start_steps and k else None
        if snap != current[0]:
            current = (snap, NumpyActor(snapshots[snap], max_action) if snap is not None else None)
        a = behavior_action(current[1], obs, env, expl_noise, rng)
        nobs, r, te, tr, _ = env.step(a)
        rec.add(obs, a, r, te, tr or t == upto - 1)
        obs = nobs
        if te or tr:
            episode += 1
            obs, _ = env.reset(seed=seed + REPLAY_SEED_OFFSET + episode)
        bar.update(1)
    bar.close()
    env.close()
    return rec.arrays()


# ----------------------------------------------------------------------------------------------------
# training


def train(env_name: str, out: Path | str, seed: int = 0, cfg: Optional[TD3Config] = None,
          total_steps: Optional[int] = None, progress: bool = True, stop_after_s: Optional[float] = None,
          stop: Optional[Callable[[], bool]] = None) -> Path:
    """Train (or resume) TD3 on `env_name` in `out` up to `total_steps` (default cfg.total_steps).

    A directory with a config.json resumes: its config wins (a different `cfg` is an error), `total_steps` may
    extend it. `stop_after_s`: checkpoint and return at the first episode boundary after this many seconds;
    `stop()` true (e.g. a signal handler's flag) does the same, so that nothing after the last checkpoint is lost.
    Returns `out`."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    out = Path(out)
    if env_name not in ENVS:
        raise ValueError(f"unknown environment {env_name!r}; allowed: {', '.join(ENVS)}")
    cfg_path = out / "config.json"
    if cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        if saved["env"] != env_name or saved["seed"] != seed:
            raise ValueError(f"{out} holds a run of {saved['env']} seed {saved['seed']}, not {env_name} seed {seed}")
        saved_cfg = TD3Config.from_dict(saved["td3"])
        if cfg is not None and asdict(cfg) | {"total_steps": 0} != asdict(saved_cfg) | {"total_steps": 0}:
            raise ValueError(f"{out} was trained with another TD3Config; resume it with its own ({cfg_path})")
        cfg = saved_cfg
    cfg = cfg or TD3Config()
    if total_steps is not None:
        cfg.total_steps = int(total_steps)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps({"env": env_name, "env_id": ENVS[env_name], "seed": seed, "td3": asdict(cfg)},
                                   indent=1) + "\n")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small MLPs: one thread is fastest and leaves the other core alone
    t_start = time.perf_counter()
    try:
        env = make_env(env_name)
        eval_env = make_env(env_name)
        od, ad = env.observation_space.shape[0], env.action_space.shape[0]
        max_a = float(env.action_space.high[0])
        torch.manual_seed(seed)
        actor = mlp(torch, od, ad, cfg.hidden)
        critic = torch.nn.ModuleList([mlp(torch, od + ad, 1, cfg.hidden), mlp(torch, od + ad, 1, cfg.hidden)])
        actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
        opt_a = torch.optim.Adam(actor.parameters(), lr=cfg.lr)
        opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
        params = list(actor.parameters()) + list(critic.parameters())
        tparams = list(actor_t.parameters()) + list(critic_t.parameters())

        n = cfg.total_steps
        buf = {"obs": np.zeros((n, od), np.float32), "act": np.zeros((n, ad), np.float32),
               "rew": np.zeros(n, np.float32), "obs2": np.zeros((n, od), np.float32), "term": np.zeros(n, bool)}
        rng = np.random.default_rng(seed)
        t0, episode, updates, wall0 = 0, 0, 0, 0.0
        state_path = out / "state.pt"
        if state_path.exists():
            st = torch.load(state_path, weights_only=True)
            actor.load_state_dict(st["actor"])
            critic.load_state_dict(st["critic"])
            actor_t.load_state_dict(st["actor_t"])
            critic_t.load_state_dict(st["critic_t"])
            opt_a.load_state_dict(st["opt_a"])
            opt_c.load_state_dict(st["opt_c"])
            torch.set_rng_state(st["torch_rng"])
            rng.bit_generator.state = json.loads(st["numpy_rng"])
            t0, episode, updates, wall0 = int(st["step"]), int(st["episode"]), int(st["updates"]), float(st["wall_s"])
            if t0 > n:
                raise ValueError(f"{out} is already at step {t0} > total_steps {n}")
            _forget_after(out, t0)
            _restore_buffer(out, buf, t0, seed, env_name, cfg, progress)
        t_start -= wall0

        def checkpoint(t: int) -> None:
            np.savez(out / "buffer.tmp.npz", **{k: v[:t] for k, v in buf.items()})
            os.replace(out / "buffer.tmp.npz", out / "buffer.npz")
            _atomic_torch_save({
                "step": t, "episode": episode, "updates": updates, "wall_s": time.perf_counter() - t_start,
                "actor": actor.state_dict(), "critic": critic.state_dict(), "actor_t": actor_t.state_dict(),
                "critic_t": critic_t.state_dict(), "opt_a": opt_a.state_dict(), "opt_c": opt_c.state_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state),
            }, state_path)

        def snapshot(t: int) -> None:
            sd = {k: v.detach().to(torch.float16).clone() for k, v in actor.state_dict().items()}
            _atomic_torch_save({"actor": sd, "max_action": max_a, "step": t}, snapshot_path(out, t))
            rets, _ = run_episodes(NumpyActor(sd, max_a), cfg.eval_episodes, EVAL_SEED, eval_env)
            new = not (out / "curve.csv").exists()
            with open(out / "curve.csv", "a", newline="") as fh:
                w = csv.writer(fh)
                if new:
                    w.writerow(["step", "return_mean", "return_std", "episodes", "wall_s"])
                w.writerow([t, f"{rets.mean():.2f}", f"{rets.std():.2f}", len(rets),
                            f"{time.perf_counter() - t_start:.1f}"])
            bar.set_postfix(eval_return=f"{rets.mean():.0f}")

        bar = tqdm(total=n, initial=t0, desc=f"TD3 {ENVS[env_name]} seed {seed}", unit="step",
                   disable=not progress, mininterval=30.0)
        obs, _ = env.reset(seed=seed + episode)
        last_ckpt = t0
        for t in range(t0, n):
            if t < cfg.start_steps:
                a = rng.uniform(-max_a, max_a, ad)
            else:
                with torch.no_grad():
                    a = max_a * torch.tanh(actor(torch.as_tensor(obs, dtype=torch.float32))).numpy()
                a = np.clip(a + cfg.expl_noise * max_a * rng.standard_normal(ad), -max_a, max_a)
            nobs, r, te, tr, _ = env.step(a)
            buf["obs"][t], buf["act"][t], buf["rew"][t], buf["obs2"][t], buf["term"][t] = obs, a, r, nobs, te
            obs = nobs

            if t + 1 >= cfg.start_steps:
                idx = rng.integers(0, t + 1, cfg.batch_size)
                o, ac, o2 = (torch.from_numpy(buf[k][idx]) for k in ("obs", "act", "obs2"))
                rw = torch.from_numpy(buf["rew"][idx]).unsqueeze(1)
                nd = torch.from_numpy(1.0 - buf["term"][idx].astype(np.float32)).unsqueeze(1)
                with torch.no_grad():
                    noise = (torch.randn_like(ac) * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                    a2 = (max_a * torch.tanh(actor_t(o2)) + noise * max_a).clamp(-max_a, max_a)
                    oa2 = torch.cat([o2, a2], 1)
                    target = rw + cfg.gamma * nd * torch.min(critic_t[0](oa2), critic_t[1](oa2))
                oa = torch.cat([o, ac], 1)
                loss_c = F.mse_loss(critic[0](oa), target) + F.mse_loss(critic[1](oa), target)
                opt_c.zero_grad(set_to_none=True)
                loss_c.backward()
                opt_c.step()
                updates += 1
                if updates % cfg.policy_freq == 0:
                    loss_a = -critic[0](torch.cat([o, max_a * torch.tanh(actor(o))], 1)).mean()
                    opt_a.zero_grad(set_to_none=True)
                    loss_a.backward()
                    opt_a.step()
                    with torch.no_grad():
                        torch._foreach_lerp_(tparams, params, cfg.tau)

            if (t + 1) % cfg.snapshot_every == 0:
                snapshot(t + 1)
            bar.update(1)
            if te or tr:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
                timed_out = (stop_after_s is not None and time.perf_counter() - t_start - wall0 > stop_after_s) or (
                    stop is not None and stop())
                if t + 1 - last_ckpt >= cfg.checkpoint_every or timed_out:
                    checkpoint(t + 1)
                    last_ckpt = t + 1
                if timed_out:
                    break
        else:
            checkpoint(n)
        bar.close()
        env.close()
        eval_env.close()
    finally:
        torch.set_num_threads(threads)
    return out


def _forget_after(out: Path, t0: int) -> None:
    """A run killed after its last checkpoint left snapshots and curve rows past it; the resumed run makes them
    again from the checkpoint, so the old ones go (they came from a trajectory the resume does not repeat)."""
    for s in snapshot_steps(out):
        if s > t0:
            snapshot_path(out, s).unlink()
    rows = read_curve(out)
    if any(r["step"] > t0 for r in rows):
        with open(out / "curve.csv") as fh:
            lines = fh.read().splitlines()
        keep = [lines[0]] + [ln for ln in lines[1:] if int(float(ln.split(",")[0])) <= t0]
        tmp = out / "curve.csv.tmp"
        tmp.write_text("\n".join(keep) + "\n")
        os.replace(tmp, out / "curve.csv")


def _restore_buffer(out: Path, buf: dict[str, np.ndarray], t0: int, seed: int, env_name: str, cfg: TD3Config,
                    progress: bool) -> None:
    path = out / "buffer.npz"
    if path.exists():
        with np.load(path) as z:
            if len(z["rew"]) == t0:
                for k in buf:
                    buf[k][:t0] = z[k]
                return
    # no buffer of this step (a fresh clone): regenerate it from the snapshots (see module doc)
    arr = replay_stream(load_snapshots(out, below=t0 + 1), _max_action(env_name), t0, seed, env_name,
                        cfg.start_steps, cfg.expl_noise, progress=progress)
    ends = arr["terminals"] | arr["timeouts"]
    buf["obs"][:t0] = arr["observations"]
    buf["act"][:t0] = arr["actions"]
    buf["rew"][:t0] = arr["rewards"]
    buf["term"][:t0] = arr["terminals"]
    nxt = np.empty_like(arr["observations"])
    nxt[:-1] = arr["observations"][1:]
    nxt[-1] = arr["observations"][-1]
    # the step after an episode's end is another episode's first observation; those rows never bootstrap through
    # a terminal and a time-out row is a tiny bias, as in any buffer cut at a time limit
    nxt[ends] = arr["observations"][ends]
    buf["obs2"][:t0] = nxt


def _max_action(env_name: str) -> float:
    env = make_env(env_name)
    try:
        return float(env.action_space.high[0])
    finally:
        env.close()
