"""Per-decision planning latency and the score each sampler reaches (issue 7, targets 1 and 2), as JSON.

One energy-guided LatentDiffuser is trained once on the built-in PointMaze U-maze (`small` preset with
diffusion_steps = 100, so DDPM-100 is the paper's sampler) into --out/artifacts and reused. Then, for
DDPM-100, DDIM-{10,20} and DPM-Solver++-{10,20} (one trained model serves every sampler):

* latency: wall time of one `Planner.plan` call (sample -> decode -> first action) at batch 1 and 20, median
  over repeated calls, for the eager planner and for the fast path (`Planner(fast=True)`: static shapes and
  buffers; a CUDA graph on GPU, the same code eagerly on CPU);
* score: normalized score over --episodes evaluation episodes (the same environment seeds for every
  sampler), mean with a 95% bootstrap CI (`ld.analysis.stats.bootstrap_ci`).

Target: DPM-Solver++ at 10 steps is >= 8x faster than DDPM-100 per decision and its mean score lies inside
DDPM-100's CI.

    python bench/planning.py                  # full (trains the small model once: ~10 CPU minutes)
    python bench/planning.py --quick          # smoke preset, tiny data: only checks the JSON comes out
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from ld.analysis.stats import bootstrap_ci
from ld.config import resolve
from ld.data import load_dataset
from ld.evaluation.rollout import evaluate
from ld.pipeline import setup_torch, train_stages
from ld.planning.planner import Planner, RecedingHorizonPolicy
from ld.stages.artifact import ArtifactStore

SAMPLERS = [("ddpm", None), ("ddim", 10), ("ddim", 20), ("dpm_solver", 10), ("dpm_solver", 20)]


def label(name: str, steps, K: int) -> str:
    return f"{name}-{steps or K}"


def with_sampler(cfg, name: str, steps):
    return cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"name": name, "steps": steps})})


def time_plan(planner: Planner, obs: np.ndarray, min_reps: int, budget_s: float, max_reps: int = 50) -> dict:
    """Median / min wall ms of planner.plan(obs) after one warm-up call (graph capture happens there)."""
    planner.plan(obs)
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < max_reps):
        t0 = time.perf_counter()
        planner.plan(obs)
        if planner.device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3), "reps": len(times)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="builtin:pointmaze-umaze")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-planning"))
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of repeated calls per latency cell")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-score", action="store_true", help="latency only")
    ap.add_argument("--samplers", nargs="+", default=None,
                    help="subset as name-steps (ddpm-100 dpm_solver-10 ...); default: all five")
    ap.add_argument("--quick", action="store_true", help="smoke preset, tiny maze data, 2 short episodes")
    args = ap.parse_args(argv)
    sets = ["diffusion_steps=100", *args.sets]
    samplers = SAMPLERS
    if args.quick:
        from ld.data.builtin import make

        tmp = Path(tempfile.mkdtemp(prefix="ld-bench-planning-"))
        path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
        args.dataset, args.preset, args.out = str(path), "smoke", tmp / "run"
        sets = ["diffusion_steps=20", "vae.steps=20", "prior.steps=20", "energy.steps=20", "eval.max_steps=8",
                *args.sets]
        args.episodes, args.budget, args.batches = 2, 0.0, [1, 4]
        samplers = [("ddpm", None), ("ddim", 10), ("dpm_solver", 10)]

    if args.samplers:
        samplers = []
        for spec in args.samplers:
            name, steps = spec.rsplit("-", 1)
            samplers.append((name, int(steps)))
    report: dict = {"benchmark": "planning", "machine": machine(), "preset": args.preset, "sets": sets,
                    "dataset": args.dataset, "device": args.device}
    cfg = resolve(None, args.preset, [f"dataset={args.dataset}", *sets])
    setup_torch(cfg)
    device = torch.device(args.device)
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset)
    artifacts, records = train_stages(cfg, ds, ArtifactStore(args.out / "artifacts"), device, progress=False)
    report["training"] = {"wall_s": round(time.perf_counter() - t0, 2),
                          "stages": {r.stage: {"reused": r.reused, "wall_s": r.wall_s} for r in records}}
    K = cfg.diffusion_steps
    report["model"] = {"diffusion_steps": K, "horizon": cfg.horizon, "latent_step": cfg.latent_step,
                       "prior_params": None, "guidance_scale": cfg.guidance_scale, "beta": cfg.beta,
                       "replan_every": cfg.eval.replan_every, "episodes": args.episodes}

    starts = np.stack([ep.observations[0] for ep in ds.episodes])
    rng = np.random.default_rng(0)
    obs_pool = starts[rng.integers(0, len(starts), max(args.batches))]

    results: dict = {}
    for name, steps in samplers:
        lab = label(name, steps, K)
        scfg = with_sampler(cfg, name, steps)
        entry: dict = {"sampler": name, "steps": steps or K, "latency": {}}
        for b in args.batches:
            cell = {}
            for variant, fast in (("planner", False), ("fast_path", True)):
                planner = Planner(scfg, artifacts, guided=True, device=device, seed=0, fast=fast)
                if report["model"]["prior_params"] is None:
                    report["model"]["prior_params"] = sum(p.numel() for p in planner.prior.parameters())
                cell[variant] = time_plan(planner, obs_pool[:b], 2 if args.quick else 3, args.budget)
            cell["ms_per_env_decision"] = round(min(cell["planner"]["median_ms"],
                                                    cell["fast_path"]["median_ms"]) / b, 3)
            entry["latency"][str(b)] = cell
            print(f"[planning] {lab} batch {b}: planner {cell['planner']['median_ms']:.1f} ms, "
                  f"fast {cell['fast_path']['median_ms']:.1f} ms", file=sys.stderr, flush=True)
        if not args.no_score:
            t1 = time.perf_counter()
            policy = RecedingHorizonPolicy(Planner(scfg, artifacts, guided=True, device=device, seed=cfg.seed),
                                           cfg.eval.replan_every)
            res = evaluate(policy, ds.info, args.episodes, cfg.seed, cfg.eval.max_steps, progress=False,
                           desc=f"eval[{lab}]")
            scores = np.array([r.normalized_score for r in res])
            lo, hi = bootstrap_ci(scores)
            entry["score"] = {"mean": round(float(scores.mean()), 3), "ci95": [round(lo, 3), round(hi, 3)],
                              "success": float(np.mean([r.success for r in res])), "episodes": len(res),
                              "per_episode": [round(float(s), 2) for s in scores],
                              "plan_ms_per_decision_in_eval": round(res[0].plan_ms_per_decision, 2),
                              "eval_wall_s": round(time.perf_counter() - t1, 2)}
            print(f"[planning] {lab}: score {scores.mean():.1f} [{lo:.1f}, {hi:.1f}]", file=sys.stderr, flush=True)
        results[lab] = entry
    report["samplers"] = results

    ref = results.get(label("ddpm", None, K))
    targets = {}
    for lab, e in results.items():
        if ref is None or lab == label("ddpm", None, K):
            continue
        t = {}
        for b in map(str, args.batches):
            best = lambda c: min(c["planner"]["median_ms"], c["fast_path"]["median_ms"])  # noqa: E731
            t[f"speedup_vs_ddpm_batch{b}"] = round(best(ref["latency"][b]) / best(e["latency"][b]), 2)
        if "score" in e and "score" in ref:
            lo, hi = ref["score"]["ci95"]
            t["score_inside_ddpm_ci"] = bool(lo <= e["score"]["mean"] <= hi)
            t["score_minus_ddpm"] = round(e["score"]["mean"] - ref["score"]["mean"], 3)
        results[lab]["vs_ddpm"] = t
        targets[lab] = t
    dpm10 = targets.get(label("dpm_solver", 10, K), {})
    b1 = f"speedup_vs_ddpm_batch{args.batches[0]}"
    report["target_dpm_solver_10"] = {
        "speedup_needed": 8.0, "speedup": dpm10.get(b1),
        "score_inside_ddpm_ci": dpm10.get("score_inside_ddpm_ci"),
        "met": bool(dpm10.get(b1, 0) >= 8.0 and dpm10.get("score_inside_ddpm_ci", False)),
    }
    # issue 7 target 2 (GPU, paper-size planner): DPM-Solver++ 10 steps through the fast path
    fast10 = results.get(label("dpm_solver", 10, K), {}).get("latency", {})
    gpu = {"batch1_ms_needed": 10.0, "batch64_ms_per_env_needed": 0.5, "device": str(device),
           "measured": device.type == "cuda" and args.preset == "paper"}
    if "1" in fast10:
        gpu["batch1_ms"] = fast10["1"]["fast_path"]["median_ms"]
    if "64" in fast10:
        gpu["batch64_ms_per_env"] = round(fast10["64"]["fast_path"]["median_ms"] / 64, 3)
    if gpu["measured"] and "batch1_ms" in gpu and "batch64_ms_per_env" in gpu:
        gpu["met"] = bool(gpu["batch1_ms"] <= 10.0 and gpu["batch64_ms_per_env"] <= 0.5)
    report["target_gpu_paper"] = gpu
    return finish(report, t0)


if __name__ == "__main__":
    sys.exit(main())
