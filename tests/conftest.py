"""Shared fixtures: tiny hand-checkable datasets and a raw (h5py, not ld's writer) D4RL file writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ld.data.types import DatasetInfo, Episode, EpisodeDataset


@pytest.fixture
def tiny_ds() -> EpisodeDataset:
    """Episode 0: 3 steps ending in a terminal state (r = 1, 2, 3); episode 1: 2 steps cut by a time limit
    (r = 10, 20). obs_dim 2 (obs = [t, 100*episode + t]), act_dim 1 (a = t + 1 + 10*episode)."""
    def ep(i: int, rewards: list[float], terminal: bool) -> Episode:
        n = len(rewards)
        t = np.arange(n, dtype=np.float32)
        return Episode(
            observations=np.stack([t, 100 * i + t], axis=1).astype(np.float32),
            actions=(t + 1 + 10 * i)[:, None].astype(np.float32),
            rewards=np.asarray(rewards, np.float32),
            terminal=terminal,
        )

    return EpisodeDataset(episodes=[ep(0, [1, 2, 3], True), ep(1, [10, 20], False)],
                          info=DatasetInfo(name="tiny", source="test"))


def write_raw_d4rl(path: Path, n: int = 10, obs_dim: int = 3, act_dim: int = 2, *, terminals=None,
                   timeouts=None, drop=(), rename=None, override=None, attrs=None) -> Path:
    """Write a D4RL-layout file directly with h5py. `drop`: keys to leave out; `rename`: {old: new};
    `override`: {key: array} replacing the default array."""
    import h5py

    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool) if terminals is None else np.asarray(terminals, bool),
        "timeouts": np.zeros(n, bool) if timeouts is None else np.asarray(timeouts, bool),
    }
    arrays.update(override or {})
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if k in drop:
                continue
            f.create_dataset((rename or {}).get(k, k), data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
    return path


@pytest.fixture
def raw_d4rl():
    return write_raw_d4rl
