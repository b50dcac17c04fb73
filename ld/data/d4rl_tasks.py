"""D4RL task names -> the gymnasium environment used to evaluate them, plus D4RL's reference scores.

Caveat: the environments named here are the *maintained successors* of D4RL's (gymnasium's MuJoCo v5
locomotion envs, gymnasium-robotics' PointMaze v3 / AntMaze v5 / AdroitHand v1). They are not
bit-identical to D4RL's gym v2 / mujoco-py environments: dynamics constants, observation layouts and
maze coordinate frames differ in places, so a score obtained in them and normalized with D4RL's reference
constants is comparable in spirit, not exactly. Known observation differences (recorded per task in
`DatasetInfo.extra["d4rl_obs_dim"]` / `["env_obs_dim"]` so the evaluation code can refuse a mismatch):

- ant-*: D4RL files have 111-dim observations (27 + 84 contact forces); Ant-v5 gives 105 by default.
- antmaze-*: D4RL observations are 29-dim (qpos incl. x, y + qvel); AntMaze v5's `observation` is 27-dim
  (x, y are in `achieved_goal`).
- maze2d-*: both are 4-dim (x, y, vx, vy), but gymnasium-robotics centres the maze at the origin while D4RL
  uses cell coordinates, and D4RL evaluates with a fixed goal cell; gymnasium samples the goal unless
  `reset_options` fixes it (left empty here).
- Adroit: D4RL v0/v1 and AdroitHand*-v1 share dims (pen 45, hammer 46, door 39, relocate 39). The reference
  CSV only has `-v0` adroit rows; D4RL uses the same constants for v1, so v1 tasks take the v0 row
  (recorded in `extra["ref_scores_from"]`).

`task_info(name) -> DatasetInfo | None` is the single entry point; `TASKS` lists the mapped names.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Optional

from ld.data.types import DatasetInfo


@dataclass(frozen=True)
class TaskSpec:
    env_id: str
    max_episode_steps: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    success_key: Optional[str] = None
    d4rl_obs_dim: Optional[int] = None
    env_obs_dim: Optional[int] = None
    observation_key: Optional[str] = None  # dict observation spaces: which key is the state


_LOCO = {  # name: (env id, D4RL obs dim, env obs dim)
    "hopper": ("Hopper-v5", 11, 11),
    "halfcheetah": ("HalfCheetah-v5", 17, 17),
    "walker2d": ("Walker2d-v5", 17, 17),
    "ant": ("Ant-v5", 111, 105),
}
_LOCO_LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay")

_MAZE2D = {"umaze": ("PointMaze_UMaze-v3", 300), "medium": ("PointMaze_Medium-v3", 600),
           "large": ("PointMaze_Large-v3", 800)}

_ANTMAZE = {
    "umaze": ("AntMaze_UMaze-v5", 700),
    "umaze-diverse": ("AntMaze_UMaze-v5", 700),
    "medium-play": ("AntMaze_Medium-v5", 1000),
    "medium-diverse": ("AntMaze_Medium-v5", 1000),
    "large-play": ("AntMaze_Large-v5", 1000),
    "large-diverse": ("AntMaze_Large-v5", 1000),
}

_ADROIT = {  # name: (env id, max steps, obs dim)
    "pen": ("AdroitHandPen-v1", 100, 45),
    "hammer": ("AdroitHandHammer-v1", 200, 46),
    "door": ("AdroitHandDoor-v1", 200, 39),
    "relocate": ("AdroitHandRelocate-v1", 200, 39),
}


def _build_table() -> dict[str, TaskSpec]:
    t: dict[str, TaskSpec] = {}
    for robot, (env_id, d_dim, e_dim) in _LOCO.items():
        for level in _LOCO_LEVELS:
            for v in ("v2",) if level == "full-replay" else ("v0", "v2"):
                t[f"{robot}-{level}-{v}"] = TaskSpec(env_id, 1000, d4rl_obs_dim=d_dim, env_obs_dim=e_dim)
    for size, (env_id, steps) in _MAZE2D.items():
        for suffix, kw in (("", {"reward_type": "sparse"}), ("-dense", {"reward_type": "dense"})):
            t[f"maze2d-{size}{suffix}-v1"] = TaskSpec(
                env_id, steps, env_kwargs={"continuing_task": True, **kw}, success_key="success",
                d4rl_obs_dim=4, env_obs_dim=4, observation_key="observation",
            )
    for name, (env_id, steps) in _ANTMAZE.items():
        for v in ("v0", "v2"):
            t[f"antmaze-{name}-{v}"] = TaskSpec(
                env_id, steps, env_kwargs={"continuing_task": True}, success_key="success",
                d4rl_obs_dim=29, env_obs_dim=27, observation_key="observation",
            )
    for name, (env_id, steps, dim) in _ADROIT.items():
        for level in ("human", "cloned", "expert"):
            for v in ("v0", "v1"):
                t[f"{name}-{level}-{v}"] = TaskSpec(env_id, steps, success_key="success",
                                                    d4rl_obs_dim=dim, env_obs_dim=dim)
    return t


TASKS: dict[str, TaskSpec] = _build_table()


@lru_cache(maxsize=1)
def reference_scores() -> dict[str, tuple[float, float]]:
    """D4RL's published (ref_min_score, ref_max_score) per task, from the packaged CSV."""
    out: dict[str, tuple[float, float]] = {}
    text = resources.files("ld.data").joinpath("d4rl_reference_scores.csv").read_text()
    for row in csv.DictReader(text.splitlines()):
        out[row["task"].strip()] = (float(row["ref_min_score"]), float(row["ref_max_score"]))
    return out


def _ref_row(task: str) -> Optional[str]:
    refs = reference_scores()
    if task in refs:
        return task
    # Adroit v1 uses the same constants as v0 in D4RL; the CSV only lists v0.
    if task.endswith("-v1") and task.split("-")[0] in _ADROIT:
        v0 = task[:-3] + "-v0"
        if v0 in refs:
            return v0
    return None


def is_known_task(name: Optional[str]) -> bool:
    return bool(name) and (name in TASKS or name in reference_scores())


def task_info(name: Optional[str]) -> Optional[DatasetInfo]:
    """A fresh `DatasetInfo` for a known D4RL task name (env, kwargs, limits, reference scores), else None.

    A task that is only in the reference CSV (e.g. `maze2d-open-v0`) gets its scores but `env_id=None`.
    """
    if not is_known_task(name):
        return None
    assert name is not None
    spec = TASKS.get(name)
    row = _ref_row(name)
    ref = reference_scores().get(row) if row else None
    extra: dict[str, Any] = {"d4rl_task": name}
    if row and row != name:
        extra["ref_scores_from"] = row
    if spec is not None:
        if spec.d4rl_obs_dim is not None:
            extra["d4rl_obs_dim"] = spec.d4rl_obs_dim
        if spec.env_obs_dim is not None:
            extra["env_obs_dim"] = spec.env_obs_dim
        if spec.observation_key:
            extra["observation_key"] = spec.observation_key
    return DatasetInfo(
        name=name,
        source=f"d4rl:{name}",
        env_id=spec.env_id if spec else None,
        env_kwargs=copy.deepcopy(spec.env_kwargs) if spec else {},
        max_episode_steps=spec.max_episode_steps if spec else None,
        ref_min_score=ref[0] if ref else None,
        ref_max_score=ref[1] if ref else None,
        success_key=spec.success_key if spec else None,
        extra=extra,
    )
