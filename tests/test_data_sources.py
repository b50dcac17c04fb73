"""Data sources on real files: D4RL-layout HDF5 (raw h5py and ld's writer), Minari datasets created with
Minari's own DataCollector, and every bad input -> one DataError naming the file / key / allowed names."""

from __future__ import annotations

import json
import warnings

import h5py
import numpy as np
import pytest

from ld.data import d4rl_tasks
from ld.data.commands import main as data_main
from ld.data.hdf5 import read_d4rl_hdf5, write_d4rl_hdf5
from ld.data.sources import load_dataset
from ld.data.types import DataError, DatasetInfo

# ---------------------------------------------------------------- D4RL HDF5

def test_raw_d4rl_file_splits_on_terminals_and_timeouts(tmp_path, raw_d4rl):
    term = np.zeros(10, bool)
    term[2] = True
    tout = np.zeros(10, bool)
    tout[5] = True
    tout[6] = True
    p = raw_d4rl(tmp_path / "x.hdf5", terminals=term, timeouts=tout)
    ds = load_dataset(str(p))
    assert [len(e) for e in ds.episodes] == [3, 3, 1, 3]  # [0-2] term, [3-5] timeout, [6], trailing [7-9]
    assert [e.terminal for e in ds.episodes] == [True, False, False, False]
    assert ds.obs_dim == 3 and ds.act_dim == 2 and ds.n_transitions == 10
    with h5py.File(p) as f:
        np.testing.assert_array_equal(ds.episodes[1].observations, f["observations"][3:6])
    assert ds.info.env_id is None and ds.info.ref_min_score is None  # unknown task: loads, no env
    assert len(ds.fingerprint) == 16


def test_d4rl_task_from_stem_and_hash_suffix(tmp_path, raw_d4rl):
    p = raw_d4rl(tmp_path / "hopper-medium-v2.hdf5", obs_dim=11, act_dim=3)
    ds = load_dataset(str(p))
    assert ds.info.env_id == "Hopper-v5" and ds.info.max_episode_steps == 1000
    assert ds.info.ref_min_score == pytest.approx(-20.272305)
    q = raw_d4rl(tmp_path / "data.hdf5", obs_dim=4, act_dim=2)
    ds = load_dataset(f"{q}#maze2d-umaze-v1")
    assert ds.info.name == "maze2d-umaze-v1" and ds.info.env_id == "PointMaze_UMaze-v3"
    assert ds.info.env_kwargs["continuing_task"] is True
    assert (ds.info.ref_min_score, ds.info.ref_max_score) == (23.85, 161.86)
    assert d4rl_tasks.task_info("antmaze-large-diverse-v2").env_id == "AntMaze_Large-v5"
    assert d4rl_tasks.task_info("door-cloned-v1").env_id == "AdroitHandDoor-v1"
    assert d4rl_tasks.task_info("door-cloned-v1").ref_min_score is not None
    assert d4rl_tasks.task_info("not-a-task-v0") is None


def test_writer_round_trip_with_info(tmp_path):
    rng = np.random.default_rng(1)
    n = 7
    info = DatasetInfo(name="mine", source="test", env_id="Hopper-v5", ref_min_score=-1.0,
                       ref_max_score=2.0, reset_options={"goal_cell": [1, 2]}, seed=3, extra={"k": 1})
    obs = rng.normal(size=(n, 3))
    p = write_d4rl_hdf5(tmp_path / "sub" / "w.hdf5", observations=obs, actions=rng.normal(size=(n, 1)),
                        rewards=rng.normal(size=n), terminals=[0, 0, 1, 0, 0, 0, 0],
                        timeouts=[0, 0, 0, 0, 0, 1, 0], info=info, infos={"qpos": rng.normal(size=(n, 2))})
    with h5py.File(p) as f:
        assert f["observations"].dtype == np.float32 and f["terminals"].dtype == bool
        assert f["infos/qpos"].shape == (n, 2)
        assert json.loads(f.attrs["ld_info"])["name"] == "mine"
    ds = read_d4rl_hdf5(p)
    assert ds.info.to_dict() == {**info.to_dict(), "source": "test"}
    assert [len(e) for e in ds.episodes] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate([e.observations for e in ds.episodes]), obs.astype(np.float32))
    assert sorted(x.name for x in p.parent.iterdir()) == ["w.hdf5"]


def test_writer_failure_leaves_no_temp_and_keeps_target(tmp_path):
    target = tmp_path / "t.hdf5"
    target.write_bytes(b"original")
    base = dict(observations=np.zeros((3, 2)), actions=np.zeros((3, 1)), rewards=np.zeros(3),
                terminals=np.zeros(3), timeouts=np.zeros(3), info=DatasetInfo(name="x", source="t"))
    with pytest.raises(DataError, match="'rewards' has 2"):
        write_d4rl_hdf5(target, **{**base, "rewards": np.zeros(2)})
    with pytest.raises(DataError, match="NaN"):
        write_d4rl_hdf5(target, **{**base, "observations": np.full((3, 2), np.nan)})
    with pytest.raises(TypeError):  # fails inside h5py, after the temp file exists
        write_d4rl_hdf5(target, **base, infos={"bad": np.array([object()] * 3)})
    assert target.read_bytes() == b"original"
    assert [x.name for x in tmp_path.iterdir()] == ["t.hdf5"]


# ---------------------------------------------------------------- bad inputs

def _err(spec) -> str:
    with pytest.raises(DataError) as e:
        load_dataset(str(spec))
    return str(e.value)


def test_bad_files(tmp_path, raw_d4rl):
    m = _err(tmp_path / "nope.hdf5")
    assert "not found" in m and "nope.hdf5" in m
    txt = tmp_path / "text.hdf5"
    txt.write_text("hello")
    m = _err(txt)
    assert "not an HDF5" in m and "text.hdf5" in m
    good = raw_d4rl(tmp_path / "good.hdf5")
    trunc = tmp_path / "trunc.hdf5"
    trunc.write_bytes(good.read_bytes()[:1500])
    assert "trunc.hdf5" in _err(trunc)

    m = _err(raw_d4rl(tmp_path / "miss.hdf5", drop=("timeouts",)))
    assert "missing key(s) ['timeouts']" in m and "miss.hdf5" in m and "'terminals'" in m
    m = _err(raw_d4rl(tmp_path / "named.hdf5", rename={"observations": "observation"}))
    assert "['observations']" in m and "found ['actions', 'observation'," in m
    assert "'observation' should be named 'observations'" in m

    m = _err(raw_d4rl(tmp_path / "len.hdf5", override={"rewards": np.zeros(9, np.float32)}))
    assert "'observations' has 10" in m and "'rewards' has 9" in m and "len.hdf5" in m
    obs = np.zeros((10, 3), np.float32)
    obs[4, 1] = np.nan
    m = _err(raw_d4rl(tmp_path / "nan.hdf5", override={"observations": obs}))
    assert "'observations' contains NaN" in m and "index 4" in m
    act = np.zeros((10, 2), np.float32)
    act[7, 0] = np.inf
    m = _err(raw_d4rl(tmp_path / "inf.hdf5", override={"actions": act}))
    assert "'actions' contains inf" in m and "index 7" in m
    m = _err(raw_d4rl(tmp_path / "ndim.hdf5", override={"rewards": np.zeros((10, 1), np.float32)}))
    assert "'rewards' must have 1 dimension" in m
    m = _err(raw_d4rl(tmp_path / "empty.hdf5", n=0))
    assert "empty dataset" in m and "empty.hdf5" in m


def test_bad_specs(tmp_path):
    m = _err("nonsense")
    assert "minari:" in m and "builtin:" in m and ".hdf5" in m
    m = _err("builtin:no-such-dataset")
    assert "built-in" in m and "no-such-dataset" in m
    from ld.data.sources import builtin_names
    assert all(n in m for n in builtin_names())


def test_cli_make_unknown_name(capsys, tmp_path):
    assert data_main(["data", "make", "no-such-dataset", "--out", str(tmp_path / "x.hdf5")]) == 2
    assert "no-such-dataset" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- Minari

def _collect(dataset_id, env_id, episodes, steps, **make_kw):
    import gymnasium as gym
    from minari import DataCollector

    if env_id.startswith("PointMaze"):
        import gymnasium_robotics
        gym.register_envs(gymnasium_robotics)
    env = DataCollector(gym.make(env_id, max_episode_steps=steps, **make_kw))
    env.action_space.seed(0)
    for ep in range(episodes):
        env.reset(seed=ep)
        while True:
            *_, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minari nags about author / permalink / eval_env
        env.create_dataset(dataset_id, algorithm_name="random", ref_min_score=0.0, ref_max_score=10.0)
    env.close()


def test_minari_local_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("LD_OFFLINE", "1")
    _collect("test/pendulum/random-v0", "InvertedPendulum-v5", episodes=3, steps=15)
    import minari
    ref = minari.load_dataset("test/pendulum/random-v0")
    ds = load_dataset("minari:test/pendulum/random-v0")
    assert len(ds.episodes) == 3
    for e, m in zip(ds.episodes, ref.iterate_episodes()):
        assert len(e) == len(m.rewards) and e.observations.shape == (len(e), 4)
        np.testing.assert_allclose(e.observations, m.observations[:-1])  # n+1 obs -> n
        assert e.terminal == bool(m.terminations[-1])
    assert ds.info.env_id == "InvertedPendulum-v5" and ds.info.max_episode_steps == 15
    assert (ds.info.ref_min_score, ds.info.ref_max_score) == (0.0, 10.0)
    assert ds.fingerprint == load_dataset("minari:test/pendulum/random-v0").fingerprint

    m = _err("minari:test/pendulum/absent-v0")
    assert "MINARI_DATASETS_PATH" in m and str(tmp_path / "minari") in m and "list" in m


def test_minari_dict_observations(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    _collect("test/umaze/random-v0", "PointMaze_UMaze-v3", episodes=2, steps=10, continuing_task=True)
    ds = load_dataset("minari:test/umaze/random-v0")
    assert [len(e) for e in ds.episodes] == [10, 10] and ds.obs_dim == 4 and ds.act_dim == 2
    assert not any(e.terminal for e in ds.episodes)
    assert ds.info.env_id == "PointMaze_UMaze-v3" and ds.info.extra["observation_key"] == "observation"
    assert "desired_goal" in ds.info.extra or ds.info.extra.get("desired_goal_varies")


# ---------------------------------------------------------------- CLI

def test_cli_info(tmp_path, raw_d4rl, capsys):
    p = raw_d4rl(tmp_path / "hopper-medium-v2.hdf5", obs_dim=11, act_dim=3,
                 timeouts=[0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert data_main(["data", "info", str(p), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["episodes"] == 2 and s["transitions"] == 10 and s["env_id"] == "Hopper-v5"
    assert s["length_min"] == 4 and s["length_max"] == 6 and len(s["fingerprint"]) == 16
    assert data_main(["data", "info", str(p)]) == 0
    assert "env_id" in capsys.readouterr().out
    assert data_main(["data", "info", str(tmp_path / "missing.hdf5")]) == 2
    assert "not found" in capsys.readouterr().err
