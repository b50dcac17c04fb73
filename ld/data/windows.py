"""Reward-to-go and fixed-length windows x_{t..t+T-1} = (s, a, r, G) cut from episodes.

Design: windows are built **lazily**. `WindowIndex(ds, horizon, gamma)` keeps the dataset once as flat
float32 arrays (states, actions, rewards, returns; ~N x (obs+act+2) x 4 bytes) plus one (episode, start)
pair per window, and `batch(idx)` gathers any set of windows with vectorized fancy indexing. A window
starts at *every* index of every episode, so W = number of transitions. Materializing all windows
(`make_windows`) costs W x T x (obs+act+3) x 4 bytes -- fine for tests and small datasets, ~2 GB for 1e6
transitions at T=32 -- so the trainer should sample minibatches from a `WindowIndex`
(`sample(batch_size, rng)` or `batch(idx)`).

Returns: G_t = sum_{i>=t} gamma^(i-t) r_i over the *whole episode* (not truncated at the window end).
Past the end of an episode cut by a time limit or by the end of the data, `episode_returns` adds what the
`return_bootstrap` rule says the cut future was worth: nothing (`none`, Diffuser's and TAP's reading), or
(`tail_mean`) the episode's mean reward over its last 1 / (1 - gamma) steps, kept up forever. Without it, G in
the last few hundred steps of every 1000-step episode falls with time-to-go, which the state does not show.

Padding (episodes shorter than T and windows running past an episode's end), for steps t >= n:
  - state  = the episode's last observation repeated,
  - action = 0, reward = 0, return-to-go = 0,
  - mask   = 1 if the episode ended in a terminal state (absorbing state: the model should learn that
             nothing happens after termination, exactly as Diffuser-style planners pad), and
             mask = 0 if it was cut by a time limit / end of data (the future is unknown, so losses must
             ignore the padded steps).
`mask` is float32 (1 = counts in the loss), `valid` (bool) marks real (non-padded) steps regardless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ld.data.types import DataError, EpisodeDataset


def reward_to_go(rewards: np.ndarray, gamma: float, terminal: bool, bootstrap: float = 0.0) -> np.ndarray:
    """Discounted reward-to-go G_t = sum_{i>=t} gamma^(i-t) r_i (+ gamma^(n-t) * bootstrap if not terminal).

    Exact reverse recursion in float64, returned as float32.
    """
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    g = np.empty_like(r)
    acc = 0.0 if terminal else float(bootstrap)
    gamma = float(gamma)
    for t in range(r.shape[0] - 1, -1, -1):
        acc = r[t] + gamma * acc
        g[t] = acc
    return g.astype(np.float32)


RETURN_BOOTSTRAPS = ("none", "tail_mean")


def episode_returns(rewards: np.ndarray, gamma: float, terminal: bool, rule: str = "none") -> np.ndarray:
    """G_t of one episode under a `return_bootstrap` rule (see the module docstring); a terminal episode
    is never bootstrapped. `tail_mean` values the cut future at mean(r over the last ceil(1 / (1 - gamma))
    steps) / (1 - gamma): a dataset-only estimate (no learned value), exact when the behavior keeps its
    recent per-step reward, and for a stationary gait close to it."""
    if rule not in RETURN_BOOTSTRAPS:
        raise ValueError(f"unknown return_bootstrap {rule!r}; allowed: {', '.join(RETURN_BOOTSTRAPS)}")
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    bootstrap = 0.0
    if rule == "tail_mean" and not terminal and r.size:
        if gamma >= 1:
            raise ValueError("return_bootstrap=tail_mean needs gamma < 1 (an undiscounted tail is infinite)")
        k = int(np.ceil(1.0 / (1.0 - gamma)))
        bootstrap = float(r[-k:].mean()) / (1.0 - gamma)
    return reward_to_go(r, gamma, terminal, bootstrap)


@dataclass
class Windows:
    """Materialized windows (all arrays share the leading dimension W)."""

    states: np.ndarray  # [W, T, obs] float32
    actions: np.ndarray  # [W, T, act] float32
    rewards: np.ndarray  # [W, T] float32
    returns: np.ndarray  # [W, T] float32
    mask: np.ndarray  # [W, T] float32, 1 = counts in the loss
    valid: np.ndarray  # [W, T] bool, True = real (non-padded) step
    episode_index: np.ndarray  # [W] int64
    start: np.ndarray  # [W] int64

    def __len__(self) -> int:
        return int(self.states.shape[0])


class WindowIndex:
    """Lazy windows over an `EpisodeDataset` (see the module docstring for the padding rule)."""

    FIELDS = ("states", "actions", "rewards", "returns", "mask", "valid", "episode_index", "start")

    def __init__(self, ds: EpisodeDataset, horizon: int, gamma: float, return_bootstrap: str = "none"):
        if horizon < 1:
            raise DataError(f"window horizon must be >= 1, got {horizon}")
        if not 0.0 <= gamma <= 1.0:
            raise DataError(f"discount gamma must be in [0, 1], got {gamma}")
        if not ds.episodes:
            raise DataError(f"dataset '{ds.info.name}' has no episodes")
        self.horizon = int(horizon)
        self.gamma = float(gamma)
        self.return_bootstrap = return_bootstrap
        eps = ds.episodes
        self.ep_len = np.array([len(e) for e in eps], dtype=np.int64)
        self.ep_offset = np.concatenate([[0], np.cumsum(self.ep_len)[:-1]]).astype(np.int64)
        self.ep_terminal = np.array([bool(e.terminal) for e in eps], dtype=bool)
        self.states = np.concatenate([np.asarray(e.observations, np.float32) for e in eps])
        self.actions = np.concatenate([np.asarray(e.actions, np.float32) for e in eps])
        self.rewards = np.concatenate([np.asarray(e.rewards, np.float32) for e in eps])
        self.returns = np.concatenate([episode_returns(e.rewards, gamma, e.terminal, return_bootstrap)
                                       for e in eps])
        # One window per transition: (episode, start).
        self.episode_index = np.repeat(np.arange(len(eps), dtype=np.int64), self.ep_len)
        self.start = np.arange(self.states.shape[0], dtype=np.int64) - self.ep_offset[self.episode_index]

    def __len__(self) -> int:
        return int(self.episode_index.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def batch(self, idx: np.ndarray | list[int] | slice, as_torch: bool = False, device: Optional[str] = None) -> dict:
        """Gather windows `idx` -> dict with the `Windows` fields (numpy, or torch tensors if as_torch)."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        ep = self.episode_index[idx]
        start = self.start[idx]
        t = start[:, None] + np.arange(self.horizon, dtype=np.int64)[None, :]  # [B, T]
        n = self.ep_len[ep][:, None]
        valid = t < n
        flat = self.ep_offset[ep][:, None] + np.minimum(t, n - 1)
        vf = valid.astype(np.float32)
        out = {
            "states": self.states[flat],
            "actions": self.actions[flat] * vf[..., None],
            "rewards": self.rewards[flat] * vf,
            "returns": self.returns[flat] * vf,
            "mask": (valid | self.ep_terminal[ep][:, None]).astype(np.float32),
            "valid": valid,
            "episode_index": ep,
            "start": start,
        }
        if as_torch:
            import torch

            out = {k: torch.as_tensor(v, device=device) for k, v in out.items()}
        return out

    def sample(self, batch_size: int, rng: np.random.Generator, as_torch: bool = False,
               device: Optional[str] = None) -> dict:
        """A uniformly random minibatch of windows (with replacement)."""
        return self.batch(rng.integers(0, len(self), size=batch_size), as_torch=as_torch, device=device)

    def materialize(self, idx: Optional[np.ndarray] = None) -> Windows:
        b = self.batch(np.arange(len(self)) if idx is None else idx)
        return Windows(**b)


def make_windows(ds: EpisodeDataset, horizon: int, gamma: float) -> Windows:
    """All windows of `ds`, materialized (small datasets / tests; use `WindowIndex` for training)."""
    return WindowIndex(ds, horizon, gamma).materialize()


def initial_states(ds: EpisodeDataset) -> np.ndarray:
    """[E, obs] first observation of every episode (e.g. for planning from dataset start states)."""
    return ds.initial_states().astype(np.float32)
