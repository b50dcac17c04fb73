"""Per-dimension Gaussian normalizers, saved as JSON with every artifact.

`Normalizer`: x_norm = (x - mean) / std per feature dimension, std floored at `min_std` (constant dims,
e.g. a fixed maze goal, normalize to 0 instead of dividing by zero). Works on numpy arrays and torch
tensors (any leading shape, last dimension = features). Scalar fields (rewards, returns) use dim 1 and
accept arrays without a trailing feature axis.

`DatasetNormalizer`: one `Normalizer` per field (states, actions, rewards, returns), fitted on real steps
only: from an `EpisodeDataset` or `WindowIndex`, every transition counts once; from materialized
`Windows`, the steps with mask=1 count (so terminal padding, which has mask=1, counts too).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

import numpy as np

from ld.data.types import DataError, EpisodeDataset

FIELDS = ("states", "actions", "rewards", "returns")
DEFAULT_MIN_STD = 1e-3


class Normalizer:
    def __init__(self, mean: Any, std: Any, min_std: float = DEFAULT_MIN_STD, scalar: bool = False):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.maximum(np.asarray(std, dtype=np.float64).reshape(-1), float(min_std))
        self.min_std = float(min_std)
        self.scalar = bool(scalar)
        if self.mean.shape != self.std.shape:
            raise DataError(f"normalizer mean {self.mean.shape} and std {self.std.shape} differ in shape")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, x: np.ndarray, min_std: float = DEFAULT_MIN_STD, mask: np.ndarray | None = None) -> "Normalizer":
        """Fit on `x` [..., dim] (or [...] for a scalar field); `mask` [...] selects the steps that count."""
        x = np.asarray(x, dtype=np.float64)
        scalar = x.ndim == (np.asarray(mask).ndim if mask is not None else 1)
        flat = x.reshape(-1, 1) if scalar else x.reshape(-1, x.shape[-1])
        if mask is not None:
            flat = flat[np.asarray(mask).reshape(-1) > 0]
        if flat.shape[0] == 0:
            raise DataError("cannot fit a normalizer on zero steps")
        return cls(flat.mean(axis=0), flat.std(axis=0), min_std=min_std, scalar=scalar)

    def _params(self, x: Any):
        mean, std = self.mean, self.std
        try:
            import torch

            if isinstance(x, torch.Tensor):
                dt = x.dtype if x.is_floating_point() else torch.float32
                return torch.as_tensor(mean, dtype=dt, device=x.device), torch.as_tensor(std, dtype=dt, device=x.device)
        except ImportError:  # pragma: no cover - torch is a hard dependency of ld
            pass
        x = np.asarray(x)
        dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return mean.astype(dt), std.astype(dt)

    def normalize(self, x: Any) -> Any:
        mean, std = self._params(x)
        if self.scalar:  # elementwise, any shape
            return (x - mean[0]) / std[0]
        return (x - mean) / std

    def unnormalize(self, x: Any) -> Any:
        mean, std = self._params(x)
        if self.scalar:  # elementwise, any shape
            return x * std[0] + mean[0]
        return x * std + mean

    def state_dict(self) -> dict[str, Any]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "min_std": self.min_std, "scalar": self.scalar}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(d["mean"], d["std"], min_std=d.get("min_std", DEFAULT_MIN_STD), scalar=d.get("scalar", False))


class DatasetNormalizer:
    """Normalizers for states, actions, rewards and returns (attribute access: `norm.states`, ...)."""

    def __init__(self, normalizers: dict[str, Normalizer]):
        missing = [f for f in FIELDS if f not in normalizers]
        if missing:
            raise DataError(f"DatasetNormalizer needs fields {list(FIELDS)}, missing {missing}")
        self.normalizers = dict(normalizers)

    def __getattr__(self, name: str) -> Normalizer:
        norms = self.__dict__.get("normalizers", {})
        if name in norms:
            return norms[name]
        raise AttributeError(name)

    def __getitem__(self, name: str) -> Normalizer:
        return self.normalizers[name]

    @classmethod
    def fit(cls, data: Any, gamma: float | None = None, min_std: float = DEFAULT_MIN_STD) -> "DatasetNormalizer":
        """Fit from a `WindowIndex`, materialized `Windows`, or an `EpisodeDataset` (needs `gamma`)."""
        from ld.data.windows import WindowIndex, Windows, reward_to_go

        if isinstance(data, WindowIndex):
            arrays = {"states": data.states, "actions": data.actions, "rewards": data.rewards,
                      "returns": data.returns}
            return cls({k: Normalizer.fit(v, min_std) for k, v in arrays.items()})
        if isinstance(data, Windows):
            m = data.mask
            return cls({
                "states": Normalizer.fit(data.states, min_std, mask=m),
                "actions": Normalizer.fit(data.actions, min_std, mask=m),
                "rewards": Normalizer.fit(data.rewards, min_std, mask=m),
                "returns": Normalizer.fit(data.returns, min_std, mask=m),
            })
        if isinstance(data, EpisodeDataset):
            if gamma is None:
                raise DataError("DatasetNormalizer.fit(EpisodeDataset) needs gamma to compute returns")
            eps = data.episodes
            return cls({
                "states": Normalizer.fit(np.concatenate([e.observations for e in eps]), min_std),
                "actions": Normalizer.fit(np.concatenate([e.actions for e in eps]), min_std),
                "rewards": Normalizer.fit(np.concatenate([e.rewards for e in eps]), min_std),
                "returns": Normalizer.fit(
                    np.concatenate([reward_to_go(e.rewards, gamma, e.terminal) for e in eps]), min_std),
            })
        raise DataError(f"cannot fit a DatasetNormalizer on {type(data).__name__}")

    def normalize(self, field: str, x: Any) -> Any:
        return self.normalizers[field].normalize(x)

    def unnormalize(self, field: str, x: Any) -> Any:
        return self.normalizers[field].unnormalize(x)

    def state_dict(self) -> dict[str, Any]:
        return {k: n.state_dict() for k, n in self.normalizers.items()}

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> "DatasetNormalizer":
        return cls({k: Normalizer.from_state_dict(v) for k, v in d.items()})

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write JSON atomically (temp file + os.replace)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.state_dict(), indent=1))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "DatasetNormalizer":
        path = Path(path)
        try:
            return cls.from_state_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise DataError(f"normalizer file not found: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a valid normalizer JSON ({e})") from None
