"""What every stage shares: its inputs, how its key is computed, and how it is published to the store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ld.config import Config, subset
from ld.data.types import EpisodeDataset
from ld.stages.artifact import Artifact, ArtifactStore, ArtifactWriter, stage_key


@dataclass
class StageRecord:
    """One line of a pipeline's bookkeeping: which stage, which key, trained or reused, how long."""

    stage: str
    key: str
    reused: bool
    wall_time_s: float


@dataclass
class StageInputs:
    """Everything a stage may read besides the config: the data, the store and upstream artifacts."""

    dataset: EpisodeDataset
    store: ArtifactStore
    upstream: dict[str, Artifact] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    records: list[StageRecord] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # in-process memo (windows, normalizer)


def publish(
    name: str,
    reads: list[str],
    cfg: Config,
    inputs: StageInputs,
    upstream: list[str],
    produce: Callable[[ArtifactWriter], None],
    version: int = 1,
) -> Artifact:
    """Compute the stage's content key, reuse the artifact if present, else run `produce` and publish.

    `version` is the stage's own format/algorithm version: bumping it when a stage's output changes
    meaning keeps stale artifacts from being reused, without invalidating every other stage.
    """
    config = subset(cfg, reads)
    up_keys = {u: inputs.upstream[u].key for u in upstream}
    key_config = config if version == 1 else {**config, "_stage_version": version}
    key = stage_key(name, key_config, up_keys, inputs.dataset.fingerprint, cfg.seed)
    manifest = {
        "config": config,
        "upstream": up_keys,
        "dataset": {"name": inputs.dataset.info.name, "fingerprint": inputs.dataset.fingerprint},
        "seed": cfg.seed,
        "stage_version": version,
    }
    t0 = time.perf_counter()
    artifact, reused = inputs.store.build(name, key, manifest, produce)
    inputs.records.append(StageRecord(name, key, reused, round(time.perf_counter() - t0, 3)))
    return artifact
