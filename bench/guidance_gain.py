"""Does energy guidance plan better than the prior it guides? (issue 4's claim, measured, printed as JSON)

For each dataset and seed: train every stage at the given preset (or reuse them from --out), evaluate the
energy-guided planner and the unguided prior (beta = 0) on the same environment seeds, and report the
normalized score of both with 95% bootstrap CIs, plus the paired difference (episode i of both variants
starts from the same state) with its own CI.

    python bench/guidance_gain.py                      # small preset, maze + locomotion medium-replay, 3 seeds
    python bench/guidance_gain.py --quick              # smoke preset, tiny data, 1 seed (CI checks the JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ld.config import resolve
from ld.pipeline import bootstrap_ci, run_trial

DEFAULT_DATASETS = ("builtin:pointmaze-umaze", "builtin:halfcheetah-medium-replay")


def paired_ci(diff: np.ndarray, reps: int = 5000, seed: int = 0) -> tuple[float, float]:
    return bootstrap_ci(diff, reps=reps, seed=seed)


def summarize(df: pd.DataFrame) -> dict:
    guided = df[df.variant == "latentdiffuser"].sort_values(["seed", "episode"])
    prior = df[df.variant == "prior"].sort_values(["seed", "episode"])
    g, p = guided["normalized_score"].to_numpy(), prior["normalized_score"].to_numpy()
    diff = g - p
    lo_d, hi_d = paired_ci(diff)
    out = {
        "episodes_per_variant": int(len(g)),
        "seeds": sorted(int(s) for s in guided["seed"].unique()),
        "guided": {"mean": float(g.mean()), "ci95": bootstrap_ci(g), "success": float(guided["success"].mean()),
                   "per_seed": guided.groupby("seed")["normalized_score"].mean().round(2).tolist()},
        "prior_beta0": {"mean": float(p.mean()), "ci95": bootstrap_ci(p), "success": float(prior["success"].mean()),
                        "per_seed": prior.groupby("seed")["normalized_score"].mean().round(2).tolist()},
        "gain": {"mean": float(diff.mean()), "ci95": (lo_d, hi_d)},
    }
    out["guided_beats_prior_beyond_ci"] = bool(lo_d > 0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-guidance"))
    ap.add_argument("--quick", action="store_true", help="smoke preset, tiny maze data, one seed")
    args = ap.parse_args(argv)

    if args.quick:
        from ld.data.builtin import make

        tmp = Path(tempfile.mkdtemp(prefix="ld-bench-"))
        path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
        args.datasets, args.seeds, args.preset, args.out = [str(path)], [0], "smoke", tmp / "run"

    report: dict = {"benchmark": "guidance_gain", "preset": args.preset, "sets": args.sets, "datasets": {}}
    t_all = time.perf_counter()
    for spec in args.datasets:
        frames = []
        t0 = time.perf_counter()
        for seed in args.seeds:
            cfg = resolve(None, args.preset, [f"dataset={spec}", f"seed={seed}", *args.sets])
            res = run_trial(cfg, args.out / "artifacts", progress=not args.quick and sys.stderr.isatty())
            frames.append(res.frame)
            print(f"[guidance_gain] {spec} seed {seed}: " + ", ".join(
                f"{v}={g['normalized_score'].mean():.1f}" for v, g in res.frame.groupby("variant")),
                file=sys.stderr, flush=True)
        df = pd.concat(frames, ignore_index=True)
        (args.out / "results").mkdir(parents=True, exist_ok=True)
        df.to_parquet(args.out / "results" / f"{Path(spec).stem.replace(':', '_')}.parquet")
        entry = summarize(df)
        entry["wall_time_s"] = round(time.perf_counter() - t0, 1)
        report["datasets"][spec] = entry
    report["wall_time_s"] = round(time.perf_counter() - t_all, 1)
    from ld.results import hardware

    report["hardware"] = hardware()
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
