"""One trial, top to bottom: data -> vae -> prior -> support -> energy -> evaluate -> Parquet rows.

This is plain Python with no Ray: `latentdiffuser run` calls it directly, and the Ray Tune trainable (a later layer)
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

import pandas as pd
import torch

from ld.config import Config
from ld.data import load_dataset
from ld.data.types import EpisodeDataset
from ld.evaluation import reuse
from ld.evaluation.rollout import evaluate
from ld.planning.planner import Planner, RecedingHorizonPolicy
from ld.results import episode_rows, to_frame
from ld.stages import bc as bc_stage
from ld.stages import dag
from ld.stages.artifact import Artifact, ArtifactStore
from ld.stages.common import StageInputs, StageRun, build_stage
from ld.stages.training import resolve_device


def trial_id(cfg: Config) -> str:
    return hashlib.sha256(json.dumps(cfg.flat(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_stages(cfg: Config, dataset: EpisodeDataset, store: ArtifactStore, device: torch.device,
                 progress: bool = True) -> tuple[dict[str, Artifact], list[StageRun]]:
    """Build (or reuse) every stage of `dag.plan(cfg)`, in order -> artifacts by stage name, and the runs."""
    inputs = StageInputs(dataset=dataset, store=store, device=device, progress=progress)
    artifacts: dict[str, Artifact] = {}
    for stage in dag.plan(cfg):
        artifacts[stage.name] = build_stage(stage, cfg, inputs)
    return artifacts, inputs.records


@dataclass
class TrialResult:
    frame: pd.DataFrame
    records: list[StageRun]
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


def stage_columns(records: list[StageRun], artifacts: dict[str, Artifact]) -> dict[str, object]:
    cols: dict[str, object] = {}
    for r in records:
        metrics = artifacts[r.stage].manifest.get("metrics", {})
        for name in dag.by_name(r.stage).diagnostics:  # NaN when absent
            value = metrics.get(name)
            cols[f"stage.{r.stage}.{name}"] = float("nan") if value is None else float(value)
        cols[f"stage.{r.stage}.key"] = r.key
        cols[f"stage.{r.stage}.version"] = int(dag.by_name(r.stage).version)  # `latentdiffuser report` flags older math
        cols[f"stage.{r.stage}.cached"] = r.reused
        cols[f"stage.{r.stage}.wall_s"] = float(r.wall_s)
        cols[f"stage.{r.stage}.train_s"] = float(
            0.0 if r.reused else artifacts[r.stage].manifest.get("wall_time_s", r.wall_s))
    return cols


SELECT = "+select"  # the suffix of a planner variant that selects among N > 1 candidate plans (beyond the paper)


def planner_variants(cfg: Config) -> tuple[str, str]:
    """The row labels of the guided planner and of its unguided prior: `latentdiffuser` and `prior` for the paper's
    single-sample planner, `latentdiffuser+select` and `prior+select` with `planning.candidates` > 1, so that
    selection is reported apart and never counted in the paper's bars (`ld.analysis.rows.method_rows`)."""
    suffix = SELECT if cfg.planning.candidates > 1 else ""
    return "latentdiffuser" + suffix, "prior" + suffix


def _planner_policy(cfg: Config, artifacts: dict[str, Artifact], device: torch.device, guided: bool):
    planner = Planner(cfg, artifacts, guided=guided, device=device, seed=cfg.seed, fast=cfg.eval.fast)
    return RecedingHorizonPolicy(planner, cfg.eval.replan_every)


def evaluate_trial(cfg: Config, ds: EpisodeDataset, artifacts: dict[str, Artifact], records: list[StageRun],
                   device: torch.device, *, suite: str = "run", progress: bool = True, baselines: bool = True,
                   timings: Optional[dict[str, float]] = None, only: Optional[set[str]] = None,
                   store: Optional[ArtifactStore] = None) -> pd.DataFrame:
    """The evaluation phase of a trial: plan in the real environment with the trained stages -> episode rows.

    `only` restricts it to some variants (e.g. {"bc"} to re-evaluate a retrained baseline). With a `store`, the
    baselines (prior, BC) are evaluated once per policy and reused by sibling trials (`ld.evaluation.reuse`);
    every row says which evaluation it came from (`eval_key`) and whether this trial ran it (`eval_cached`)."""
    timings = timings if timings is not None else {}
    stage_cols = stage_columns(records, artifacts)
    tid = trial_id(cfg)
    rows: list[dict] = []
    # (variant, policy factory, config fields that differ from cfg for it)
    variants: list[tuple[str, Callable[[], object], dict]] = []
    method, prior = planner_variants(cfg)
    # the prior's rows say beta = 0 (no guidance); the beta its resampling used, when that was the trial's, stays
    prior_overrides: dict = {"beta": 0.0}
    if cfg.planning.candidates > 1 and cfg.planning.selection_beta is None:
        prior_overrides["planning.selection_beta"] = cfg.beta
    if cfg.guided:
        variants.append((method, lambda: _planner_policy(cfg, artifacts, device, guided=True), {}))
    if not cfg.guided or baselines:
        variants.append((prior, lambda: _planner_policy(cfg, artifacts, device, guided=False), prior_overrides))
    if cfg.eval.bc_baseline:
        variants.append(("bc", lambda: bc_stage.BCPolicy(artifacts[dag.BC.name], device), {}))
    # the behavior data's mean normalized return, in every row: the reference a reader compares bars with
    stage_cols = {**stage_cols, "behavior_score": ds.behavior_score()}
    if only is not None:
        variants = [v for v in variants if v[0] in only]
    for variant, make_policy, overrides in variants:
        t1 = time.perf_counter()

        def run(make_policy=make_policy, variant=variant):
            return evaluate(make_policy(), ds.info, cfg.eval.episodes, cfg.seed, cfg.eval.max_steps, progress,
                            desc=f"eval[{variant}]")

        key, cached = "", False
        if store is not None and variant in reuse.REUSED_VARIANTS and reuse.enabled():
            results, key, cached = reuse.evaluate_once(store, cfg, variant, artifacts, device.type, run)
        else:
            results = run()
        timings[f"eval_{variant}_s"] = time.perf_counter() - t1
        rows += episode_rows(cfg, suite=suite, trial_id=tid, variant=variant, results=results,
                             dataset_info=ds.info, dataset_fingerprint=ds.fingerprint,
                             stage_columns={**stage_cols, "eval_key": key, "eval_cached": cached},
                             config_overrides=overrides)
    return to_frame(rows)


def run_trial(cfg: Config, store_root: str | Path, *, suite: str = "run", progress: bool = True,
              dataset: Optional[EpisodeDataset] = None, baselines: bool = True,
              store: Optional[ArtifactStore] = None, device: Optional[torch.device] = None,
              evaluate: bool = True) -> TrialResult:
    """Train (or reuse) every stage of `cfg`, evaluate the planner and its baselines, return episode rows.

    This is the one orchestration of a trial: `latentdiffuser run` calls it, and so does the Ray layer
    (`ld.distributed.trial.execute_trial`, in a Tune trial or on every rank of a Ray Train worker group).
    `store` replaces the plain `ArtifactStore(store_root)` (the Ray layer passes one with checkpoint hooks
    and rank coordination), `device` the configured one (a worker's GPU), and `evaluate=False` stops after
    training (the ranks of a worker group other than 0); the frame is then empty.
    """
    dev = setup_torch(cfg)
    device = device if device is not None else dev
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(cfg.dataset)
    timings["data_s"] = time.perf_counter() - t0
    store = store if store is not None else ArtifactStore(Path(store_root))
    artifacts, records = train_stages(cfg, ds, store, device, progress)
    frame = pd.DataFrame()
    if evaluate:
        frame = evaluate_trial(cfg, ds, artifacts, records, device, suite=suite, progress=progress,
                               baselines=baselines, timings=timings, store=store)
    return TrialResult(frame, records, artifacts, ds, timings)
