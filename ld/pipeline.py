"""One trial, top to bottom: data -> vae -> prior -> support -> energy -> evaluate -> Parquet rows.

This is plain Python with no Ray: `ld run` calls it directly, and the Ray Tune trainable (a later layer)
calls the same function inside a trial. Stages are looked up in the content-addressed artifact store
first, so a second run -- or a sibling trial differing only in a downstream field -- reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from ld.config import Config
from ld.data import load_dataset
from ld.data.types import EpisodeDataset
from ld.evaluation.rollout import evaluate
from ld.planning.planner import Planner, RecedingHorizonPolicy
from ld.results import episode_rows, to_frame
from ld.stages import bc as bc_stage
from ld.stages import energy as energy_stage
from ld.stages import prior as prior_stage
from ld.stages import support as support_stage
from ld.stages import vae as vae_stage
from ld.stages.artifact import Artifact, ArtifactStore
from ld.stages.common import StageInputs, StageRecord
from ld.stages.training import resolve_device


def stage_plan(cfg: Config) -> list:
    """The stage modules this config walks, in dependency order (beta = 0 needs no energy model)."""
    stages = [vae_stage, prior_stage, support_stage, energy_stage]
    if cfg.beta == 0:
        stages = [vae_stage, prior_stage]
    return stages


def trial_id(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(cfg.flat(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_stages(cfg: Config, dataset: EpisodeDataset, store: ArtifactStore, device: torch.device,
                 progress: bool = True) -> tuple[dict[str, Artifact], list[StageRecord]]:
    inputs = StageInputs(dataset=dataset, store=store, device=device, progress=progress)
    for stage in stage_plan(cfg):
        art = stage.run(cfg, inputs)
        inputs.upstream[stage.stage_name(cfg)] = art
    if cfg.eval.bc_baseline:
        inputs.upstream[bc_stage.NAME] = bc_stage.run(cfg, inputs)
    return inputs.upstream, inputs.records


@dataclass
class TrialResult:
    frame: pd.DataFrame
    records: list[StageRecord]
    artifacts: dict[str, Artifact]
    dataset: EpisodeDataset
    timings: dict[str, float] = field(default_factory=dict)


def setup_torch(cfg: Config) -> torch.device:
    """Seed torch, resolve the device and set CPU threads: what every process running a trial does first."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.train.device)
    threads = cfg.train.cpu_threads
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)
    return device


# Training diagnostics copied from a stage's manifest into every row of the trial (NaN when absent):
# the contrastive target's effective sample size (fraction of M) and the step at which E-MSE stopped being
# finite, so a degenerate or diverged energy is visible in the results table itself.
DIAGNOSTICS = {
    "energy": ("target_ess_mean", "target_ess_p10", "nonfinite_step", "final_loss"),
    "raw_energy": ("target_ess_mean", "target_ess_p10", "nonfinite_step", "final_loss"),
    "bc": ("final_loss", "converged"),
}


def stage_columns(records: list[StageRecord], artifacts: dict[str, Artifact]) -> dict[str, object]:
    cols: dict[str, object] = {}
    for r in records:
        metrics = artifacts[r.stage].manifest.get("metrics", {})
        for name in DIAGNOSTICS.get(r.stage, ()):
            value = metrics.get(name)
            cols[f"stage.{r.stage}.{name}"] = float("nan") if value is None else float(value)
        cols[f"stage.{r.stage}.key"] = r.key
        cols[f"stage.{r.stage}.cached"] = r.reused
        cols[f"stage.{r.stage}.wall_s"] = float(r.wall_time_s)
        cols[f"stage.{r.stage}.train_s"] = float(
            0.0 if r.reused else artifacts[r.stage].manifest.get("wall_time_s", r.wall_time_s))
    return cols


def _planner_policy(cfg: Config, artifacts: dict[str, Artifact], device: torch.device, guided: bool):
    planner = Planner(cfg, artifacts, guided=guided, device=device, seed=cfg.seed)
    return RecedingHorizonPolicy(planner, cfg.eval.replan_every)


def evaluate_trial(cfg: Config, ds: EpisodeDataset, artifacts: dict[str, Artifact], records: list[StageRecord],
                   device: torch.device, *, suite: str = "run", progress: bool = True, baselines: bool = True,
                   timings: Optional[dict[str, float]] = None, only: Optional[set[str]] = None) -> pd.DataFrame:
    """The evaluation phase of a trial: plan in the real environment with the trained stages -> episode rows.

    `only` restricts it to some variants (e.g. {"bc"} to re-evaluate a retrained baseline)."""
    timings = timings if timings is not None else {}
    stage_cols = stage_columns(records, artifacts)
    tid = trial_id(cfg)
    rows: list[dict] = []
    # (variant, policy factory, config fields that differ from cfg for it)
    variants: list[tuple[str, Callable[[], object], dict]] = []
    if cfg.beta > 0:
        variants.append(("latentdiffuser", lambda: _planner_policy(cfg, artifacts, device, guided=True), {}))
    if cfg.beta == 0 or baselines:
        variants.append(("prior", lambda: _planner_policy(cfg, artifacts, device, guided=False), {"beta": 0.0}))
    if cfg.eval.bc_baseline:
        variants.append(("bc", lambda: bc_stage.BCPolicy(artifacts[bc_stage.NAME], device), {}))
    # the behavior data's mean normalized return, in every row: the reference a reader compares bars with
    stage_cols = {**stage_cols, "behavior_score": ds.behavior_score()}
    if only is not None:
        variants = [v for v in variants if v[0] in only]
    for variant, make_policy, overrides in variants:
        t1 = time.perf_counter()
        results = evaluate(make_policy(), ds.info, cfg.eval.episodes, cfg.seed, cfg.eval.max_steps, progress,
                           desc=f"eval[{variant}]")
        timings[f"eval_{variant}_s"] = time.perf_counter() - t1
        rows += episode_rows(cfg, suite=suite, trial_id=tid, variant=variant, results=results,
                             dataset_info=ds.info, dataset_fingerprint=ds.fingerprint, stage_columns=stage_cols,
                             config_overrides=overrides)
    return to_frame(rows)


def run_trial(cfg: Config, store_root: str | Path, *, suite: str = "run", progress: bool = True,
              dataset: Optional[EpisodeDataset] = None, baselines: bool = True,
              store: Optional[ArtifactStore] = None) -> TrialResult:
    """Train (or reuse) every stage of `cfg`, evaluate the planner and its baselines, return episode rows.

    The phases (`setup_torch`, `load_dataset`, `train_stages`, `evaluate_trial`) are public so that the Ray
    layer (`ld.distributed`) runs the very same steps, on a Tune trial or on Ray Train workers. `store`
    replaces the plain `ArtifactStore(store_root)` (the Ray layer passes one with checkpoint hooks).
    """
    device = setup_torch(cfg)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(cfg.dataset)
    timings["data_s"] = time.perf_counter() - t0
    store = store if store is not None else ArtifactStore(Path(store_root))
    artifacts, records = train_stages(cfg, ds, store, device, progress)
    frame = evaluate_trial(cfg, ds, artifacts, records, device, suite=suite, progress=progress,
                           baselines=baselines, timings=timings)
    return TrialResult(frame, records, artifacts, ds, timings)


def bootstrap_ci(x: np.ndarray, reps: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (float("nan"), float("nan"))
    if len(x) == 1:
        return (float(x[0]), float(x[0]))
    rng = np.random.default_rng(seed)
    means = rng.choice(x, size=(reps, len(x)), replace=True).mean(1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))
