"""Batched evaluation vs one episode at a time (issue 7, target 3), as JSON.

The same planner (the energy-guided LatentDiffuser of bench/planning.py: `small` preset, diffusion_steps =
100, trained once into --out/artifacts and reused) evaluates --episodes episodes two ways:

* batched: `ld.evaluation.rollout.evaluate` with all episodes in one vector env, one `policy.act` (so one
  batched `Planner.plan` per replanning step) for every live episode;
* sequential: the same number of episodes, one `evaluate` call of a single episode each.

Reported: environment steps per second both ways (steps summed over episodes / wall time) and the ratio.
Target: >= 5x on this machine. Episodes are capped at --max-steps (throughput, not score, is measured).

    python bench/eval_throughput.py               # 20 episodes x 100 steps, DPM-Solver++ 10 steps
    python bench/eval_throughput.py --quick       # smoke preset, tiny data: only checks the JSON
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from ld.config import resolve
from ld.data import load_dataset
from ld.evaluation.rollout import evaluate
from ld.pipeline import setup_torch, train_stages
from ld.planning.planner import Planner, RecedingHorizonPolicy
from ld.stages.artifact import ArtifactStore


def run(planner_factory, info, episodes: int, seed: int, max_steps: int, replan: int, batched: bool) -> dict:
    t0 = time.perf_counter()
    steps = decisions = 0
    plan_ms = 0.0
    groups = [list(range(episodes))] if batched else [[i] for i in range(episodes)]
    for g in groups:
        policy = RecedingHorizonPolicy(planner_factory(), replan)
        # sequential episode i uses seed + i so the episodes differ like the batched ones do
        res = evaluate(policy, info, len(g), seed if batched else seed + g[0], max_steps, progress=False)
        steps += sum(r.length for r in res)
        decisions += policy.decisions
        plan_ms += policy.plan_ms
    wall = time.perf_counter() - t0
    return {"episodes": episodes, "env_steps": int(steps), "wall_s": round(wall, 3),
            "env_steps_per_s": round(steps / wall, 2), "planner_calls": int(decisions),
            "plan_s": round(plan_ms / 1000.0, 3), "plan_fraction": round(plan_ms / 1000.0 / wall, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="builtin:pointmaze-umaze")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-planning"))
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--sampler", default="dpm_solver")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--fast", action="store_true", help="use Planner(fast=True) for both runs")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sets = ["diffusion_steps=100", *args.sets]
    if args.quick:
        from ld.data.builtin import make

        tmp = Path(tempfile.mkdtemp(prefix="ld-bench-eval-"))
        path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
        args.dataset, args.preset, args.out = str(path), "smoke", tmp / "run"
        sets = ["diffusion_steps=20", "vae.steps=20", "prior.steps=20", "energy.steps=20", *args.sets]
        args.episodes, args.max_steps, args.steps = 4, 8, 5
    cfg = resolve(None, args.preset, [f"dataset={args.dataset}", *sets, f"sampler.name={args.sampler}",
                                      f"sampler.steps={args.steps}"])
    setup_torch(cfg)
    device = torch.device(args.device)
    report: dict = {"benchmark": "eval_throughput", "machine": machine(), "preset": args.preset,
                    "dataset": args.dataset, "sets": sets, "sampler": args.sampler, "sampler_steps": args.steps,
                    "replan_every": cfg.eval.replan_every, "max_steps": args.max_steps, "fast_path": args.fast}
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset)
    artifacts, records = train_stages(cfg, ds, ArtifactStore(args.out / "artifacts"), device, progress=False)
    report["training_wall_s"] = round(time.perf_counter() - t0, 2)
    report["stages_reused"] = all(r.reused for r in records)

    def factory() -> Planner:
        return Planner(cfg, artifacts, guided=True, device=device, seed=cfg.seed, fast=args.fast)

    batched = run(factory, ds.info, args.episodes, cfg.seed, args.max_steps, cfg.eval.replan_every, True)
    print(f"[eval_throughput] batched: {batched['env_steps_per_s']} steps/s", file=sys.stderr, flush=True)
    sequential = run(factory, ds.info, args.episodes, cfg.seed, args.max_steps, cfg.eval.replan_every, False)
    print(f"[eval_throughput] sequential: {sequential['env_steps_per_s']} steps/s", file=sys.stderr, flush=True)
    ratio = batched["env_steps_per_s"] / sequential["env_steps_per_s"]
    report.update(batched=batched, sequential=sequential, ratio=round(ratio, 2),
                  target={"ratio_needed": 5.0, "met": bool(ratio >= 5.0)})
    return finish(report, t0)


if __name__ == "__main__":
    sys.exit(main())
