"""Synthetic suite results with the exact results schema: the suite's own trials (ld.suite), rows built by
ld.results.episode_rows, the sweep columns `latentdiffuser sweep` adds, one file per trial as `latentdiffuser sweep`
writes them. Scores are made up (deterministic) so that analysis tests run in seconds without training anything."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ld.data.builtin import GENERATOR_VERSION
from ld.data.types import DatasetInfo
from ld.evaluation.rollout import EpisodeResult
from ld.pipeline import trial_id
from ld.results import episode_rows, to_frame, write_parquet
from ld.suite import Suite, Trial, load_suite

REPO = Path(__file__).resolve().parents[1]
ENV_IDS = {"pointmaze-umaze": "PointMaze_UMaze-v3", "pointmaze-medium": "PointMaze_Medium-v3",
           "pointmaze-large": "PointMaze_Large-v3"}


def default_score(trial: Trial, variant: str, episode: int) -> float:
    """Depends on the setting (a stable hash of its label), the seed and the episode; the prior is worse."""
    h = zlib.crc32(f"{trial.axis}|{trial.value}".encode()) % 60
    return 20.0 + h + 3.0 * trial.config.seed + 1.5 * episode - (15.0 if variant == "prior" else 0.0)


def write_suite_results(storage: Path, suite_name: str | Path, scale: str = "smoke", *,
                        score: Callable[[Trial, str, int], float] = default_score,
                        skip: Optional[Callable[[Trial], bool]] = None) -> tuple[Suite, list[Trial], Path]:
    """Write `<storage>/results/<suite>/trial=<id>-seed=<seed>.parquet` for every trial of the suite at
    `scale` (except those `skip` selects); `suite_name` names a file of ablations/ or is a suite YAML path.
    Returns the suite, the trials written and the results folder."""
    suite = load_suite(suite_name if str(suite_name).endswith(".yaml") else REPO / "ablations" / f"{suite_name}.yaml")
    out = storage / "results" / suite.name
    written = []
    for t in suite.trials(scale):
        if skip is not None and skip(t):
            continue
        cfg = t.config
        name = cfg.dataset.split(":", 1)[-1]
        info = DatasetInfo(name=name, source=cfg.dataset, env_id=ENV_IDS.get(name, "HalfCheetah-v5"),
                           generator_version=GENERATOR_VERSION if cfg.dataset.startswith("builtin:") else None)
        tid = trial_id(cfg)
        variants = [("latentdiffuser", {}), ("prior", {"beta": 0.0})] if cfg.beta > 0 else [("prior", {})]
        rows = []
        for variant, over in variants:
            results = [EpisodeResult(episode=e, env_seed=1000 * cfg.seed + e,
                                     episode_return=float(score(t, variant, e)),
                                     normalized_score=float(score(t, variant, e)), length=cfg.eval.max_steps or 100,
                                     success=False, plan_ms_per_decision=1.0, env_steps_per_s=100.0,
                                     predicted_return=0.0, energy=0.0)
                       for e in range(cfg.eval.episodes)]
            rows += episode_rows(cfg, suite=suite.name, trial_id=tid, variant=variant, results=results,
                                 dataset_info=info, dataset_fingerprint="f" * 16,
                                 stage_columns={"stage.vae.cached": False}, config_overrides=over)
        df = to_frame(rows)
        df["sweep.axis"] = t.axis
        df["sweep.value"] = str(t.value)
        write_parquet(df, out / f"trial={tid}-seed={cfg.seed}.parquet")
        written.append(t)
    return suite, written, out


def rng_scores(seed: int) -> Callable[[Trial, str, int], float]:
    rng = np.random.default_rng(seed)
    cache: dict = {}

    def score(t: Trial, variant: str, e: int) -> float:
        key = (t.label, t.config.seed, variant, e)
        if key not in cache:
            cache[key] = float(rng.normal(50, 20))
        return cache[key]

    return score


def figure3_with_two_maze_tasks(folder: Path) -> Path:
    """ablations/figure3.yaml at `small` with one locomotion task and two maze tasks: one family takes the
    one-task path (mean over seeds), the other the IQM / stratified-bootstrap path, in fewer trials than the
    shipped four tasks."""
    import yaml

    body = yaml.safe_load((REPO / "ablations" / "figure3.yaml").read_text())
    body["scales"]["small"]["axes"]["dataset"] = ["builtin:halfcheetah-medium-replay", "builtin:pointmaze-umaze",
                                                  "builtin:pointmaze-medium"]
    path = Path(folder) / "figure3.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
