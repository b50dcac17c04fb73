"""The behavior policies of the built-in locomotion data: chosen from a finished TD3 run, shipped with ld, loaded.

D4RL's definitions, on each environment's own run (td3.py):
- expert: the converged policy, the best of the run's last snapshots after re-evaluation on `SELECT_EPISODES`
  deterministic episodes (a one-number learning curve over 5 episodes is noisy: a cheetah can flip);
- medium: the snapshot before the expert whose re-evaluated raw return is closest to MEDIUM_FRACTION of the
  expert's, the ratio of D4RL's own medium data to its expert data (halfcheetah 4770 / 10656 = 0.45, hopper
  1422 / 3511 = 0.40, walker2d 2852 / 4921 = 0.58), searched among the snapshots whose curve lies between
  BAND[0] and BAND[1] of the expert's return;
- medium-replay: the run's replay stream up to the medium snapshot, regenerated from its snapshots
  (`td3.replay_stream`), so the file ships the actors up to medium rather than the buffer.

A shipped file `policies/<env>-td3-s<seed>.pt` (weights_only) holds the expert, the medium, the replay
snapshots, the learning curve and what the selection measured. `load_policies` returns it; in fast mode (tests)
it trains a few hundred steps of the same code into `policy_dir` and ships that instead, so the whole path from
training to data runs in the test suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from ld.data.types import DataError

from . import td3
from .actor import NumpyActor

SHIPPED = Path(__file__).with_name("policies")
MEDIUM_FRACTION: dict[str, float] = {"halfcheetah": 0.45, "hopper": 0.40, "walker2d": 0.58}
BAND = (0.25, 0.75)
SELECT_EPISODES = 10
SELECT_SEED = 20_000_000
EXPERT_CANDIDATES = 8
MEDIUM_CANDIDATES = 8


def policy_file(policy_dir: Path, env: str, seed: int, fast: bool = False) -> Path:
    return Path(policy_dir) / f"{env}-td3-s{seed}{'-fast' if fast else ''}.pt"


def _shipped(env: str = "*") -> list[Path]:
    """The policy files in SHIPPED for `env` (a glob; every environment by default), fast-mode ones excluded."""
    return sorted(p for p in SHIPPED.glob(f"{env}-td3-s[0-9]*.pt") if not p.stem.endswith("-fast"))


def shipped_file(env: str) -> Optional[Path]:
    """The one policy file ld ships for `env` (`<env>-td3-s<training seed>.pt`), or None. Which training seed
    ships is a property of the environment, not of the data: a TD3 seed that stalls (Walker2d seed 0 stood still
    at ~900 for 300k steps) is replaced by another, and every data seed rolls out the shipped policies."""
    files = _shipped(env)
    if len(files) > 1:
        raise DataError(f"more than one behavior policy file ships for {env}: {', '.join(p.name for p in files)}; "
                        f"keep one")
    return files[0] if files else None


def shipped_envs() -> list[str]:
    """The environments whose behavior policies ship with ld."""
    return sorted({p.name.split("-td3-")[0] for p in _shipped()})


def evaluate(sd: dict[str, Any], max_action: float, env, episodes: int = SELECT_EPISODES) -> float:
    rets, _ = td3.run_episodes(NumpyActor(sd, max_action), episodes, SELECT_SEED, env)
    return float(rets.mean())


def select(curve: dict[int, float], reeval, fraction: float) -> tuple[int, int, dict[str, Any]]:
    """(expert step, medium step, what was measured) from the learning `curve` {step: return} and `reeval(step)`
    (the return of that snapshot on the selection episodes). See the module doc."""
    measured: dict[int, float] = {}

    def ret(s: int) -> float:
        if s not in measured:
            measured[s] = float(reeval(s))
        return measured[s]

    steps = sorted(curve)
    top = sorted(steps, key=lambda s: (-curve[s], s))[:EXPERT_CANDIDATES]
    expert = max(top, key=lambda s: (ret(s), -s))
    target = fraction * ret(expert)
    lo, hi = BAND[0] * ret(expert), BAND[1] * ret(expert)
    band = [s for s in steps if s < expert and lo <= curve[s] <= hi] or [s for s in steps if s < expert] or [expert]
    cands = sorted(band, key=lambda s: (abs(curve[s] - target), s))[:MEDIUM_CANDIDATES]
    medium = min(cands, key=lambda s: (abs(ret(s) - target), s))
    return expert, medium, {
        "medium_fraction": fraction,
        "target_medium_return": float(target),
        "measured_steps": sorted(measured),
        "measured_returns": [measured[s] for s in sorted(measured)],
        "select_episodes": SELECT_EPISODES,
    }


def ship(run_dir: Path, out: Optional[Path] = None, select_episodes: int = SELECT_EPISODES) -> dict[str, Any]:
    """Choose the expert and medium of a finished run and write the shipped policy file (default:
    SHIPPED/<env>-td3-s<seed>.pt). Returns what was written."""
    import json

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    env_name, seed = meta["env"], int(meta["seed"])
    snaps = td3.load_snapshots(run_dir)
    rows = td3.read_curve(run_dir)
    curve = {int(r["step"]): r["return_mean"] for r in rows if int(r["step"]) in snaps}
    if not curve:
        raise DataError(f"{run_dir} has no snapshots with a learning curve: nothing to ship")
    env = td3.make_env(env_name)
    max_a = float(env.action_space.high[0])
    try:
        expert, medium, selection = select(
            curve, lambda s: evaluate(snaps[s], max_a, env, select_episodes), MEDIUM_FRACTION[env_name])
    finally:
        env.close()
    state_wall = None
    if (run_dir / "state.pt").exists():
        import torch

        state_wall = float(torch.load(run_dir / "state.pt", weights_only=True)["wall_s"])
    result = {
        "format": 3,
        "env": env_name,
        "env_id": td3.ENVS[env_name],
        "seed": seed,
        "max_action": max_a,
        "config": meta["td3"],
        "trained_steps": max(snaps),
        "expert": snaps[expert],
        "medium": snaps[medium],
        "expert_step": expert,
        "medium_step": medium,
        # the actors that filled the buffer up to medium (td3.replay_stream); keyed by str(step) for weights_only
        "replay_snapshots": {str(s): sd for s, sd in snaps.items() if s < medium},
        "curve_steps": [int(r["step"]) for r in rows],
        "curve_returns": [float(r["return_mean"]) for r in rows],
        "curve_stds": [float(r["return_std"]) for r in rows],
        "selection": selection,
        "train_seconds": state_wall,
    }
    replaces = out is None  # one shipped file per environment: this run replaces another seed's
    out = Path(out) if out is not None else policy_file(SHIPPED, env_name, seed)
    td3._atomic_torch_save(result, out)
    if replaces:
        for other in _shipped(env_name):
            if other != out:
                other.unlink()
    return result


def load_policies(env: str, seed: int, policy_dir: Path, fast: bool = False, progress: bool = True) -> dict[str, Any]:
    """The behavior policies ld ships for `env` (whatever the data seed: it seeds the rollouts, not the
    policies); in fast mode, a tiny run of training seed `seed` trained (once) and shipped into `policy_dir`.
    Unshipped policies are an error that says how to make them: training to convergence takes hours and is not
    started behind a data loader's back."""
    import torch

    from . import file_lock

    if not fast:
        path = shipped_file(env)
        if path is None:
            have = [p.stem for p in _shipped()]
            raise DataError(
                f"no behavior policies for {env} ship with ld (shipped: {', '.join(have) or 'none'}); "
                f"train them (hours on a CPU) with `python scripts/train_behavior.py {env}` and "
                f"ship them with `python scripts/ship_behavior.py bench/behavior/{env}-s0`")
        return torch.load(path, weights_only=True)
    path = policy_file(policy_dir, env, seed, fast=True)
    if not path.exists():
        with file_lock(path.with_name(path.name + ".lock")):
            if not path.exists():
                run = Path(policy_dir) / f"{env}-td3-s{seed}-fast-run"
                td3.train(env, run, seed=seed, cfg=td3.TD3Config.fast(), progress=progress)
                ship(run, path, select_episodes=1)
                (run / "buffer.npz").unlink(missing_ok=True)
    return torch.load(path, weights_only=True)


def replay_arrays(pol: dict[str, Any], max_episode_steps: Optional[int] = None,
                  progress: bool = False) -> dict[str, np.ndarray]:
    """The medium-replay stream of a shipped policy file: the run's own buffer as `td3.replay_stream` regenerates
    it (the run's seed, so a resumed training and the data see the same stream)."""
    cfg = pol["config"]
    snaps = {int(k): v for k, v in pol["replay_snapshots"].items()}
    return td3.replay_stream(snaps, float(pol["max_action"]), int(pol["medium_step"]), int(pol["seed"]), pol["env"],
                             int(cfg["start_steps"]), float(cfg["expl_noise"]), progress=progress,
                             max_episode_steps=max_episode_steps)


__all__ = ["SHIPPED", "MEDIUM_FRACTION", "load_policies", "ship", "select", "replay_arrays", "policy_file",
           "shipped_file", "shipped_envs"]
