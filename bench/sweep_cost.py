"""What the shared artifact cache saves on a real suite (issue 7, target 5), as JSON.

The figure5 suite (ablations/figure5.yaml) at the `smoke` scale is expanded by `ld.suite` and every trial's
stages are trained in-process with `ld.pipeline.train_stages` twice:

* cached: one `ArtifactStore` for all trials (what `latentdiffuser sweep` does): a stage whose inputs a previous trial
  already trained is reused (a beta ablation trains one VAE and one prior);
* uncached: a fresh store per trial: every trial trains every stage it walks.

Reported: stage runs trained and wall time both ways, their ratios, and the evaluation time of every trial,
so whole-trial wall times can be compared too. Evaluation is measured both ways as well: with the store, the
baselines (unguided prior, BC) are evaluated once per policy and read back by sibling trials
(`ld.evaluation.reuse`); without it, every trial evaluates its own. The dry count gives both numbers for every
scale of the suite. Target: >= 2.5x fewer stage runs with the cache. No Ray is involved (the count is a
property of the keys).

figure5's base dataset (halfcheetah-medium-expert) is expensive to generate, so the trials run on a tiny
built-in maze file (--set dataset=..., made here with `builtin.make(..., episodes=6)`).

    python bench/sweep_cost.py                    # all figure5 smoke trials
    python bench/sweep_cost.py --quick            # 4 trials, a few training steps
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from ld.data import load_dataset
from ld.pipeline import evaluate_trial, setup_torch, train_stages
from ld.stages.artifact import ArtifactStore
from ld.suite import load_suite

SUITE = Path(__file__).resolve().parent.parent / "ablations" / "figure5.yaml"


def dry_count(trials) -> dict:
    """Stage runs with and without the cache from the stage keys alone (no training): a stage's identity is
    its name, the config fields it reads, the seed, the dataset and everything upstream of it (the content
    key's ingredients, with the dataset's name standing in for its fingerprint). A baseline evaluation's
    identity is its policy's stage and the fields of `ld.evaluation.reuse.EVAL_READS`."""
    from ld.config import subset
    from ld.evaluation import reuse
    from ld.stages import dag

    seen, walked = set(), 0
    evals, evals_walked = set(), 0
    for t in trials:
        cfg, ids = t.config, {}
        for stage in dag.plan(cfg):
            ident = (stage.name, json.dumps(stage.key_config(cfg), sort_keys=True, default=str), cfg.seed,
                     cfg.dataset, tuple(ids[r] for r in stage.upstream))
            ids[stage.role] = ident
            seen.add(ident)
            walked += 1
        baselines = ["prior"] + (["bc"] if cfg.eval.bc_baseline else [])  # run_trial's default baselines
        for variant in baselines:
            role = "prior" if variant == "prior" else "bc"
            evals.add((variant, ids[role], json.dumps(subset(cfg, list(reuse.EVAL_READS[variant])),
                                                      sort_keys=True, default=str), cfg.seed))
            evals_walked += 1
    return {"trials": len(trials), "stage_runs_cached": len(seen), "stage_runs_uncached": walked,
            "ratio": round(walked / max(1, len(seen)), 2),
            "baseline_evals_reused": len(evals), "baseline_evals_per_trial": evals_walked}


def train_all(trials, ds, root: Path, shared: bool) -> dict:
    t0 = time.perf_counter()
    trained, walked = Counter(), 0
    per_trial = []
    artifacts_of = []
    for i, t in enumerate(trials):
        store = ArtifactStore(root if shared else root / f"trial{i}")
        device = setup_torch(t.config)
        t1 = time.perf_counter()
        artifacts, records = train_stages(t.config, ds, store, device, progress=False)
        per_trial.append(round(time.perf_counter() - t1, 2))
        walked += len(records)
        for r in records:
            if not r.reused:
                trained[r.stage] += 1
        artifacts_of.append((artifacts, records))
    return {"stage_runs_trained": sum(trained.values()), "stage_runs_walked": walked,
            "trained_by_stage": dict(trained), "train_wall_s": round(time.perf_counter() - t0, 2),
            "per_trial_train_s": per_trial, "_artifacts": artifacts_of}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, default=SUITE)
    ap.add_argument("--scale", default="smoke")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--dataset", default=None, help="default: a 6-episode built-in maze file")
    ap.add_argument("--limit", type=int, default=None, help="first N trials only")
    ap.add_argument("--axes", nargs="+", default=None, help="only these axes (the base point is 'default')")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ld-bench-sweep-"))
    if args.dataset is None:
        from ld.data.builtin import make

        args.dataset = str(make("pointmaze-umaze", work / "umaze.hdf5", episodes=6, progress=False))
    sets = [f"dataset={args.dataset}", *args.sets]
    if args.quick:
        sets += ["vae.steps=5", "prior.steps=5", "energy.steps=5", "eval.max_steps=4", "eval.episodes=1"]
        args.axes = args.axes or ["default", "beta"]
        args.limit = args.limit or 4
    suite = load_suite(args.suite)
    trials = suite.trials(args.scale, sets)
    n_all = len(trials)
    if args.axes:
        trials = [t for t in trials if t.axis in args.axes]
    if args.limit:
        trials = trials[: args.limit]
    report: dict = {"benchmark": "sweep_cost", "machine": machine(), "suite": suite.name, "scale": args.scale,
                    "sets": sets, "trials": len(trials), "trials_in_suite": n_all,
                    "axes": [f"{t.axis}={t.value}" for t in trials]}
    report["dry_count"] = {sc: dry_count(suite.trials(sc, sets)) for sc in ("smoke", "small", "paper")}
    report["dry_count"]["this_run"] = dry_count(trials)
    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    # warm-up (first-call costs: imports, allocator, window building) paid by neither mode
    train_stages(trials[0].config, ds, ArtifactStore(work / "warmup"), setup_torch(trials[0].config), progress=False)
    cached = train_all(trials, ds, work / "shared", shared=True)
    print(f"[sweep_cost] cached: {cached['stage_runs_trained']} stage runs, {cached['train_wall_s']} s",
          file=sys.stderr, flush=True)
    uncached = train_all(trials, ds, work / "fresh", shared=False)
    print(f"[sweep_cost] uncached: {uncached['stage_runs_trained']} stage runs, {uncached['train_wall_s']} s",
          file=sys.stderr, flush=True)
    eval_s = eval_per_trial_s = 0.0
    if not args.no_eval:  # baselines once per policy (the store), then every trial evaluating its own
        shared = ArtifactStore(work / "shared")
        t1 = time.perf_counter()
        for t, (artifacts, records) in zip(trials, cached["_artifacts"]):
            evaluate_trial(t.config, ds, artifacts, records, setup_torch(t.config), progress=False, store=shared)
        eval_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        for t, (artifacts, records) in zip(trials, cached["_artifacts"]):
            evaluate_trial(t.config, ds, artifacts, records, setup_torch(t.config), progress=False)
        eval_per_trial_s = time.perf_counter() - t1
    for d in (cached, uncached):
        d.pop("_artifacts")
    runs_ratio = uncached["stage_runs_trained"] / max(1, cached["stage_runs_trained"])
    report.update(
        cached=cached, uncached=uncached, eval_wall_s=round(eval_s, 2),
        eval_wall_s_every_trial_its_own_baselines=round(eval_per_trial_s, 2),
        stage_runs_ratio=round(runs_ratio, 2),
        train_wall_ratio=round(uncached["train_wall_s"] / max(cached["train_wall_s"], 1e-9), 2),
        trial_wall_ratio=(round((uncached["train_wall_s"] + eval_s) / (cached["train_wall_s"] + eval_s), 2)
                          if not args.no_eval else None),
        target={"stage_runs_ratio_needed": 2.5, "met": bool(runs_ratio >= 2.5)},
    )
    return finish(report, t0)


if __name__ == "__main__":
    sys.exit(main())
