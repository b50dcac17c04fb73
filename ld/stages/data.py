"""The training view of a dataset: lazy windows of length T, normalized, as torch minibatches.

Built once per (dataset, horizon, gamma, return_bootstrap) in a process and memoized in `StageInputs.cache`,
so the stages of one trial share the windows and the normalizer fitted on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ld.config import Config
from ld.data.normalizer import DatasetNormalizer
from ld.data.windows import WindowIndex

FIELDS = ("states", "actions", "rewards", "returns")


@dataclass
class TrainingData:
    index: WindowIndex
    normalizer: DatasetNormalizer

    @property
    def n(self) -> int:
        return len(self.index)

    @property
    def obs_dim(self) -> int:
        return self.index.obs_dim

    @property
    def act_dim(self) -> int:
        return self.index.act_dim

    def batch(self, idx: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        raw = self.index.batch(idx)
        out = {f: torch.as_tensor(self.normalizer.normalize(f, raw[f]), dtype=torch.float32, device=device)
               for f in FIELDS}
        out["mask"] = torch.as_tensor(raw["mask"], dtype=torch.float32, device=device)
        return out


def training_data(cfg: Config, inputs) -> TrainingData:
    key = ("training_data", inputs.dataset.fingerprint, cfg.horizon, cfg.gamma, cfg.return_bootstrap)
    if key not in inputs.cache:
        index = WindowIndex(inputs.dataset, cfg.horizon, cfg.gamma, cfg.return_bootstrap)
        inputs.cache[key] = TrainingData(index, DatasetNormalizer.fit(index))
    return inputs.cache[key]
