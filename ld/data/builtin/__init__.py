"""Built-in datasets generated from real gymnasium MuJoCo environments, written in D4RL's HDF5 layout.

    make(name, out, episodes=None, seed=0)      generate and write `out` (atomic), return its path
    ensure(name, data_dir, episodes=None, seed=0)  cached: data_dir/<name>-s<seed>-e<episodes>-v<version>.hdf5

Families:
- `pointmaze-{umaze,medium,large}` (maze.py): D4RL maze2d-style waypoint-controller data on
  PointMaze_*-v3, sparse reward relative to one fixed evaluation goal, fixed evaluation start.
- `halfcheetah-{medium,medium-replay,medium-expert}` (locomotion.py): a TD3 agent trained by the project
  itself on HalfCheetah-v5 (no pretrained weights; td3.py), checkpointed at a medium and an expert level and
  cached under `<data_dir>/policies/`; datasets built like D4RL's.

Every file carries a `DatasetInfo` (env id, reset options, reference scores measured in the real env, the
behavior policy, generator version, seed, sizes and timings) in its `ld_info` attribute.

`LD_BUILTIN_FAST=1` (or `fast=True`) shrinks locomotion policy training to a few hundred steps (for tests;
the files get a `-fast` suffix in `ensure`'s cache so they never pass for real data).
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ld.data.types import DataError

from . import locomotion, maze

# 2: HalfCheetah data rolls out the behavior policies shipped with ld (td3.SHIPPED), the same on every machine
GENERATOR_VERSION = "2"

MAZE_NAMES = tuple(maze.MAZES)
LOCOMOTION_NAMES = tuple(locomotion.DATASETS)
BUILTIN_NAMES: tuple[str, ...] = MAZE_NAMES + LOCOMOTION_NAMES
DEFAULT_EPISODES: dict[str, int] = {
    **{k: v.default_episodes for k, v in maze.MAZES.items()},
    **{k: v for k, v in locomotion.DEFAULT_EPISODES.items()},
}


def _check_name(name: str) -> None:
    if name not in BUILTIN_NAMES:
        raise DataError(f"unknown built-in dataset {name!r}; available: {', '.join(BUILTIN_NAMES)}")


def fast_mode(fast: Optional[bool] = None) -> bool:
    """`fast` if given, else the LD_BUILTIN_FAST environment variable (1/true/yes)."""
    if fast is not None:
        return bool(fast)
    return os.environ.get("LD_BUILTIN_FAST", "").strip().lower() in ("1", "true", "yes", "on")


def make(
    name: str,
    out: Path | str,
    episodes: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
    *,
    max_episode_steps: Optional[int] = None,
    policy_dir: Optional[Path | str] = None,
    fast: Optional[bool] = None,
) -> Path:
    """Generate the built-in dataset `name` and write it to `out` (D4RL layout, atomic). Returns `out`.

    episodes: number of episodes (default DEFAULT_EPISODES[name]); max_episode_steps: shorter episodes (tests;
    also what the metadata's evaluation env uses); policy_dir: where locomotion policies are cached
    (default `out.parent / "policies"`); fast: tiny policy-training budget (default: LD_BUILTIN_FAST).
    """
    from ld.data.hdf5 import write_d4rl_hdf5

    _check_name(name)
    if episodes is not None and episodes < 1:
        raise DataError(f"episodes must be >= 1, got {episodes}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise DataError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
    out = Path(out)
    t0 = time.perf_counter()
    if name in MAZE_NAMES:
        arrays, info, infos = maze.generate(
            name, episodes=episodes, seed=seed, max_episode_steps=max_episode_steps, progress=progress
        )
    else:
        arrays, info, infos = locomotion.generate(
            name,
            episodes=episodes,
            seed=seed,
            max_episode_steps=max_episode_steps,
            progress=progress,
            policy_dir=Path(policy_dir) if policy_dir is not None else out.parent / "policies",
            fast=fast_mode(fast),
        )
    info.generator_version = GENERATOR_VERSION
    info.extra["generation_seconds_total"] = round(time.perf_counter() - t0, 2)
    return write_d4rl_hdf5(out, **arrays, info=info, infos=infos)


def cache_path(
    name: str,
    data_dir: Path | str,
    episodes: Optional[int] = None,
    seed: int = 0,
    *,
    max_episode_steps: Optional[int] = None,
    fast: Optional[bool] = None,
) -> Path:
    _check_name(name)
    e = episodes or DEFAULT_EPISODES[name]
    stem = f"{name}-s{seed}-e{e}"
    if max_episode_steps is not None:
        stem += f"-t{max_episode_steps}"
    if name in LOCOMOTION_NAMES and fast_mode(fast):
        stem += "-fast"
    return Path(data_dir) / f"{stem}-v{GENERATOR_VERSION}.hdf5"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on `path` (created if missing); released on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure(
    name: str,
    data_dir: Path | str,
    episodes: Optional[int] = None,
    seed: int = 0,
    *,
    progress: bool = True,
    max_episode_steps: Optional[int] = None,
    fast: Optional[bool] = None,
) -> Path:
    """The cached file of `name` in `data_dir`, generated once. Concurrent callers (threads or processes on
    one file system) wait on a lock file; the HDF5 itself is written to a temp file and renamed, so a
    half-written file is never visible."""
    path = cache_path(name, data_dir, episodes, seed, max_episode_steps=max_episode_steps, fast=fast)
    if path.exists():
        return path
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            return path
        return make(
            name,
            path,
            episodes=episodes,
            seed=seed,
            progress=progress,
            max_episode_steps=max_episode_steps,
            policy_dir=Path(data_dir) / "policies",
            fast=fast,
        )


__all__ = [
    "BUILTIN_NAMES",
    "DEFAULT_EPISODES",
    "GENERATOR_VERSION",
    "MAZE_NAMES",
    "LOCOMOTION_NAMES",
    "make",
    "ensure",
    "cache_path",
    "fast_mode",
]
