"""Evaluation envs built from dataset metadata."""

from __future__ import annotations

import numpy as np
import pytest

from ld.data.builtin import maze
from ld.data.types import DataError, DatasetInfo
from ld.envs import make_env, make_env_batch, make_vector_env


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # MuJoCo writes its warnings (e.g. HalfCheetah's deprecated 'settotalmass') to ./MUJOCO_LOG.TXT
    monkeypatch.chdir(tmp_path)


def _umaze_info() -> DatasetInfo:
    info = maze.dataset_info("pointmaze-umaze", seed=0)
    info.extra["maze"] = {"goal_cell": [1, 1], "reset_cell": [3, 1], "goal_xy": [-1.0, 1.0], "goal_radius": 0.5}
    return info


def test_maze_env_obs_and_success():
    env = make_env(_umaze_info(), seed=0)
    assert env.observation_space.shape == (4,)
    obs, info = env.reset()
    assert obs.shape == (4,) and not info["success"]
    # start: fixed reset cell (3, 1) -> centre (-1, -1), +-0.25 noise
    assert np.all(np.abs(obs[:2] - np.array([-1.0, -1.0])) <= 0.25 + 1e-9)
    # teleport next to the goal: success and reward 1
    u = env.unwrapped
    u.point_env.set_state(np.array([-1.0, 0.9]), np.zeros(2))
    obs, r, te, tr, info = env.step(np.zeros(2))
    assert info["success"] and r == 1.0 and not te
    u.point_env.set_state(np.array([1.0, 1.0]), np.zeros(2))
    obs, r, te, tr, info = env.step(np.zeros(2))
    assert not info["success"] and r == 0.0
    # the goal stays fixed across resets, and so does the start cell
    obs, _ = env.reset()
    assert np.allclose(u.goal, [-1.0, 1.0])
    assert np.all(np.abs(obs[:2] - np.array([-1.0, -1.0])) <= 0.25 + 1e-9)


def test_maze_env_time_limit():
    env = make_env(_umaze_info(), seed=0, max_episode_steps=5)
    env.reset()
    for t in range(5):
        _, _, te, tr, _ = env.step(np.zeros(2))
    assert tr and not te


def test_unknown_env_id():
    with pytest.raises(DataError) as e:
        make_env(DatasetInfo(name="x", source="y", env_id="NoSuchEnv-v0"))
    assert "NoSuchEnv-v0" in str(e.value) and "HalfCheetah-v5" in str(e.value)
    with pytest.raises(DataError):
        make_env(DatasetInfo(name="x", source="y", env_id=None))
    with pytest.raises(DataError):
        make_vector_env(DatasetInfo(name="x", source="y", env_id="NoSuchEnv-v0"), 2, 0)


def test_locomotion_and_antmaze_ids():
    env = make_env(DatasetInfo(name="h", source="d4rl", env_id="Hopper-v5", max_episode_steps=10), seed=0)
    obs, _ = env.reset()
    assert obs.shape == (11,)
    env = make_env(DatasetInfo(name="a", source="d4rl", env_id="AntMaze_UMaze-v5"), seed=0)
    assert env.observation_space.shape == (29,)  # D4RL antmaze layout: xy + the rest
    obs, info = env.reset()
    assert obs.shape == (29,) and "success" in info


def test_vector_env_and_batch():
    info = DatasetInfo(name="c", source="builtin", env_id="HalfCheetah-v5", max_episode_steps=3)
    venv = make_vector_env(info, 2, seed=0)
    obs, _ = venv.reset()
    assert obs.shape == (2, 17)
    obs2, _ = make_vector_env(info, 2, seed=0).reset()
    np.testing.assert_array_equal(obs, obs2)  # seeded
    for t in range(3):
        obs, r, te, tr, _ = venv.step(np.zeros((2, 6)))
    assert tr.all()
    venv.close()

    batch = make_env_batch(_umaze_info(), 3, seed=0)
    obs = batch.reset(seed=0)
    assert obs.shape == (3, 4) and batch.live.all()
    obs, r, te, tr, infos = batch.step(np.zeros((3, 2)))
    assert r.shape == (3,) and batch.live.all()
