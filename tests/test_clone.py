"""ld.evaluation.clone: an env whose state was copied from another replays its trajectory bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from maze_helpers import umaze_info

from ld.data.builtin import maze
from ld.data.types import DatasetInfo
from ld.envs import make_env
from ld.evaluation.clone import copy_state, scratch_env


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes warnings to ./MUJOCO_LOG.TXT


def _roll(env, actions):
    out = []
    for a in actions:
        obs, r, te, tr, info = env.step(a)
        out.append((obs.copy(), r, te, tr, bool(info.get("success", False))))
    return out


@pytest.mark.parametrize("which", ["maze-fixed-goal", "maze-env-goal", "halfcheetah", "hopper"])
def test_a_cloned_env_replays_the_same_trajectory_bit_for_bit(which):
    if which == "maze-fixed-goal":
        info = umaze_info()
    elif which == "maze-env-goal":  # a maze without a pinned goal: the env's own (random) goal must be copied
        info = maze.dataset_info("pointmaze-umaze", seed=0)
    else:
        env_id = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5"}[which]
        info = DatasetInfo(name=which, source="t", env_id=env_id, max_episode_steps=60)
    rng = np.random.default_rng(0)
    src = make_env(info, max_episode_steps=60)
    src.reset(seed=123)
    lo, hi = src.action_space.low, src.action_space.high
    for a in rng.uniform(lo, hi, size=(17, lo.shape[0])):  # somewhere mid-episode
        src.step(a)
    dst = scratch_env(info, max_episode_steps=60)  # reset from another seed: another state
    copy_state(src, dst)
    actions = rng.uniform(lo, hi, size=(60, lo.shape[0]))
    want, got = _roll(src, actions[:43]), _roll(dst, actions[:43])
    for (o1, r1, te1, tr1, s1), (o2, r2, te2, tr2, s2) in zip(want, got):
        assert np.array_equal(o1, o2) and r1 == r2 and te1 == te2 and tr1 == tr2 and s1 == s2
    assert want[-1][3] and got[-1][3]  # the copy truncates at the original's time limit (17 + 43 = 60)
    if "maze" in which:
        assert np.array_equal(src.unwrapped.goal, dst.unwrapped.goal)


def test_copying_does_not_touch_the_source():
    info = umaze_info()
    src = make_env(info)
    obs0, _ = src.reset(seed=1)
    dst = scratch_env(info)
    copy_state(src, dst)
    for _ in range(5):
        dst.step(np.ones(2))
    a = np.array([0.3, -0.2])
    o_src = src.step(a)[0]
    fresh = make_env(info)
    fresh.reset(seed=1)
    assert np.array_equal(o_src, fresh.step(a)[0])


def test_a_reused_copy_of_a_batch_env_truncates_at_the_sources_time_limit():
    """The planner benchmarks copy evaluate()'s batch envs (one wrapper more than a scratch env) into one
    scratch env per episode, again at every decision: each copy must restart the time-limit count from the
    source's, not go on from the copy's own earlier rollouts."""
    from ld.envs import make_env_batch

    info = DatasetInfo(name="hopper", source="t", env_id="Hopper-v5", max_episode_steps=60)
    batch = make_env_batch(info, 1, seed=3)
    batch.reset(seed=3)
    src, dst = batch.envs[0], scratch_env(info, max_episode_steps=60)
    zero = np.zeros(src.action_space.shape)
    for t in range(1, 40):
        src.step(zero)
        copy_state(src, dst)
        steps = 0
        while True:  # the copy runs to the time limit (zero torques: the hopper stands for 60 steps)
            _, _, te, tr, _ = dst.step(zero)
            steps += 1
            if te or tr:
                break
        assert tr and not te and steps == 60 - t, (t, steps)
