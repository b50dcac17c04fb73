"""Built-in datasets generated from real gymnasium MuJoCo environments, written in D4RL's HDF5 layout.

    make(name, out, episodes=None, seed=0)      generate and write `out` (atomic), return its path
    ensure(name, data_dir, episodes=None, seed=0)  cached: data_dir/<name>-s<seed>-e<episodes>-v<version>.hdf5

Families:
- `pointmaze-{umaze,medium,large}` (maze.py): D4RL maze2d-style waypoint-controller data on
  PointMaze_*-v3, sparse reward relative to one fixed evaluation goal, fixed evaluation start.
- `{halfcheetah,hopper,walker2d}-{medium,medium-replay,medium-expert,expert}` (locomotion.py): D4RL's recipes
  on the v5 environments, rolled out from TD3 policies the project trained to convergence itself (td3.py) and
  ships (behavior.py, `policies/`), scored with D4RL's reference scores.

Every file carries a `DatasetInfo` (env id, reset options, reference scores measured in the real env, the
behavior policy, generator version, seed, sizes and timings) in its `ld_info` attribute.

`LD_BUILTIN_FAST=1` (or `fast=True`) trains a few hundred steps of locomotion policies instead of loading the
shipped ones (for tests; the files get a `-fast` suffix in `ensure`'s cache so they never pass for real data).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from ld.data.types import DataError

from . import locomotion, maze

# 2: HalfCheetah data rolls out the behavior policies shipped with ld (td3.SHIPPED), the same on every machine
# 3: D4RL's definitions on HalfCheetah, Hopper and Walker2d: converged TD3 experts, medium at D4RL's fraction of
#    the expert, D4RL's score scale, fixed-point actors (the same bytes on every machine); v2's 942-return
#    "expert" and its sets are retired
GENERATOR_VERSION = "3"

# The generator version since which each family's data is made as it is today; data of an older version was
# made by a retired recipe, and a figure or table of it is history (rows record `dataset_generator_version`;
# rows written before that column existed count as version 0).
CURRENT_SINCE = {"maze": 0, "locomotion": 3}

MAZE_NAMES = tuple(maze.MAZES)
LOCOMOTION_NAMES = tuple(locomotion.DATASETS)
BUILTIN_NAMES: tuple[str, ...] = MAZE_NAMES + LOCOMOTION_NAMES
DEFAULT_EPISODES: dict[str, Optional[int]] = {  # None: the whole stream (medium-replay)
    **{k: v.default_episodes for k, v in maze.MAZES.items()},
    **{k: v for k, v in locomotion.DEFAULT_EPISODES.items()},
}


def retired(name: str, version: Optional[str | int | float]) -> bool:
    """True if built-in `name` data made by generator `version` (None or NaN: not recorded) came from a retired
    recipe: the HalfCheetah sets before version 3, whose "expert" ran at 942 and scored against itself."""
    family = "locomotion" if name.split("-")[0] in locomotion.ENVS else "maze"
    try:
        v = int(float(version)) if version is not None else 0
    except ValueError:  # NaN (not recorded in a Parquet column) or not a number
        v = 0
    return v < CURRENT_SINCE[family]


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
    policy_file: Optional[Path | str] = None,
) -> Path:
    """Generate the built-in dataset `name` and write it to `out` (D4RL layout, atomic). Returns `out`.

    episodes: number of episodes (default DEFAULT_EPISODES[name]); max_episode_steps: shorter episodes (tests;
    also what the metadata's evaluation env uses); policy_dir: where locomotion policies are cached
    (default `out.parent / "policies"`); fast: tiny policy-training budget (default: LD_BUILTIN_FAST);
    policy_file: roll out these locomotion policies instead (a file in the shipped format, behavior.ship).
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
            policy_file=Path(policy_file) if policy_file is not None else None,
        )
    info.generator_version = GENERATOR_VERSION
    info.extra["generation_seconds_total"] = round(time.perf_counter() - t0, 2)
    fp = _fingerprint(arrays, info)
    info.extra["fingerprint"] = fp
    expected = expected_fingerprint(name, episodes, seed, max_episode_steps, fast_mode(fast) or policy_file is not None)
    if expected is not None:
        info.extra["fingerprint_expected"] = expected
        if fp != expected and not os.environ.get("LD_ALLOW_FINGERPRINT_MISMATCH"):
            raise DataError(_mismatch_message(name, fp, expected))
    return write_d4rl_hdf5(out, **arrays, info=info, infos=infos)


# The fingerprints of the built-in data at its default size and seed 0, made with the README's install
# (constraints.txt pins the simulator). `make` checks a default-size generation against them, so a machine that
# would silently build other data says so instead. {"generator_version": ..., "datasets": {name: {episodes,
# fingerprint}}}
FINGERPRINTS_FILE = Path(__file__).with_name("fingerprints.json")


def expected_fingerprint(name: str, episodes: Optional[int], seed: int, max_episode_steps: Optional[int],
                         other_policies: bool) -> Optional[str]:
    if seed != 0 or max_episode_steps is not None or other_policies or not FINGERPRINTS_FILE.exists():
        return None
    table = json.loads(FINGERPRINTS_FILE.read_text())
    entry = table.get("datasets", {}).get(name)
    if table.get("generator_version") != GENERATOR_VERSION or entry is None:
        return None
    if (episodes or DEFAULT_EPISODES[name]) != entry.get("episodes"):
        return None
    return str(entry["fingerprint"])


def _fingerprint(arrays: dict, info) -> str:
    from ld.data.fingerprint import fingerprint
    from ld.data.hdf5 import split_episodes
    from ld.data.types import EpisodeDataset

    keys = ("observations", "actions", "rewards", "terminals", "timeouts")
    return fingerprint(EpisodeDataset(episodes=split_episodes(*(arrays[k] for k in keys)), info=info))


def _mismatch_message(name: str, got: str, want: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "not installed"

    return (f"builtin:{name} generated here has fingerprint {got}, not {want}, the one this generator "
            f"(v{GENERATOR_VERSION}) makes with the README's install; installed here: mujoco {ver('mujoco')}, "
            f"gymnasium {ver('gymnasium')}, numpy {ver('numpy')} (constraints.txt pins the simulator: "
            f"`make setup`, or `pip install -c constraints.txt -e .`). Nothing was written. To use the data "
            f"anyway (its scores will not match other machines'), set LD_ALLOW_FINGERPRINT_MISMATCH=1.")


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
    stem = f"{name}-s{seed}-e{e or 'all'}"
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
