"""A terminated episode (a Hopper that falls) is finished, not capped: rows say so and score it on the full
references; an episode cut by `eval.max_steps` is the capped one."""

from __future__ import annotations

import numpy as np
import pytest

from ld.data.d4rl_tasks import task_info
from ld.evaluation.rollout import evaluate


class RandomPolicy:
    def __init__(self, act_dim: int, seed: int = 0):
        self.rng, self.act_dim = np.random.default_rng(seed), act_dim

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1, 1, (len(ids), self.act_dim))


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_fallen_hopper_is_terminated_not_capped():
    info = task_info("hopper-medium-v2")
    rows = evaluate(RandomPolicy(3), info, episodes=3, seed=0, progress=False)
    for r in rows:
        assert r.terminated and not r.capped and r.length < 1000 and r.episode_limit == 1000
        assert (r.ref_min_score, r.ref_max_score) == (info.ref_min_score, info.ref_max_score)
        assert r.normalized_score == pytest.approx(info.normalize(r.episode_return))


def test_capped_cheetah_is_capped_not_terminated():
    info = task_info("halfcheetah-medium-v2")
    rows = evaluate(RandomPolicy(6), info, episodes=2, seed=0, max_steps=20, progress=False)
    for r in rows:
        assert r.capped and not r.terminated and r.length == 20
        assert r.ref_max_score == pytest.approx(info.ref_max_score * 20 / 1000)
