"""Built-in dataset generators: tiny real generations in the real envs, read back from real HDF5 files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ld.data.builtin import BUILTIN_NAMES, DEFAULT_EPISODES, GENERATOR_VERSION, ensure, make, maze, td3
from ld.data.hdf5 import read_d4rl_hdf5
from ld.data.types import DataError
from ld.envs import make_env

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*Adroit.*")


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    # MuJoCo writes its warnings (e.g. HalfCheetah's deprecated 'settotalmass') to ./MUJOCO_LOG.TXT
    monkeypatch.chdir(tmp_path)


def _flat(ds):
    rew = np.concatenate([e.rewards for e in ds.episodes])
    obs = np.concatenate([e.observations for e in ds.episodes])
    return obs, rew


def test_names_and_defaults():
    assert "pointmaze-umaze" in BUILTIN_NAMES and "halfcheetah-medium-replay" in BUILTIN_NAMES
    assert set(DEFAULT_EPISODES) == set(BUILTIN_NAMES)
    assert isinstance(GENERATOR_VERSION, str)


def test_unknown_name_lists_builtin_names(tmp_path):
    with pytest.raises(DataError) as e:
        make("pointmaze-nope", tmp_path / "x.hdf5")
    for n in BUILTIN_NAMES:
        assert n in str(e.value)
    with pytest.raises(DataError):
        ensure("nope", tmp_path)
    assert not list(tmp_path.iterdir())


def test_pointmaze_tiny_generation(tmp_path):
    p = make("pointmaze-umaze", tmp_path / "u.hdf5", episodes=3, seed=1, progress=False)
    ds = read_d4rl_hdf5(p)
    info = ds.info
    assert info.env_id == "PointMaze_UMaze-v3" and info.source == "builtin:pointmaze-umaze"
    assert info.generator_version == GENERATOR_VERSION and info.seed == 1
    assert info.max_episode_steps == 300 and info.success_key == "success"
    assert info.reset_options == {"goal_cell": [1, 1], "reset_cell": [3, 1]}
    assert info.ref_max_score > info.ref_min_score
    assert info.extra["episodes"] == 3 and info.extra["transitions"] == 900
    assert len(ds.episodes) == 3 and all(len(e) == 300 and not e.terminal for e in ds.episodes)
    assert ds.obs_dim == 4 and ds.act_dim == 2
    acts = np.concatenate([e.actions for e in ds.episodes])
    assert np.all(np.abs(acts) <= 1.0)
    # reward = within 0.5 of the fixed goal AFTER the step (next obs), whatever the controller's goal was
    goal = np.asarray(info.extra["maze"]["goal_xy"])
    for e in ds.episodes:
        near = (np.linalg.norm(e.observations[1:, :2] - goal, axis=1) <= 0.5).astype(np.float32)
        np.testing.assert_array_equal(e.rewards[:-1], near)
    assert sum(e.rewards.sum() for e in ds.episodes) > 0  # the wandering controller passes the goal


def test_waypoint_controller_reaches_fixed_goal():
    """The noise-free controller from the fixed start reaches the fixed goal in the real eval env, in time."""
    for name in ("pointmaze-umaze", "pointmaze-medium"):
        info = maze.dataset_info(name, seed=0)
        spec = maze.MAZES[name]
        info.extra["maze"] = {"goal_xy": None, "goal_radius": 0.5}
        env0 = make_env(info)
        ctrl = maze.WaypointController(env0.unwrapped.maze)
        info.extra["maze"]["goal_xy"] = ctrl.centers[spec.goal_cell].tolist()
        env = make_env(info, seed=3)
        obs, i0 = env.reset()
        assert ctrl.cell_of(obs[:2]) == spec.start_cell and not i0["success"]
        first, ret, t = None, 0.0, 0
        done = False
        while not done:
            obs, r, te, tr, inf = env.step(ctrl.act(obs, spec.goal_cell))
            ret += r
            if inf["success"] and first is None:
                first = t
            t += 1
            done = te or tr
        assert t == spec.max_episode_steps
        assert first is not None and first < spec.max_episode_steps // 2, (name, first)
        assert ret > spec.max_episode_steps // 3  # it stays at the goal once there


def test_locomotion_tiny_generation(tmp_path, monkeypatch):
    monkeypatch.setenv("LD_BUILTIN_FAST", "1")
    lens = {}
    for name in ("halfcheetah-medium", "halfcheetah-medium-expert", "halfcheetah-medium-replay"):
        p = make(name, tmp_path / f"{name}.hdf5", episodes=2, seed=0, progress=False, max_episode_steps=40)
        ds = read_d4rl_hdf5(p)
        info = ds.info
        assert info.env_id == "HalfCheetah-v5" and info.generator_version == GENERATOR_VERSION
        assert info.max_episode_steps == 40
        assert info.ref_max_score > info.ref_min_score
        assert info.extra["policy_fast"] is True
        scores = info.extra["behavior_policy_normalized_scores"]
        assert scores["expert"] == pytest.approx(100.0) and scores["random"] == 0.0
        assert ds.obs_dim == 17 and ds.act_dim == 6
        assert len(ds.episodes) == 2 and all(not e.terminal for e in ds.episodes)
        lens[name] = [len(e) for e in ds.episodes]
        np.testing.assert_allclose(ds.returns().mean(), info.extra["dataset_mean_return"], rtol=1e-4)
    assert lens["halfcheetah-medium"] == [40, 40] and lens["halfcheetah-medium-expert"] == [40, 40]
    # trained once, cached, loadable with weights_only
    pols = list((tmp_path / "policies").glob("halfcheetah-td3-s0-fast.pt"))
    assert len(pols) == 1
    pol = torch.load(pols[0], weights_only=True)
    assert 0 < pol["medium_step"] <= pol["config"]["total_steps"]
    assert pol["replay"]["observations"].shape[0] == pol["medium_step"]
    # the cached actor runs in numpy with bounded actions
    actor = td3.NumpyActor(pol["medium"])
    a = actor(np.zeros(17))
    assert a.shape == (6,) and np.all(np.abs(a) <= 1)


def test_ensure_caches(tmp_path):
    p1 = ensure("pointmaze-umaze", tmp_path, episodes=1, seed=2, progress=False)
    assert p1.name == f"pointmaze-umaze-s2-e1-v{GENERATOR_VERSION}.hdf5"
    m1 = p1.stat().st_mtime_ns
    p2 = ensure("pointmaze-umaze", tmp_path, episodes=1, seed=2, progress=False)
    assert p2 == p1 and p2.stat().st_mtime_ns == m1
    assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]


def test_maze_generation_is_deterministic(tmp_path):
    a = read_d4rl_hdf5(make("pointmaze-umaze", tmp_path / "a.hdf5", episodes=1, seed=5, progress=False))
    b = read_d4rl_hdf5(make("pointmaze-umaze", tmp_path / "b.hdf5", episodes=1, seed=5, progress=False))
    np.testing.assert_array_equal(a.episodes[0].observations, b.episodes[0].observations)
    np.testing.assert_array_equal(a.episodes[0].actions, b.episodes[0].actions)


def test_select_snapshots_confirms_noisy_curve():
    # curve (1 episode each) vs true returns: index 3 dipped by chance, index 5 is the real best
    curve = np.array([0.0, 100.0, 400.0, 150.0, 900.0, 950.0, 1000.0])
    true = {0: 0.0, 1: 100.0, 2: 380.0, 3: 800.0, 4: 900.0, 5: 1000.0, 6: 700.0}
    expert, medium, sel = td3.select_snapshots(curve, 0.0, lambda i: true[i])
    assert expert == 5
    assert medium == 2  # closest to 0.4 * 1000 among pre-expert snapshots in the band; not the dip at 3
    assert sel["target_medium_return"] == pytest.approx(400.0)


def test_shipped_behavior_policies_are_used_instead_of_training(tmp_path, monkeypatch):
    """TD3 on a CPU differs across machines, so ld ships seed 0's policies: ensure_policies must load them
    (never train) and they must hold what the locomotion recipes roll out."""
    from ld.data.builtin import td3

    assert td3.shipped_policy(0, fast=False) is not None
    monkeypatch.setattr(td3, "train_td3", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    pol = td3.ensure_policies(tmp_path, 0, fast=False, progress=False)
    assert {"expert", "medium", "medium_step", "config"} <= set(pol)
    assert not list(tmp_path.iterdir())  # nothing trained, nothing cached
