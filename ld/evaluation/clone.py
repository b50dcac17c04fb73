"""Copy one environment's simulator state into another of the same spec, so a rollout from the copy is the
rollout the original would have made (what `bench/planner_ceilings.py` plans with: behavior futures and
candidate plans executed in a copy of the real episode's simulator).

`copy_state(src, dst)`: both made by `ld.envs.make_env` from the same `DatasetInfo` (same env id, kwargs and
maze), `dst` reset at least once. It copies

- the whole MuJoCo `MjData` (`mujoco.mj_copyData`: qpos, qvel, act, time, warm starts and every derived
  quantity), so the next `mj_step` of `dst` is bit for bit the one of `src` (`set_state(qpos, qvel)` alone
  recomputes derived quantities and drops the solver's warm start, which can change the last bits);
- a goal env's goal (PointMaze / AntMaze: `goal`, `reset_pos`, and the target site the goal is drawn at);
- the random generators of the env and of its inner MuJoCo env (a continuing maze that redraws its goal uses
  them in `step`);
- the wrappers' step counters (`TimeLimit._elapsed_steps`), so the copy truncates where the original would.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np


def mujoco_env(env: gym.Env):
    """The object that owns the MuJoCo `model` and `data` of `env` (the unwrapped env, or a goal env's inner
    MuJoCo env such as PointMaze's `point_env`)."""
    u = env.unwrapped
    for owner in (u, getattr(u, "point_env", None), getattr(u, "ant_env", None)):
        if owner is not None and hasattr(owner, "data") and hasattr(owner, "model"):
            return owner
    raise TypeError(f"{type(u).__name__} has no MuJoCo model/data to copy")


def _wrappers(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _copy_rng(src, dst) -> None:
    rng = getattr(src, "_np_random", None)
    if rng is not None:
        dst._np_random = copy.deepcopy(rng)


def copy_state(src: gym.Env, dst: gym.Env) -> None:
    """Make `dst` continue exactly as `src` would (see the module doc). `dst` must have been reset once."""
    import mujoco

    sm, dm = mujoco_env(src), mujoco_env(dst)
    if sm.model.nq != dm.model.nq or sm.model.nv != dm.model.nv or sm.model.na != dm.model.na:
        raise ValueError("copy_state: the two envs do not simulate the same model")
    mujoco.mj_copyData(dm.data, sm.model, sm.data)
    su, du = src.unwrapped, dst.unwrapped
    for name in ("goal", "reset_pos"):
        if isinstance(getattr(su, name, None), np.ndarray):
            setattr(du, name, getattr(su, name).copy())
    if hasattr(du, "target_site_id") and hasattr(du, "goal"):  # where the goal is drawn (model, not data)
        dm.model.site_pos[du.target_site_id] = sm.model.site_pos[su.target_site_id]
    _copy_rng(su, du)
    if dm is not du:
        _copy_rng(sm, dm)
    # wrappers paired by class, not position: an env of a batch carries a wrapper more (make_env_batch's
    # seeding) than a scratch env, and a positional pairing would leave the copy's time-limit counter running
    # on from its own earlier rollouts (it then truncated every behavior future early)
    srcs = _wrappers(src)
    for b in _wrappers(dst):
        a = next((w for w in srcs if type(w) is type(b)), None)
        for name in ("_elapsed_steps", "_has_reset"):
            if a is not None and hasattr(a, name) and hasattr(b, name):
                setattr(b, name, getattr(a, name))


def scratch_env(info, max_episode_steps=None) -> gym.Env:
    """A second env of `info`'s spec, reset once so that `copy_state` can write into it."""
    from ld.envs import make_env

    env = make_env(info, max_episode_steps=max_episode_steps)
    env.reset(seed=0)
    return env
