"""Built-in dataset generators: tiny real generations in the real envs, read back from real HDF5 files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from ld.data.builtin import BUILTIN_NAMES, DEFAULT_EPISODES, GENERATOR_VERSION, ensure, make, maze
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
    """Every kind on a terminating env (Hopper) and a non-terminating one (HalfCheetah), from policies trained
    (fast) and shipped by the real code, on D4RL's score scale."""
    monkeypatch.setenv("LD_BUILTIN_FAST", "1")
    for env, od, ad, lo, hi in (("hopper", 11, 3, -20.272305, 3234.3), ("halfcheetah", 17, 6, -280.178953, 12135.0)):
        for kind in ("medium", "medium-replay", "medium-expert", "expert"):
            name = f"{env}-{kind}"
            p = make(name, tmp_path / f"{name}.hdf5", episodes=2, seed=0, progress=False, max_episode_steps=40)
            ds = read_d4rl_hdf5(p)
            info = ds.info
            assert info.env_id == {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}[env]
            assert info.generator_version == GENERATOR_VERSION and info.max_episode_steps == 40
            # D4RL's 1000-step references, prorated to the 40-step episodes
            assert info.ref_min_score == pytest.approx(lo * 40 / 1000)
            assert info.ref_max_score == pytest.approx(hi * 40 / 1000)
            assert info.extra["policy_fast"] is True and "prorated" in info.extra["reference_scores"]
            assert set(info.extra["policy_returns"]) == {"random", "medium", "medium_noise0.1", "expert",
                                                         "expert_noise0.1"}
            assert ds.obs_dim == od and ds.act_dim == ad
            assert len(ds.episodes) <= 2 and all(len(e) <= 40 for e in ds.episodes)
            np.testing.assert_allclose(ds.returns().mean(), info.extra["dataset_mean_return"], rtol=1e-4)
            if env == "halfcheetah":  # never terminates: every episode is a time-out
                assert not any(e.terminal for e in ds.episodes)
            # a fallen hopper's episode ends before the limit as a terminal, not as a time-out
            for e in ds.episodes:
                assert e.terminal == (len(e) < 40) or kind == "medium-replay"
    pols = sorted(q.name for q in (tmp_path / "policies").glob("*-td3-s0-fast.pt"))
    assert pols == ["halfcheetah-td3-s0-fast.pt", "hopper-td3-s0-fast.pt"]  # trained once per env, cached
    pol = torch.load(tmp_path / "policies" / pols[0], weights_only=True)
    assert 0 < pol["medium_step"] <= pol["expert_step"] <= pol["trained_steps"]
    assert all(int(s) < pol["medium_step"] for s in pol["replay_snapshots"])


def test_hopper_terminals_are_episode_ends(tmp_path, monkeypatch):
    """Falls end episodes in the data as terminals (rows and windows see a finished episode, not a capped one)."""
    monkeypatch.setenv("LD_BUILTIN_FAST", "1")
    ds = read_d4rl_hdf5(make("hopper-medium", tmp_path / "h.hdf5", episodes=3, progress=False))
    assert ds.info.max_episode_steps == 1000
    assert all(e.terminal and len(e) < 1000 for e in ds.episodes)  # a barely trained hopper falls


def test_unshipped_policies_are_a_clear_error(tmp_path, monkeypatch):
    from ld.data.builtin import behavior

    monkeypatch.setattr(behavior, "SHIPPED", tmp_path / "none")
    monkeypatch.delenv("LD_BUILTIN_FAST", raising=False)
    with pytest.raises(DataError, match=r"no behavior policies for walker2d ship with ld.*train_behavior.py walker2d"):
        make("walker2d-medium", tmp_path / "w.hdf5", progress=False)
    assert not (tmp_path / "w.hdf5").exists()


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




def test_a_generation_that_misses_its_committed_fingerprint_writes_nothing(tmp_path, monkeypatch):
    """A machine that would build other bytes than the README's install says so, names the simulator stack it
    has, and leaves no file; the escape hatch writes the data anyway."""
    import json

    from ld.data import builtin

    table = tmp_path / "fingerprints.json"
    monkeypatch.setattr(builtin, "FINGERPRINTS_FILE", table)
    table.write_text(json.dumps({"generator_version": GENERATOR_VERSION,
                                 "datasets": {"pointmaze-umaze": {"episodes": 2, "fingerprint": "0" * 16}}}))
    with pytest.raises(DataError, match=r"fingerprint [0-9a-f]{16}, not 0000000000000000.*mujoco 4") as e:
        make("pointmaze-umaze", tmp_path / "u.hdf5", episodes=2, progress=False)
    assert "LD_ALLOW_FINGERPRINT_MISMATCH" in str(e.value) and not (tmp_path / "u.hdf5").exists()
    good = str(e.value).split("fingerprint ")[1][:16]
    table.write_text(json.dumps({"generator_version": GENERATOR_VERSION,
                                 "datasets": {"pointmaze-umaze": {"episodes": 2, "fingerprint": good}}}))
    ds = read_d4rl_hdf5(make("pointmaze-umaze", tmp_path / "u.hdf5", episodes=2, progress=False))
    assert ds.info.extra["fingerprint"] == ds.info.extra["fingerprint_expected"] == good
    # other sizes and seeds have no committed fingerprint to check
    assert builtin.expected_fingerprint("pointmaze-umaze", 3, 0, None, False) is None
    assert builtin.expected_fingerprint("pointmaze-umaze", 2, 1, None, False) is None


def test_data_info_shows_every_behavior_policy_on_d4rl_scale(tmp_path, monkeypatch, capsys):
    from ld.data.commands import main as data_main

    monkeypatch.setenv("LD_BUILTIN_FAST", "1")
    p = make("hopper-medium-expert", tmp_path / "h.hdf5", episodes=2, progress=False)
    assert data_main(["data", "info", str(p), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    pols = s["behavior_policy_returns"]
    assert set(pols) >= {"random", "medium", "expert"}
    lo, hi = -20.272305, 3234.3  # D4RL's hopper references
    for r in pols.values():
        assert r["normalized"] == pytest.approx(100 * (r["raw"] - lo) / (hi - lo))
    assert s["normalized_return_mean"] == pytest.approx(100 * (s["return_mean"] - lo) / (hi - lo))
    assert s["reference_scores"] == "D4RL" and s["fingerprint"]
    assert data_main(["data", "info", str(p)]) == 0
    text = capsys.readouterr().out
    assert "expert" in text and "raw" in text and "v5 environments" in text
