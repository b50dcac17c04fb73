"""bench/planner_ceilings.py's parts that are not checked by its --quick run (tests/test_bench_quick.py): which
behavior policy each dataset gets (and the notes when there is none), and that the codec ceiling's window is the
behavior's real future from a clone of the live simulator, leaving that simulator untouched."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from maze_helpers import umaze_info

from ld.config import resolve
from ld.data.builtin import behavior
from ld.data.types import DatasetInfo
from ld.envs import make_env_batch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import planner_ceilings as pc  # noqa: E402


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes warnings to ./MUJOCO_LOG.TXT


def test_behavior_policies_and_the_notes_when_there_is_none(monkeypatch, tmp_path):
    make, note = pc.behavior_for(umaze_info(), "random")
    assert make is not None and "waypoint controller" in note
    user = DatasetInfo(name="maze2d-umaze-v1", source="/data/maze2d-umaze-v1.hdf5", env_id="PointMaze_UMaze-v3")
    make, note = pc.behavior_for(user, "random")
    assert make is None and "not built-in" in note and "skipped" in note
    replay = DatasetInfo(name="hopper-medium-replay", source="builtin:hopper-medium-replay", env_id="Hopper-v5")
    make, note = pc.behavior_for(replay, "random")
    assert make is None and "replay stream" in note
    cheetah = DatasetInfo(name="halfcheetah-medium-expert", source="builtin:halfcheetah-medium-expert",
                          env_id="HalfCheetah-v5", seed=0)
    make, note = pc.behavior_for(cheetah, "random")
    assert make is not None and "medium / expert" in note  # the shipped policies
    monkeypatch.setattr(behavior, "SHIPPED", tmp_path / "none")  # a checkout where none ship
    make, note = pc.behavior_for(cheetah, "random")
    assert make is None and "no behavior policies shipped yet" in note and "skipped" in note


@pytest.mark.parametrize("goal", ["random", "task"])
def test_the_codec_ceilings_window_is_the_behaviors_real_future_from_a_clone(goal):
    info = umaze_info()
    cfg = resolve(None, "smoke", [])  # T = 12
    factory, _ = pc.behavior_for(info, goal)
    batch = make_env_batch(info, 2, seed=5)
    obs = batch.reset(seed=5)
    pol = pc.CodecCeilingPolicy(SimpleNamespace(cfg=cfg), 4, info, None, factory, return_steps=5)
    pol.attach(batch)
    pol.reset(2)
    w = pol.future(1, obs[1])
    T = cfg.horizon
    assert w["states"].shape == (T, 4) and w["actions"].shape == (T, 2) and np.array_equal(w["states"][0], obs[1])
    assert np.all(w["mask"] == 1.0)
    # the same behavior (same seed) driving the real env itself makes exactly that window: the clone was faithful
    # and the real env was not touched by it
    twin = factory(1, batch.envs[1], 10_007 + 1)
    o, states, actions, after = obs[1], [], [], None
    for k in range(T):
        if k == pol.interval:
            after = twin.snapshot()
        a = twin(o)
        states.append(o)
        actions.append(a)
        o = batch.envs[1].step(a)[0]
    assert np.array_equal(np.stack(states), w["states"]) and np.array_equal(np.stack(actions), w["actions"])
    # the behavior goes on from where the executed part of its future (the replan interval) left it
    carried = pol.behaviors[1].snapshot()
    assert carried[0] == after[0] and carried[1] == after[1]


def _fake_policies(obs_dim: int, act_dim: int) -> dict:
    rng = np.random.default_rng(0)

    def sd():
        return {"0.weight": rng.normal(0, 0.3, (16, obs_dim)), "0.bias": np.zeros(16),
                "2.weight": rng.normal(0, 0.3, (act_dim, 16)), "2.bias": np.zeros(act_dim)}

    return {"max_action": 1.0, "medium": sd(), "expert": sd()}


def test_locomotion_behavior_the_shipped_actors_with_the_datas_noise(monkeypatch):
    from ld.data.builtin import behavior

    monkeypatch.setattr(behavior, "load_policies", lambda *a, **k: _fake_policies(17, 6))
    info = DatasetInfo(name="halfcheetah-medium-expert", source="builtin:halfcheetah-medium-expert",
                       env_id="HalfCheetah-v5", max_episode_steps=40, seed=0)
    factory, note = pc.behavior_for(info, "random")
    assert factory is not None and "medium / expert" in note
    cfg = resolve(None, "smoke", [])
    batch = make_env_batch(info, 2, seed=3)
    obs = batch.reset(seed=3)
    b0, b1 = factory(0, batch.envs[0], 1), factory(1, batch.envs[1], 1)
    assert not np.array_equal(b0.actor(obs[0]), b1.actor(obs[0]))  # medium, then expert: the data's halves
    pol = pc.CodecCeilingPolicy(SimpleNamespace(cfg=cfg), 4, info, 40, factory, return_steps=100)
    pol.attach(batch)
    pol.reset(2)
    w = pol.future(0, obs[0])
    twin = factory(0, batch.envs[0], 10_007)
    o, rewards = obs[0], []
    for k in range(40):  # the time limit (40) cuts the return roll-out, as it would the episode
        a = twin(o)
        if k < cfg.horizon:
            assert np.array_equal(w["states"][k], o) and np.array_equal(w["actions"][k], a)
        o, r, te, tr, _ = batch.envs[0].step(a)
        rewards.append(r)
        assert not te and (tr == (k == 39))
    from ld.data.windows import reward_to_go

    assert np.allclose(w["returns"], reward_to_go(np.asarray(rewards), cfg.gamma, False)[: cfg.horizon])
