"""Environments built from a dataset's metadata (`DatasetInfo`), shared by built-in data generation
(`ld.data.builtin`) and evaluation (`ld.evaluation`).

`make_env(info)` returns a gymnasium env whose observation is a flat `Box` laid out exactly like the
dataset's observations:

- MuJoCo locomotion (`Hopper-v5`, `HalfCheetah-v5`, `Walker2d-v5`, `Ant-v5`, ...): the env as it is.
- `PointMaze_*-v3`: `obs["observation"]` = (x, y, vx, vy), the layout of D4RL's maze2d.
- `AntMaze_*-v5`: `concat(obs["achieved_goal"], obs["observation"])` = the ant's (x, y) followed by the rest of
  its qpos and qvel, the 29-d layout of D4RL's antmaze (`include_cfrc_ext_in_observation=False` unless
  `info.env_kwargs` says otherwise).

Goal environments report `info["success"]` (bool) on every step. `info.reset_options` (a maze's fixed
`goal_cell` / `reset_cell`) are applied on every reset. A built-in maze dataset also records its fixed goal in
`info.extra["maze"]` (`goal_xy`, `goal_radius`): then the goal is pinned to the goal cell's exact centre and the
reward is D4RL maze2d's sparse reward, 1.0 when the point is within `goal_radius` of it after the step
(success = the same test), so evaluation returns are comparable with the dataset's rewards and references.

`make_vector_env(info, n, seed)` is a `gymnasium.vector.SyncVectorEnv` with autoreset DISABLED: a finished
sub-env is not reset behind the caller's back. The evaluator runs n episodes to completion, tracks which
are still live, and ignores what finished sub-envs return (they may still be stepped; their outputs are
meaningless until the next `reset`). `EnvBatch` (`make_env_batch`) is the alternative that steps only live
envs, for callers that want that.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np

from ld.data.types import DataError, DatasetInfo

KNOWN_ENV_PREFIXES = (
    "Hopper-",
    "HalfCheetah-",
    "Walker2d-",
    "Ant-",
    "Humanoid-",
    "Swimmer-",
    "InvertedPendulum-",
    "InvertedDoublePendulum-",
    "Reacher-",
    "Pusher-",
    "PointMaze_",
    "AntMaze_",
)

_robotics_registered = False


def register_robotics() -> None:
    """Register gymnasium-robotics' envs (PointMaze, AntMaze, ...) once."""
    global _robotics_registered
    if _robotics_registered:
        return
    import contextlib
    import io
    import warnings

    # gymnasium-robotics prints a notice about its Adroit *Dense-v1 rewards to stderr on import; it concerns
    # only those envs, so it is repeated where one of them is made (make_env), not on every `latentdiffuser` command.
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    _robotics_registered = True


def known_env_ids() -> list[str]:
    """Registered env ids this module knows how to flatten (MuJoCo locomotion, PointMaze, AntMaze)."""
    register_robotics()
    return sorted(k for k in gym.registry if k.startswith(KNOWN_ENV_PREFIXES))


def _check_env_id(env_id: Optional[str]) -> str:
    if env_id is None or not isinstance(env_id, str) or not env_id:
        raise DataError(
            f"dataset metadata has no env_id ({env_id!r}), so it cannot be evaluated in an environment; "
            f"known env ids: {', '.join(known_env_ids())}"
        )
    register_robotics()
    if env_id not in gym.registry or not env_id.startswith(KNOWN_ENV_PREFIXES):
        raise DataError(f"unknown env_id {env_id!r}; known env ids: {', '.join(known_env_ids())}")
    return env_id


class FlatGoalObs(gym.Wrapper):
    """Flattens a goal env's Dict observation and reports `success`; optionally a fixed D4RL-style goal.

    layout: "observation" (PointMaze) or "xy+observation" (AntMaze).
    goal_xy / goal_radius: pin the goal there and use reward = success = ||xy' - goal_xy|| <= goal_radius.
    reset_options: merged under the options of every `reset` call.
    """

    def __init__(
        self,
        env: gym.Env,
        layout: str = "observation",
        goal_xy: Optional[Sequence[float]] = None,
        goal_radius: Optional[float] = None,
        reset_options: Optional[dict[str, Any]] = None,
    ):
        super().__init__(env)
        if layout not in ("observation", "xy+observation"):
            raise ValueError(f"layout must be 'observation' or 'xy+observation', got {layout!r}")
        self.layout = layout
        self.goal_xy = None if goal_xy is None else np.asarray(goal_xy, dtype=np.float64)
        self.goal_radius = None if goal_radius is None else float(goal_radius)
        self.reset_options = dict(reset_options or {})
        space = env.observation_space["observation"]
        n = space.shape[0] + (2 if layout == "xy+observation" else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float64)

    def _flat(self, obs: dict) -> np.ndarray:
        if self.layout == "observation":
            return np.asarray(obs["observation"], dtype=np.float64).copy()
        return np.concatenate([obs["achieved_goal"], obs["observation"]]).astype(np.float64)

    def _fixed_success(self, obs: dict) -> bool:
        return bool(np.linalg.norm(np.asarray(obs["achieved_goal"]) - self.goal_xy) <= self.goal_radius)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None):
        opts = {**self.reset_options, **(options or {})}
        obs, info = self.env.reset(seed=seed, options=opts or None)
        if self.goal_xy is not None:
            u = self.env.unwrapped
            u.goal = self.goal_xy.copy()
            if hasattr(u, "update_target_site_pos"):
                u.update_target_site_pos()
            obs = dict(obs)
            obs["desired_goal"] = self.goal_xy.copy()
            info["success"] = self._fixed_success(obs)
        return self._flat(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.goal_xy is not None:
            success = self._fixed_success(obs)
            info["success"] = success
            reward = float(success)
        else:
            info["success"] = bool(info.get("success", False))
        return self._flat(obs), float(reward), terminated, truncated, info


class ResetOptions(gym.Wrapper):
    """Applies fixed reset options on every reset (for non-goal envs that accept options)."""

    def __init__(self, env: gym.Env, reset_options: dict[str, Any]):
        super().__init__(env)
        self.reset_options = dict(reset_options)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None):
        return self.env.reset(seed=seed, options={**self.reset_options, **(options or {})})


def make_env(
    info: DatasetInfo, seed: Optional[int] = None, max_episode_steps: Optional[int] = None
) -> gym.Env:
    """The evaluation env of a dataset: flat Box observations like the dataset's; see the module doc.

    `seed` seeds the action space and is used by the first `reset()` if that call gives no seed.
    `max_episode_steps` overrides `info.max_episode_steps` (which overrides the env's registered limit).
    Raises DataError for a missing or unknown env id, naming the known ids.
    """
    env_id = _check_env_id(info.env_id)
    if env_id.startswith("AdroitHand") and env_id.endswith("Dense-v1"):
        import warnings

        warnings.warn(f"{env_id}: gymnasium-robotics changed this env's reward in 1.2.1 without a version bump; "
                      "scores are not comparable to D4RL's adroit v1 numbers", stacklevel=2)
    steps = max_episode_steps or info.max_episode_steps
    kwargs = dict(info.env_kwargs or {})
    if env_id.startswith("AntMaze_"):
        # D4RL's antmaze observation has no contact forces (29-d); Ant-v5 includes them unless told not to
        kwargs.setdefault("include_cfrc_ext_in_observation", False)
    try:
        env = gym.make(env_id, max_episode_steps=steps, **kwargs) if steps else gym.make(env_id, **kwargs)
    except TypeError as e:
        raise DataError(f"env {env_id!r} rejected env_kwargs {kwargs!r}: {e}") from None
    reset_options = dict(info.reset_options or {})
    if isinstance(env.observation_space, gym.spaces.Dict):
        maze = (info.extra or {}).get("maze") or {}
        env = FlatGoalObs(
            env,
            layout="xy+observation" if env_id.startswith("AntMaze_") else "observation",
            goal_xy=maze.get("goal_xy"),
            goal_radius=maze.get("goal_radius"),
            reset_options=reset_options,
        )
    elif reset_options:
        env = ResetOptions(env, reset_options)
    if seed is not None:
        env.action_space.seed(seed)
        env = _SeedFirstReset(env, seed)
    return env


class _SeedFirstReset(gym.Wrapper):
    """Uses `seed` for the first reset when the caller gives none (so make_env(seed=s) is reproducible)."""

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self._pending_seed: Optional[int] = seed

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None):
        if seed is None:
            seed, self._pending_seed = self._pending_seed, None
        else:
            self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def make_vector_env(
    info: DatasetInfo, n: int, seed: Optional[int] = None, max_episode_steps: Optional[int] = None
) -> gym.vector.VectorEnv:
    """n copies of `make_env(info)` in a SyncVectorEnv with autoreset DISABLED.

    `reset()` with no seed seeds sub-env i with seed + i (when seed is given). Run episodes to completion:
    once a sub-env reports terminated or truncated, ignore its further outputs until the next reset.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _check_env_id(info.env_id)
    fns = [
        (lambda i=i: make_env(info, None if seed is None else seed + i, max_episode_steps)) for i in range(n)
    ]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)


class EnvBatch:
    """A list of envs stepped together; only live envs are stepped (alternative to make_vector_env).

    `reset(seed)` -> obs [n, obs_dim]; `step(actions)` with actions [n, act_dim] steps the live envs and
    returns (obs, rewards, terminated, truncated, infos) where rows of finished envs repeat their last
    obs with reward 0 and done flags kept; `live` is a bool mask; `success` accumulates info["success"].
    """

    def __init__(self, envs: list[gym.Env]):
        self.envs = envs
        self.n = len(envs)
        self.live = np.zeros(self.n, dtype=bool)
        self.success = np.zeros(self.n, dtype=bool)
        self._obs: Optional[np.ndarray] = None

    def reset(self, seed: Optional[int] = None) -> np.ndarray:
        obs = [e.reset(seed=None if seed is None else seed + i)[0] for i, e in enumerate(self.envs)]
        self._obs = np.stack(obs).astype(np.float64)
        self.live[:] = True
        self.success[:] = False
        return self._obs.copy()

    def step(self, actions: np.ndarray):
        assert self._obs is not None, "call reset() first"
        rew = np.zeros(self.n)
        term = np.zeros(self.n, dtype=bool)
        trunc = np.zeros(self.n, dtype=bool)
        infos: list[dict] = [{} for _ in range(self.n)]
        for i in np.flatnonzero(self.live):
            o, r, te, tr, inf = self.envs[i].step(np.asarray(actions[i]))
            self._obs[i] = o
            rew[i], term[i], trunc[i], infos[i] = r, te, tr, inf
            self.success[i] |= bool(inf.get("success", False))
            if te or tr:
                self.live[i] = False
        return self._obs.copy(), rew, term, trunc, infos

    def close(self) -> None:
        for e in self.envs:
            e.close()


def make_env_batch(
    info: DatasetInfo, n: int, seed: Optional[int] = None, max_episode_steps: Optional[int] = None
) -> EnvBatch:
    return EnvBatch([make_env(info, None if seed is None else seed + i, max_episode_steps) for i in range(n)])
