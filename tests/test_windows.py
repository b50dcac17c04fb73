"""Reward-to-go, windows (padding + mask), normalizers and fingerprints on hand-computed tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ld.data.fingerprint import fingerprint
from ld.data.normalizer import DatasetNormalizer, Normalizer
from ld.data.types import DataError
from ld.data.windows import WindowIndex, episode_returns, initial_states, make_windows, reward_to_go

torch.set_num_threads(1)


def test_reward_to_go_exact():
    r = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(reward_to_go(r, 0.5, terminal=True), [2.75, 3.5, 3.0])
    np.testing.assert_allclose(reward_to_go(r, 1.0, terminal=True), [6.0, 5.0, 3.0])
    # bootstrap only for non-terminal episodes: + gamma^(n-t) * V
    np.testing.assert_allclose(reward_to_go(r, 0.5, terminal=False, bootstrap=8.0), [3.75, 5.5, 7.0])
    np.testing.assert_allclose(reward_to_go(r, 0.5, terminal=True, bootstrap=8.0), [2.75, 3.5, 3.0])
    assert reward_to_go(np.zeros(0), 0.9, True).shape == (0,)


def test_return_bootstrap_rules():
    r = np.array([1.0, 2.0, 3.0])
    # none: nothing past the cut; a terminal episode is never bootstrapped, whatever the rule
    np.testing.assert_allclose(episode_returns(r, 0.5, False, "none"), reward_to_go(r, 0.5, False))
    np.testing.assert_allclose(episode_returns(r, 0.5, True, "tail_mean"), [2.75, 3.5, 3.0])
    # tail_mean at gamma 0.5: the last ceil(1 / 0.5) = 2 rewards average 2.5, worth 2.5 / 0.5 = 5 past the cut
    np.testing.assert_allclose(episode_returns(r, 0.5, False, "tail_mean"),
                               reward_to_go(r, 0.5, False, bootstrap=5.0))
    # a stationary reward is valued exactly: G_t = r / (1 - gamma) at every step, up to the cut
    np.testing.assert_allclose(episode_returns(np.full(400, 2.0), 0.99, False, "tail_mean"), 200.0, rtol=1e-5)
    with pytest.raises(ValueError, match="allowed: none, tail_mean"):
        episode_returns(r, 0.5, False, "td")
    with pytest.raises(ValueError, match="gamma < 1"):
        episode_returns(r, 1.0, False, "tail_mean")


def test_window_index_bootstraps_only_cut_episodes(tiny_ds):
    # episode 0 ends in a terminal (r = 1, 2, 3), episode 1 is cut by a time limit (r = 10, 20)
    plain, boot = WindowIndex(tiny_ds, 2, 0.5), WindowIndex(tiny_ds, 2, 0.5, "tail_mean")
    np.testing.assert_array_equal(boot.returns[:3], plain.returns[:3])
    # episode 1's tail mean (10 + 20) / 2 = 15 is worth 30 past the cut: G = 20 + 0.5 * 30, 10 + 0.5 * 35
    np.testing.assert_allclose(boot.returns[3:], [27.5, 35.0])
    np.testing.assert_allclose(plain.returns[3:], [20.0, 20.0])


def test_windows_padding_and_mask(tiny_ds):
    w = make_windows(tiny_ds, horizon=4, gamma=0.5)
    assert len(w) == 5  # one window per transition
    np.testing.assert_array_equal(w.episode_index, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(w.start, [0, 1, 2, 0, 1])
    assert w.states.shape == (5, 4, 2) and w.actions.shape == (5, 4, 1) and w.rewards.shape == (5, 4)
    assert w.states.dtype == np.float32 and w.mask.dtype == np.float32

    # terminal episode 0 (r = 1, 2, 3): absorbing padding, mask = 1 everywhere
    np.testing.assert_array_equal(w.states[0, :, 0], [0, 1, 2, 2])
    np.testing.assert_array_equal(w.actions[0, :, 0], [1, 2, 3, 0])
    np.testing.assert_array_equal(w.rewards[0], [1, 2, 3, 0])
    np.testing.assert_allclose(w.returns[0], [2.75, 3.5, 3.0, 0.0])
    np.testing.assert_array_equal(w.mask[0], [1, 1, 1, 1])
    np.testing.assert_array_equal(w.valid[0], [True, True, True, False])
    np.testing.assert_array_equal(w.states[2, :, 0], [2, 2, 2, 2])
    np.testing.assert_array_equal(w.rewards[2], [3, 0, 0, 0])
    np.testing.assert_array_equal(w.mask[2], [1, 1, 1, 1])

    # time-limit episode 1 (r = 10, 20): G = [20, 20]; padded steps repeat the last state with mask 0
    np.testing.assert_array_equal(w.states[3, :, 1], [100, 101, 101, 101])
    np.testing.assert_array_equal(w.actions[3, :, 0], [11, 12, 0, 0])
    np.testing.assert_array_equal(w.rewards[3], [10, 20, 0, 0])
    np.testing.assert_allclose(w.returns[3], [20, 20, 0, 0])
    np.testing.assert_array_equal(w.mask[3], [1, 1, 0, 0])
    np.testing.assert_array_equal(w.mask[4], [1, 0, 0, 0])
    np.testing.assert_array_equal(w.returns[4], [20, 0, 0, 0])


def test_window_index_batch_matches_materialized(tiny_ds):
    idx = WindowIndex(tiny_ds, horizon=2, gamma=0.9)
    w = idx.materialize()
    b = idx.batch([4, 0, 4])
    np.testing.assert_array_equal(b["states"], w.states[[4, 0, 4]])
    np.testing.assert_array_equal(b["mask"], w.mask[[4, 0, 4]])
    t = idx.sample(3, np.random.default_rng(0), as_torch=True)
    assert isinstance(t["states"], torch.Tensor) and t["states"].shape == (3, 2, 2)
    assert t["states"].dtype == torch.float32
    np.testing.assert_array_equal(initial_states(tiny_ds), [[0, 0], [0, 100]])
    with pytest.raises(DataError, match="horizon"):
        WindowIndex(tiny_ds, horizon=0, gamma=0.9)


def test_normalizer_round_trip(tiny_ds, tmp_path):
    w = make_windows(tiny_ds, horizon=3, gamma=0.9)
    dn = DatasetNormalizer.fit(w)
    x = w.states
    np.testing.assert_allclose(dn.states.unnormalize(dn.states.normalize(x)), x, atol=1e-5)
    z = dn.normalize("states", x)[w.mask > 0]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    # torch path, scalar field without a feature axis
    rt = torch.as_tensor(w.returns)
    back = dn.returns.unnormalize(dn.returns.normalize(rt))
    assert isinstance(back, torch.Tensor)
    np.testing.assert_allclose(back.numpy(), w.returns, atol=1e-4)
    # JSON serializable, save/load exact
    json.dumps(dn.state_dict())
    p = dn.save(tmp_path / "norm.json")
    dn2 = DatasetNormalizer.load(p)
    assert dn2.state_dict() == dn.state_dict()
    assert list(tmp_path.iterdir()) == [p]
    # fit from a dataset / window index: every real transition once
    dn3 = DatasetNormalizer.fit(tiny_ds, gamma=0.9)
    dn4 = DatasetNormalizer.fit(WindowIndex(tiny_ds, 3, 0.9))
    np.testing.assert_allclose(dn3.rewards.mean, [np.mean([1, 2, 3, 10, 20])])
    np.testing.assert_allclose(dn3.returns.mean, dn4.returns.mean)
    # floor on a constant dimension
    n = Normalizer.fit(np.ones((5, 2)))
    assert np.all(n.std >= 1e-3) and np.all(np.isfinite(n.normalize(np.ones((5, 2)))))
    with pytest.raises(DataError):
        DatasetNormalizer.load(tmp_path / "missing.json")


def test_fingerprint_stable_and_sensitive(tiny_ds):
    a = fingerprint(tiny_ds)
    assert len(a) == 16 and a == fingerprint(tiny_ds)
    tiny_ds.episodes[1].rewards[1] += 1e-3
    b = fingerprint(tiny_ds)
    assert b != a
    tiny_ds.episodes[1].rewards[1] -= 1e-3
    assert fingerprint(tiny_ds) == a
    tiny_ds.episodes[0].terminal = False
    assert fingerprint(tiny_ds) != a
