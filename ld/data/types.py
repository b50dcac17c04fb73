"""The in-memory dataset every source yields: episodes plus what is needed to evaluate and normalize.

Every source (a D4RL HDF5 file, a Minari dataset, a built-in generator) ends as an `EpisodeDataset`, so
everything downstream -- windows, normalizers, stages, evaluation -- has exactly one input type.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


class DataError(ValueError):
    """A dataset problem, phrased for the user: which file / key / name, and what is allowed."""


@dataclass
class DatasetInfo:
    """Where the data came from and how to evaluate a policy trained on it.

    `env_id` + `env_kwargs` build the gymnasium environment used for evaluation; `reset_options` are passed
    to every `reset` (e.g. a maze's fixed goal and start cells). Normalized score =
    100 * (R - ref_min_score) / (ref_max_score - ref_min_score).
    """

    name: str
    source: str
    env_id: Optional[str] = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    reset_options: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: Optional[int] = None
    ref_min_score: Optional[float] = None
    ref_max_score: Optional[float] = None
    success_key: Optional[str] = None  # info key that marks success (mazes), if any
    behavior_policy: Optional[str] = None
    generator_version: Optional[str] = None
    seed: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        extra = dict(known.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in names})
        return cls(**known, extra=extra)

    def references(self, limit: Optional[int] = None) -> tuple[Optional[float], Optional[float], bool]:
        """(ref_min, ref_max, capped) for episodes of at most `limit` steps (None: the full episode).

        The references are full-episode returns. For another length both are prorated by
        limit / max_episode_steps (locomotion returns accrue at a roughly constant rate per step; for
        sparse-reward mazes it is an approximation), and `capped` says the limit is below the full length.
        """
        lo, hi, full = self.ref_min_score, self.ref_max_score, self.max_episode_steps
        capped = bool(full and limit is not None and limit < full)
        if lo is None or hi is None or not full or limit is None or limit == full:
            return lo, hi, capped
        frac = limit / full  # also scales up for a run longer than the references' episodes
        return lo * frac, hi * frac, capped

    def normalize(self, score: np.ndarray | float, limit: Optional[int] = None) -> np.ndarray | float:
        """100 * (R - ref_min) / (ref_max - ref_min), against references for episodes of `limit` steps."""
        lo, hi, _ = self.references(limit)
        if lo is None or hi is None:
            return np.nan * np.asarray(score, dtype=float)
        return 100.0 * (np.asarray(score, dtype=float) - lo) / (hi - lo)


@dataclass
class Episode:
    """One episode: n transitions (s_t, a_t, r_t). `terminal` = the last transition ended in a terminal
    state (absorbing, no bootstrapping past it); otherwise the episode was cut by a time limit or by the
    end of the data."""

    observations: np.ndarray  # [n, obs_dim] float32
    actions: np.ndarray  # [n, act_dim] float32
    rewards: np.ndarray  # [n] float32
    terminal: bool = False

    def __len__(self) -> int:
        return int(self.rewards.shape[0])


@dataclass
class EpisodeDataset:
    episodes: list[Episode]
    info: DatasetInfo
    fingerprint: str = ""  # content hash of the arrays (see ld.data.fingerprint)

    @property
    def obs_dim(self) -> int:
        return int(self.episodes[0].observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.episodes[0].actions.shape[1])

    @property
    def n_transitions(self) -> int:
        return int(sum(len(e) for e in self.episodes))

    def returns(self) -> np.ndarray:
        return np.array([float(e.rewards.sum()) for e in self.episodes])

    def behavior_score(self) -> float:
        """The behavior data's mean normalized return (NaN without reference scores)."""
        return float(np.mean(self.info.normalize(self.returns())))

    def initial_states(self) -> np.ndarray:
        return np.stack([e.observations[0] for e in self.episodes])
