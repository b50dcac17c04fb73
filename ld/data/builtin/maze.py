"""Built-in PointMaze datasets, made the way D4RL's maze2d data was made.

Behavior policy: a waypoint controller. Shortest paths over the maze's grid cells (BFS, precomputed for every
(cell, goal cell) pair) give the next cell towards the controller's current goal; a PD controller on the
point mass drives to that cell's centre (action = kp (target - xy) - kd v, D4RL's kp = 10, kd = 1), Gaussian
action noise (std 0.5, D4RL's), actions clipped to [-1, 1]. When the point is within 0.5 of its goal's centre
the controller picks a new random goal cell, so an episode is one long continuing wander through the maze.
Each episode starts at a uniformly random free cell (the env's own reset noise on top).

Reward (stored and in evaluation) is D4RL's sparse maze2d reward relative to ONE fixed evaluation goal cell,
whatever the controller is heading to: 1 when the point is within 0.5 of the goal cell's centre after the
step, else 0. Evaluation starts from one fixed start cell (`info.reset_options`); `ld.envs.make_env`
builds the same env (continuing task, fixed goal, same reward), and generation steps exactly that env.

References: ref_min = mean return of uniformly random actions from the fixed start; ref_max = mean return of
the noise-free controller driving straight to the fixed goal (and holding there), both measured.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ld.data.types import DatasetInfo

GOAL_RADIUS = 0.5  # D4RL maze2d: reward 1 within 0.5 of the target
KP, KD = 10.0, 1.0  # D4RL's WaypointController gains
ACTION_NOISE = 0.5  # D4RL generate_maze2d_datasets.py --noisy


@dataclass(frozen=True)
class MazeSpec:
    env_id: str
    start_cell: tuple[int, int]
    goal_cell: tuple[int, int]
    max_episode_steps: int
    default_episodes: int


# Fixed evaluation cells (row, col) in the env's maze_map: the far ends, as in D4RL's maze2d.
MAZES: dict[str, MazeSpec] = {
    "pointmaze-umaze": MazeSpec("PointMaze_UMaze-v3", (3, 1), (1, 1), 300, 1000),
    "pointmaze-medium": MazeSpec("PointMaze_Medium-v3", (1, 1), (6, 6), 600, 600),
    "pointmaze-large": MazeSpec("PointMaze_Large-v3", (1, 1), (7, 9), 800, 500),
}

_DIRS = ((1, 0), (-1, 0), (0, 1), (0, -1))


class WaypointController:
    """Shortest-path waypoints over grid cells + PD control to the next waypoint's centre."""

    def __init__(self, maze, kp: float = KP, kd: float = KD):
        self.maze = maze  # gymnasium_robotics Maze (maze_map, cell_rowcol_to_xy, cell_xy_to_rowcol)
        self.kp, self.kd = kp, kd
        mm = maze.maze_map
        self.free = [(r, c) for r in range(len(mm)) for c in range(len(mm[0])) if mm[r][c] != 1]
        self.centers = {
            cell: np.asarray(maze.cell_rowcol_to_xy(np.array(cell)), dtype=np.float64) for cell in self.free
        }
        self.dist: dict[tuple[int, int], dict[tuple[int, int], int]] = {}
        self._next: dict[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]] = {}
        for goal in self.free:
            d = {goal: 0}
            q = collections.deque([goal])
            while q:
                u = q.popleft()
                for dr, dc in _DIRS:
                    v = (u[0] + dr, u[1] + dc)
                    if v not in d and mm[v[0]][v[1]] != 1:
                        d[v] = d[u] + 1
                        q.append(v)
            self.dist[goal] = d
            for s in d:
                if s == goal:
                    self._next[(s, goal)] = goal
                else:
                    nbrs = [(s[0] + dr, s[1] + dc) for dr, dc in _DIRS]
                    self._next[(s, goal)] = min((v for v in nbrs if v in d), key=lambda v: d[v])

    def cell_of(self, xy: np.ndarray) -> tuple[int, int]:
        r, c = self.maze.cell_xy_to_rowcol(np.asarray(xy))
        cell = (int(r), int(c))
        if cell in self.centers:
            return cell
        # numerically just inside a wall's cell (sliding along it): the nearest free cell
        return min(self.free, key=lambda f: float(np.sum((self.centers[f] - xy) ** 2)))

    def waypoint(self, xy: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
        return self.centers[self._next[(self.cell_of(xy), goal)]]

    def act(self, obs: np.ndarray, goal: tuple[int, int]) -> np.ndarray:
        xy, v = obs[:2], obs[2:4]
        a = self.kp * (self.waypoint(xy, goal) - xy) - self.kd * v
        return np.clip(a, -1.0, 1.0)


def dataset_info(name: str, seed: int, max_episode_steps: Optional[int] = None) -> DatasetInfo:
    spec = MAZES[name]
    return DatasetInfo(
        name=name,
        source=f"builtin:{name}",
        env_id=spec.env_id,
        env_kwargs={"continuing_task": True, "reset_target": False},
        reset_options={"goal_cell": list(spec.goal_cell), "reset_cell": list(spec.start_cell)},
        max_episode_steps=max_episode_steps or spec.max_episode_steps,
        success_key="success",
        seed=seed,
    )


def _run_episode(env, policy: Callable[[np.ndarray], np.ndarray], seed: Optional[int]) -> float:
    obs, _ = env.reset(seed=seed)
    ret, done = 0.0, False
    while not done:
        obs, r, te, tr, _ = env.step(policy(obs))
        ret += r
        done = te or tr
    return ret


def measure_refs(info: DatasetInfo, seed: int, episodes: int = 20) -> dict[str, float]:
    """Mean returns from the fixed start to the fixed goal: uniformly random actions and the noise-free
    controller. Uses the evaluation env itself."""
    from ld.envs import make_env

    env = make_env(info)
    ctrl = WaypointController(env.unwrapped.maze)
    goal = tuple(info.reset_options["goal_cell"])
    rng = np.random.default_rng(seed + 10_000)
    rand = [_run_episode(env, lambda o: rng.uniform(-1, 1, 2), seed + 20_000 + i) for i in range(episodes)]
    best = [_run_episode(env, lambda o: ctrl.act(o, goal), seed + 30_000 + i) for i in range(episodes)]
    env.close()
    return {
        "random_mean": float(np.mean(rand)),
        "random_std": float(np.std(rand)),
        "controller_mean": float(np.mean(best)),
        "controller_std": float(np.std(best)),
    }


def generate(
    name: str,
    episodes: Optional[int] = None,
    seed: int = 0,
    max_episode_steps: Optional[int] = None,
    progress: bool = True,
    ref_episodes: int = 20,
) -> tuple[dict[str, np.ndarray], DatasetInfo, dict[str, np.ndarray]]:
    """Arrays (D4RL layout), metadata and infos (infos/goal = the controller's current goal xy)."""
    from tqdm.auto import tqdm

    from ld.envs import make_env

    spec = MAZES[name]
    episodes = episodes or spec.default_episodes
    t0 = time.perf_counter()
    info = dataset_info(name, seed, max_episode_steps)
    T = info.max_episode_steps
    env = make_env(info)
    ctrl = WaypointController(env.unwrapped.maze)
    goal_xy = ctrl.centers[spec.goal_cell]
    info.extra["maze"] = {
        "goal_cell": list(spec.goal_cell),
        "reset_cell": list(spec.start_cell),
        "goal_xy": [float(x) for x in goal_xy],
        "goal_radius": GOAL_RADIUS,
    }
    env.close()
    env = make_env(info)  # now with the fixed-goal reward (extra["maze"])
    rng = np.random.default_rng(seed)
    n = episodes * T
    obs_a = np.zeros((n, 4), np.float32)
    act_a = np.zeros((n, 2), np.float32)
    rew_a = np.zeros(n, np.float32)
    to_a = np.zeros(n, bool)
    goal_a = np.zeros((n, 2), np.float32)
    free = ctrl.free
    k = 0
    goals_reached = 0
    bar = tqdm(total=n, desc=f"{name}: waypoint controller", unit="step", disable=not progress, mininterval=1.0)
    for ep in range(episodes):
        start = free[rng.integers(len(free))]
        obs, _ = env.reset(seed=int(seed * 1_000_003 + ep), options={"reset_cell": list(start)})
        goal = free[rng.integers(len(free))]
        for t in range(T):
            if np.linalg.norm(obs[:2] - ctrl.centers[goal]) <= GOAL_RADIUS:
                goals_reached += 1
                while True:
                    goal = free[rng.integers(len(free))]
                    if np.linalg.norm(obs[:2] - ctrl.centers[goal]) > GOAL_RADIUS:
                        break
            a = ctrl.act(obs, goal) + ACTION_NOISE * rng.standard_normal(2)
            a = np.clip(a, -1.0, 1.0)
            nobs, r, te, tr, _ = env.step(a)
            obs_a[k], act_a[k], rew_a[k], goal_a[k] = obs, a, r, ctrl.centers[goal]
            k += 1
            obs = nobs
            if te:  # continuing task: never happens
                break
        to_a[k - 1] = True
        bar.update(T)
    bar.close()
    env.close()
    obs_a, act_a, rew_a, to_a, goal_a = obs_a[:k], act_a[:k], rew_a[:k], to_a[:k], goal_a[:k]

    refs = measure_refs(info, seed, ref_episodes)
    info.ref_min_score = refs["random_mean"]
    info.ref_max_score = refs["controller_mean"]
    ep_returns = rew_a.reshape(episodes, -1).sum(1) if k == n else np.array([float(rew_a.sum())])
    info.behavior_policy = (
        f"D4RL maze2d-style waypoint controller: BFS over grid cells to a random goal cell (new goal within "
        f"{GOAL_RADIUS} of it), PD kp={KP} kd={KD} to the next cell centre, Gaussian action noise "
        f"std={ACTION_NOISE}, clipped to [-1, 1]; episodes start at random free cells"
    )
    info.extra.update(
        {
            "episodes": episodes,
            "transitions": int(k),
            "generation_seconds": round(time.perf_counter() - t0, 2),
            "controller_goals_reached": goals_reached,
            "dataset_mean_return": float(ep_returns.mean()),
            "dataset_normalized_score": float(info.normalize(ep_returns.mean())),
            "reward_fraction": float(rew_a.mean()),
            "references": refs,
            "behavior_policy_normalized_scores": {
                "random": 0.0,
                "waypoint_controller_noise_free": 100.0,
            },
        }
    )
    arrays = {
        "observations": obs_a,
        "actions": act_a,
        "rewards": rew_a,
        "terminals": np.zeros(k, bool),
        "timeouts": to_a,
    }
    return arrays, info, {"goal": goal_a}
