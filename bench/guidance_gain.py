"""Does energy guidance plan better than the prior it guides, and than imitation? Measured, printed as JSON.

For each dataset and training seed: train every stage at the given preset (or reuse them from --out), then
evaluate, on the same environment seeds and full episodes unless the preset caps them:
- the energy-guided planner (`latentdiffuser`, the config's beta),
- the same prior unguided (`prior`, beta = 0),
- behavior cloning on the same data (`bc`, CORL's BC),
and read the behavior data's mean normalized return off the dataset. With `--betas`, the guided planner is
also evaluated at each extra beta (each trains only its own energy model; VAE, prior and supports are shared).

Every (dataset, seed, beta) writes its own Parquet file under --out/results/ as soon as it is done, and a
later run skips the files that exist, so a long benchmark can be run a seed at a time, in parallel processes
(`--seeds 0` in one, `--seeds 1` in another), and summarized at the end (`--summarize`: read every file,
train nothing).

Statistics: 95% percentile-bootstrap CIs over episodes; a "gain" is the paired per-episode difference
(episode i of both variants starts from the same state), over all seeds and per seed.

    python bench/guidance_gain.py --datasets builtin:halfcheetah-medium-expert --seeds 0 1 2 --betas 0 1 3 10 100
    python bench/guidance_gain.py --quick              # smoke preset, tiny data, 1 seed (CI checks the JSON)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from ld.analysis.stats import bootstrap_ci, task_mean_ci
from ld.config import resolve
from ld.pipeline import run_trial

DEFAULT_DATASETS = ("builtin:halfcheetah-medium-expert", "builtin:halfcheetah-medium-replay",
                    "builtin:pointmaze-umaze")


def _file(out: Path, spec: str, seed: int, beta: float | None) -> Path:
    tag = "main" if beta is None else f"beta={beta:g}"
    return out / "results" / f"{Path(spec).stem.replace(':', '_')}-seed={seed}-{tag}.parquet"


def _is(df: pd.DataFrame, variant: str) -> pd.Series:
    """Rows of `variant`, with or without selection among candidate plans (`--set planning.candidates=16` makes
    the planner's rows `latentdiffuser+select` and `prior+select`; the report's `sets` says which ran)."""
    return df.variant.str.replace("+select", "", regex=False) == variant


def _scores(df: pd.DataFrame, variant: str) -> pd.DataFrame:
    return df[_is(df, variant)].sort_values(["seed", "episode"])


def episode_diffs(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per matching (seed, episode): the score difference a - b (`diff`); episode i of both starts alike."""
    m = a.merge(b, on=["seed", "episode"], suffixes=("_a", "_b"))
    return m.assign(diff=m["normalized_score_a"] - m["normalized_score_b"])[["seed", "episode", "diff"]]


def paired(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Paired difference a - b over matching (seed, episode), pooled and per seed."""
    m = episode_diffs(a, b)
    diff = m["diff"].to_numpy()
    lo, hi = bootstrap_ci(diff, reps=5000)
    per_seed = {}
    for seed, g in m.groupby("seed"):
        d = g["diff"].to_numpy()
        slo, shi = bootstrap_ci(d, reps=5000)
        per_seed[int(seed)] = {"mean": round(float(d.mean()), 2), "ci95": [round(slo, 2), round(shi, 2)]}
    return {"mean": float(diff.mean()) if len(diff) else float("nan"), "ci95": [lo, hi], "n": int(len(diff)),
            "beyond_ci": bool(lo > 0), "per_seed": per_seed,
            "every_seed_beyond_ci": bool(per_seed) and all(v["ci95"][0] > 0 for v in per_seed.values())}


def describe(g: pd.DataFrame) -> dict:
    x = g["normalized_score"].to_numpy()
    return {"mean": float(x.mean()), "ci95": list(bootstrap_ci(x)), "success": float(g["success"].mean()),
            "per_seed": {int(s): round(float(v), 2) for s, v in g.groupby("seed")["normalized_score"].mean().items()}}


def summarize(df: pd.DataFrame, behavior: float | None = None) -> dict:
    main = df[df["bench_beta"].isna()] if "bench_beta" in df else df
    guided, prior, bc = _scores(main, "latentdiffuser"), _scores(main, "prior"), _scores(main, "bc")
    out: dict = {"episodes_per_variant": int(len(guided)), "seeds": sorted(int(s) for s in guided["seed"].unique()),
                 "episode_limit": int(main["episode_limit"].iloc[0]) if "episode_limit" in main else None,
                 "capped": bool(main["capped"].any()) if "capped" in main else None,
                 "guided": describe(guided), "prior_beta0": describe(prior)}
    if len(bc):
        out["bc"] = describe(bc)
    out["behavior_data_mean"] = behavior
    out["gain"] = paired(guided, prior)
    out["guided_beats_prior_beyond_ci"] = out["gain"]["beyond_ci"]
    if len(bc):
        out["gain_vs_bc"] = paired(guided, bc)
    for col in ("stage.energy.target_ess_mean", "stage.energy.target_ess_p10", "stage.bc.converged"):
        if col in guided:
            out[col.replace("stage.", "")] = float(guided.groupby("seed")[col].first().mean())
    if "bench_beta" in df and df["bench_beta"].notna().any():
        curve = {}
        base = prior
        for beta, g in df[df["bench_beta"].notna()].groupby("bench_beta"):
            g = _scores(g, "latentdiffuser" if beta > 0 else "prior")
            curve[f"{beta:g}"] = {**describe(g), "vs_beta0": paired(g, base)}
        out["beta_curve"] = curve
    return out


DIFFUSER_D4RL_AVERAGE = 77.5  # Diffuser's published average over D4RL's nine locomotion sets (the target)


def average(mains: dict[str, pd.DataFrame]) -> dict:
    """Over the datasets given, each weighing the same: every variant's mean of per-set means and the average
    paired gains, each with a stratified bootstrap CI over episodes (`ld.analysis.stats.task_mean_ci`)."""
    out: dict = {"datasets": len(mains)}
    scores = {v: [_scores(df, v) for df in mains.values()] for v in ("latentdiffuser", "prior", "bc")}
    for v, name in (("latentdiffuser", "guided"), ("prior", "prior_beta0"), ("bc", "bc")):
        if all(len(g) for g in scores[v]):
            m, lo, hi = task_mean_ci([g["normalized_score"] for g in scores[v]])
            out[name] = {"mean": round(m, 2), "ci95": [round(lo, 2), round(hi, 2)]}
    for one, other, name in (("latentdiffuser", "prior", "guided_minus_prior"),
                             ("latentdiffuser", "bc", "guided_minus_bc"), ("prior", "bc", "prior_minus_bc")):
        if not all(len(g) for g in scores[one]) or not all(len(g) for g in scores[other]):
            continue
        m, lo, hi = task_mean_ci([episode_diffs(a, b)["diff"] for a, b in zip(scores[one], scores[other])])
        out[name] = {"mean": round(m, 2), "ci95": [round(lo, 2), round(hi, 2)], "beyond_ci": bool(lo > 0)}
    return out


def targets(report: dict) -> dict:
    """The issue's targets, each as measured (True / False), so unmet ones are reported, not hidden."""
    out = {}
    for spec, d in report["datasets"].items():
        name = spec.split(":")[-1]
        t = {"guided_beats_prior_beyond_ci": d["gain"]["beyond_ci"],
             "guided_beats_prior_every_seed": d["gain"]["every_seed_beyond_ci"]}
        if "gain_vs_bc" in d:
            t["guided_beats_bc_beyond_ci"] = d["gain_vs_bc"]["beyond_ci"]
            t["guided_beats_bc_every_seed"] = d["gain_vs_bc"]["every_seed_beyond_ci"]
        if name == "halfcheetah-medium-expert":
            t["gain_vs_prior_at_least_10"] = d["gain"]["mean"] >= 10
            t["guided_at_least_90_every_seed"] = all(v >= 90 for v in d["guided"]["per_seed"].values())
            if "beta_curve" in d:
                t["beta_curve_rises_from_0_beyond_ci"] = any(
                    v["vs_beta0"]["beyond_ci"] for b, v in d["beta_curve"].items() if float(b) > 0)
        out[spec] = t
    avg = report.get("average")
    if avg and "guided" in avg:
        out["average"] = {"guided_beats_bc_beyond_ci": avg.get("guided_minus_bc", {}).get("beyond_ci", False),
                          "guided_beats_prior_beyond_ci": avg.get("guided_minus_prior", {}).get("beyond_ci", False),
                          f"guided_reaches_diffusers_{DIFFUSER_D4RL_AVERAGE}":
                              avg["guided"]["mean"] >= DIFFUSER_D4RL_AVERAGE}
    return out


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp)
    os.replace(tmp, path)


def refresh_bc(df: pd.DataFrame, cfg, args, path: Path) -> pd.DataFrame:
    """A result file whose BC rows came from an older BC that had not converged (and has another key) gets them
    re-trained and re-evaluated, so no file compares against an under-trained baseline."""
    import torch

    from ld.data import load_dataset
    from ld.pipeline import evaluate_trial
    from ld.stages import dag
    from ld.stages.artifact import ArtifactStore
    from ld.stages.common import StageInputs, build_stage

    old = df[df.variant == "bc"]
    if old.empty or not cfg.eval.bc_baseline:
        return df
    if "stage.bc.converged" in old and bool(old["stage.bc.converged"].iloc[0]):
        return df  # a converged BC stays: retraining it to a new cap would not change the baseline
    ds = load_dataset(cfg.dataset)
    inputs = StageInputs(dataset=ds, store=ArtifactStore(args.out / "artifacts"), progress=False)
    art = build_stage(dag.BC, cfg, inputs)
    if (old["stage.bc.key"] == art.key).all():
        return df
    new = evaluate_trial(cfg, ds, {dag.BC.name: art}, inputs.records, torch.device("cpu"), progress=False,
                         only={"bc"}).sort_values("episode").reset_index(drop=True)
    old = old.sort_values("episode").reset_index(drop=True)
    for col in df.columns:  # the other stages' columns, as the trial recorded them
        if col not in new:
            new[col] = old[col]
    out = pd.concat([df[df.variant != "bc"], new[df.columns]], ignore_index=True)
    _write(out, path)
    print(f"[guidance_gain] {cfg.dataset} seed {cfg.seed}: BC refreshed ({old['stage.bc.key'].iloc[0]} -> "
          f"{art.key}): {new['normalized_score'].mean():.1f}", file=sys.stderr, flush=True)
    return out


def run_one(spec: str, seed: int, beta: float | None, args) -> pd.DataFrame:
    path = _file(args.out, spec, seed, beta)
    sets = [f"dataset={spec}", f"seed={seed}", *args.sets]
    if beta is not None:  # an extra point of the beta curve: the guided planner only
        sets += [f"beta={beta}", "eval.bc_baseline=false"]
    cfg = resolve(None, args.preset, sets)
    if path.exists():
        return refresh_bc(pd.read_parquet(path), cfg, args, path)
    res = run_trial(cfg, args.out / "artifacts", progress=not args.quick and sys.stderr.isatty(),
                    baselines=beta is None)
    df = res.frame.assign(bench_beta=np.nan if beta is None else float(beta))
    _write(df, path)
    print(f"[guidance_gain] {spec} seed {seed} beta {cfg.beta}: " + ", ".join(
        f"{v}={g['normalized_score'].mean():.1f}" for v, g in df.groupby("variant"))
        + f" ({sum(r.wall_s for r in res.records) + sum(res.timings.values()):.0f} s)",
        file=sys.stderr, flush=True)
    return df


def behavior_mean(df: pd.DataFrame, spec: str) -> float | None:
    """The behavior data's mean normalized score, as the rows record it (`behavior_score`); only files
    written before rows carried it make this load the dataset."""
    recorded = df["behavior_score"].dropna() if "behavior_score" in df else pd.Series(dtype=float)
    if len(recorded):
        return float(recorded.iloc[0])
    from ld.data import load_dataset

    score = load_dataset(spec).behavior_score()
    return None if np.isnan(score) else score


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--betas", type=float, nargs="*", default=[],
                    help="extra betas for a beta curve (the config's beta and beta = 0 are always measured)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-guidance"))
    ap.add_argument("--summarize", action="store_true", help="only read the result files that exist; train nothing")
    ap.add_argument("--quick", action="store_true", help="smoke preset, tiny maze data, one seed")
    args = ap.parse_args(argv)

    if args.quick:
        from ld.data.builtin import make

        tmp = Path(tempfile.mkdtemp(prefix="ld-bench-"))
        path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
        args.datasets, args.seeds, args.preset, args.out = [str(path)], [0], "smoke", tmp / "run"
        args.betas = [1.0]

    report: dict = {"benchmark": "guidance_gain", "machine": machine(), "preset": args.preset, "sets": args.sets,
                    "datasets": {}}
    t_all = time.perf_counter()
    main_beta = resolve(None, args.preset, list(args.sets)).beta
    extra = [b for b in args.betas if b not in (0.0, main_beta)]  # those two come from the main trial
    mains: dict[str, pd.DataFrame] = {}
    for spec in args.datasets:
        frames = []
        t0 = time.perf_counter()
        for seed in args.seeds:
            for beta in [None, *extra]:
                if args.summarize:
                    p = _file(args.out, spec, seed, beta)
                    if p.exists():
                        frames.append(pd.read_parquet(p))
                    continue
                frames.append(run_one(spec, seed, beta, args))
        if not frames:
            continue
        df = pd.concat(frames, ignore_index=True)
        main_rows = df[df["bench_beta"].isna()]
        if 0.0 in args.betas:  # beta = 0 is the prior of the main trial
            df = pd.concat([df, main_rows[_is(main_rows, "prior")].assign(bench_beta=0.0)], ignore_index=True)
        if main_beta in args.betas:
            df = pd.concat([df, main_rows[_is(main_rows, "latentdiffuser")].assign(bench_beta=main_beta)],
                           ignore_index=True)
        entry = summarize(df, behavior_mean(df, spec))
        entry["wall_time_s"] = round(time.perf_counter() - t0, 1)
        report["datasets"][spec] = entry
        mains[spec] = df[df["bench_beta"].isna()]
    if len(mains) > 1:
        report["average"] = average(mains)
    report["targets"] = targets(report)
    return finish(report, t_all)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
