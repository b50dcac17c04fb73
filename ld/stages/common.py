"""What every stage shares: the `Stage` declaration, its inputs, its run record, and how it is built.

A stage is data, not a module convention: `Stage(name, role, reads, upstream, trains, version, code, produce)`.
`build_stage` computes its content key from exactly that declaration (the config fields it reads, its
version, its upstream artifacts' keys, the dataset fingerprint and the seed), reuses the artifact if the
store has it, and otherwise runs `produce(cfg, inputs, out)`. The declarations themselves, and the order the
pipeline walks them in, are in `ld.stages.dag`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ld.config import Config, subset
from ld.data.types import EpisodeDataset
from ld.stages.artifact import Artifact, ArtifactStore, ArtifactWriter, stage_key

# Fields every key covers without a stage declaring them: the seed is its own key component and the dataset
# enters through its content fingerprint. `train.log_every` only sets how often a loss is logged (the logged
# history in the manifest), never what is learned, so it stays out of keys on purpose.
UNKEYED_READS = frozenset({"seed", "dataset", "train.log_every"})


@dataclass
class StageRun:
    """One stage of one trial as this process saw it: which artifact, trained here or reused, how long.

    The pipeline creates it; a `SweepStore` adds the time inside training loops and the steps a crashed
    build resumed from. It is what `latentdiffuser run` prints, what the rows' `stage.<name>.*` columns hold and what a
    sweep trial's run summary lists."""

    stage: str
    key: str
    trained: bool = False
    wall_s: float = 0.0
    loop_s: float = 0.0
    resumed_from: list[int] = field(default_factory=list)

    @property
    def reused(self) -> bool:
        return not self.trained


@dataclass
class StageInputs:
    """Everything a stage may read besides the config: the data, the store, and its upstream artifacts by role."""

    dataset: EpisodeDataset
    store: ArtifactStore
    upstream: dict[str, Artifact] = field(default_factory=dict)  # role ("codec", "prior", ...) -> artifact
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress: bool = True
    records: list[StageRun] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # in-process memo (windows, normalizer)


Produce = Callable[[Config, StageInputs, ArtifactWriter], None]


@dataclass(frozen=True)
class Stage:
    """One node of the stage DAG.

    - `name`: the artifact folder and the `stage.<name>.*` columns (`vae`, `raw_prior`, ...);
    - `role`: what downstream stages and the planner ask for (`codec`, `prior`, `support`, `energy`, `bc`);
      a modeling selection swaps the stage that fills a role, never the role;
    - `reads`: the config fields (dotted; a section name covers the whole section) its result depends on:
      the key is computed from them, so a field read but not declared would silently reuse a stale artifact
      (`tests/test_stage_dag.py` records every field `produce` reads and fails on an undeclared one);
    - `upstream`: the roles whose artifacts it consumes (their keys are part of its key);
    - `trains`: a gradient loop (every rank of a worker group runs it) or sampling only (rank 0 alone);
    - `version` and `code`: the modules whose code decides its output; their fingerprint is recorded per
      version in `ld/stages/fingerprints.json`, and a test fails when the code changed without a new version,
      so an upgraded ld never reuses artifacts made by older math;
    - `produce(cfg, inputs, out)`: trains or samples, and writes the artifact's files into `out`;
    - `diagnostics`: manifest metrics copied into every row of the trial (`stage.<name>.<metric>`), so e.g. a
      degenerate contrastive target or a diverged E-MSE is visible in the results table itself.
    """

    name: str
    role: str
    reads: tuple[str, ...]
    upstream: tuple[str, ...]
    trains: bool
    version: int
    code: tuple[str, ...]
    produce: Produce
    summary: str = ""
    diagnostics: tuple[str, ...] = ()

    def key_config(self, cfg: Config) -> dict[str, Any]:
        config = subset(cfg, list(self.reads))
        return config if self.version == 1 else {**config, "_stage_version": self.version}

    def upstream_keys(self, inputs: StageInputs) -> dict[str, str]:
        """Upstream artifact name -> key, for the roles this stage consumes."""
        return {inputs.upstream[r].stage: inputs.upstream[r].key for r in self.upstream}

    def key(self, cfg: Config, inputs: StageInputs) -> str:
        return stage_key(self.name, self.key_config(cfg), self.upstream_keys(inputs), inputs.dataset.fingerprint,
                         cfg.seed)


def build_stage(stage: Stage, cfg: Config, inputs: StageInputs) -> Artifact:
    """Reuse the stage's artifact if the store has its key, else produce and publish it; record the run and
    make the artifact the `stage.role` input of the stages downstream."""
    missing = [r for r in stage.upstream if r not in inputs.upstream]
    if missing:
        raise RuntimeError(f"stage {stage.name} needs {missing} built first (the DAG order in ld.stages.dag)")
    key = stage.key(cfg, inputs)
    manifest = {
        "config": subset(cfg, list(stage.reads)),
        "upstream": stage.upstream_keys(inputs),
        "dataset": {"name": inputs.dataset.info.name, "fingerprint": inputs.dataset.fingerprint},
        "seed": cfg.seed,
        "stage_version": stage.version,
    }
    run = StageRun(stage.name, key)
    t0 = time.perf_counter()

    def produce(out: ArtifactWriter) -> None:
        run.trained = True
        stage.produce(cfg, inputs, out)

    artifact, _ = inputs.store.build(stage.name, key, manifest, produce, run=run, trains=stage.trains)
    run.wall_s = round(time.perf_counter() - t0, 3)
    inputs.records.append(run)
    inputs.upstream[stage.role] = artifact
    return artifact
