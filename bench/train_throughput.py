"""Training throughput of every stage, bf16 autocast agreement, and Ray's per-trial overhead (issue 7,
target 4), as JSON.

* Stages: the `small` preset's vae, prior, support and energy stages, each trained for --steps gradient
  steps into a fresh artifact store; samples per second = steps x batch / time inside the training loop
  (the manifest's `train_wall_time_s`). The energy stage also reports latents/s (batch x support_size).
* bf16: on a GPU (or with --bf16 anywhere) the same stages run again under
  `torch.autocast(dtype=torch.bfloat16)`; reported: samples/s and the loss agreement -- the loss of the very
  first step (same weights, same batch: a pure numerical comparison; tolerance 2%) and the final loss
  (after --steps noisy steps; tolerance 15%).
* Ray: if `ld.distributed` imports, a three-trial suite whose trials share every stage (they differ only in
  guidance_scale) runs in-process first (which also fills the artifact store) and then through `run_sweep`
  (one Tune trial per config, max_concurrent 1); the per-trial overhead is (sweep wall - in-process wall) /
  trials -- Ray start-up, worker processes, imports, status files -- next to the trials' own
  `ray_overhead_s`. Target: <= 15 s per trial. Otherwise the field says "unavailable" and why.

    python bench/train_throughput.py              # small preset, 200 steps per stage
    python bench/train_throughput.py --quick      # smoke preset, a few steps, no Ray
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import finish, machine  # noqa: E402  (bench/ is on sys.path when run as a script)
from ld.config import resolve
from ld.data import load_dataset
from ld.pipeline import setup_torch, train_stages
from ld.stages.artifact import ArtifactStore


def stage_throughput(cfg, ds, device, root: Path, bf16: bool) -> dict:
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    t0 = time.perf_counter()
    with ctx:
        artifacts, records = train_stages(cfg, ds, ArtifactStore(root), device, progress=False)
    out = {"wall_s": round(time.perf_counter() - t0, 2), "stages": {}}
    batch = {"vae": cfg.vae.batch_size, "prior": cfg.prior.batch_size, "energy": cfg.energy.batch_size}
    for r in records:
        m = artifacts[r.stage].manifest.get("metrics", {})
        e = {"wall_s": r.wall_s}
        if "train_wall_time_s" in m and r.stage in batch:
            loop = float(m["train_wall_time_s"]) or float("nan")
            e.update(steps=m["steps"], batch=batch[r.stage], loop_s=round(loop, 3),
                     samples_per_s=round(m["steps"] * batch[r.stage] / loop, 1),
                     first_loss=m["first_loss"], final_loss=m["final_loss"])
            if r.stage == "energy":
                e["latents_per_s"] = round(m["steps"] * batch[r.stage] * cfg.support_size / loop, 1)
        elif r.stage == "support":
            n = m.get("n_states", 0) * m.get("support_size", 0)
            e.update(latents=n, latents_per_s=round(n / r.wall_s, 1) if r.wall_s else None)
        out["stages"][r.stage] = e
    return out


def bf16_agreement(fp32: dict, bf16: dict, tol_first: float = 0.02, tol_final: float = 0.15) -> dict:
    out = {}
    for stage, e in fp32["stages"].items():
        b = bf16["stages"].get(stage, {})
        if "first_loss" not in e or "first_loss" not in b:
            continue
        rel = lambda x, y: abs(x - y) / max(abs(x), 1e-8)  # noqa: E731
        rf, rl = rel(e["first_loss"], b["first_loss"]), rel(e["final_loss"], b["final_loss"])
        out[stage] = {"first_loss_rel_diff": round(rf, 4), "final_loss_rel_diff": round(rl, 4),
                      "speedup": round(b["samples_per_s"] / e["samples_per_s"], 2),
                      "within_tolerance": bool(rf <= tol_first and rl <= tol_final)}
    return out


SUITE = """name: bench-ray-overhead
description: three trials sharing every stage (they differ only in guidance_scale)
base: {{dataset: {dataset}}}
scales:
  smoke:
    preset: smoke
    seeds: [0]
    set: {{eval: {{episodes: 1, max_steps: 5}}, vae: {{steps: 10}}, prior: {{steps: 10}}, energy: {{steps: 10}}}}
grid:
  mode: one_at_a_time
  axes: {{guidance_scale: [1.0, 1.4]}}
"""


def ray_overhead(dataset: str, work: Path) -> dict:
    try:
        import ray  # noqa: F401

        from ld.distributed.sweep import run_sweep  # noqa: F401
    except Exception as e:  # another engineer is building ld.distributed; report, do not fail
        return {"status": "unavailable", "reason": f"{type(e).__name__}: {e}"}
    try:
        from ld.distributed import read_status
        from ld.pipeline import run_trial
        from ld.suite import load_suite

        work.mkdir(parents=True, exist_ok=True)
        suite_file = work / "suite.yaml"
        suite_file.write_text(SUITE.format(dataset=dataset))
        storage = work / "storage"
        trials = load_suite(suite_file).trials("smoke")
        walls = []
        for t in trials:  # in-process, same store: trains the shared stages once, then only evaluates
            t0 = time.perf_counter()
            run_trial(t.config, storage / "artifacts", progress=False)
            walls.append(time.perf_counter() - t0)
        inproc = walls[1:] or walls  # the first one trained the stages; the sweep will reuse them
        mean_inproc = sum(inproc) / len(inproc)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Tune prints its experiment table on stdout
            summary = run_sweep(suite_file, storage=storage, scale="smoke", max_concurrent=1, num_cpus=2)
        wall = time.perf_counter() - t0
        status = read_status(storage, "bench-ray-overhead")
        col = status["ray_overhead_s"].dropna().tolist() if "ray_overhead_s" in status else []
        n = len(trials)
        per_trial = (wall - n * mean_inproc) / n
        return {"status": "ok", "trials": n, "ok": summary.ok, "failed": summary.failed,
                "sweep_wall_s": round(wall, 2), "inprocess_trial_wall_s": round(mean_inproc, 2),
                "overhead_per_trial_s": round(per_trial, 2),
                "trial_ray_overhead_s": [round(float(x), 2) for x in col],
                "stage_runs_trained_by_sweep": summary.stage_runs_trained,
                "target": {"max_s": 15.0, "met": bool(per_trial <= 15.0 and summary.failed == 0)}}
    except Exception as e:
        return {"status": "error", "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="default: a 50-episode built-in maze file made in a temp dir")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true", help="also measure bf16 autocast off a GPU")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ld-bench-train-"))
    if args.dataset is None:
        from ld.data.builtin import make

        args.dataset = str(make("pointmaze-umaze", work / "umaze.hdf5", episodes=6 if args.quick else 50,
                                progress=False))
    if args.quick:
        args.preset, args.steps, args.no_ray = "smoke", 5, True
        args.bf16 = True  # exercise the bf16 path on CPU too (tiny)
    steps = [f"vae.steps={args.steps}", f"prior.steps={args.steps}", f"energy.steps={args.steps}"]
    cfg = resolve(None, args.preset, [f"dataset={args.dataset}", *steps, *args.sets])
    setup_torch(cfg)
    device = torch.device(args.device)
    report: dict = {"benchmark": "train_throughput", "machine": machine(), "preset": args.preset,
                    "dataset": args.dataset, "steps_per_stage": args.steps, "device": str(device)}
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset)
    report["fp32"] = stage_throughput(cfg, ds, device, work / "fp32", bf16=False)
    print(f"[train_throughput] fp32 {report['fp32']['wall_s']} s", file=sys.stderr, flush=True)
    if device.type == "cuda" or args.bf16:
        report["bf16"] = stage_throughput(cfg, ds, device, work / "bf16", bf16=True)
        report["bf16"]["agreement"] = bf16_agreement(report["fp32"], report["bf16"])
        if device.type != "cuda":
            report["bf16"]["note"] = "CPU bf16 autocast (no GPU here): numerics check only, speed not meaningful"
    else:
        report["bf16"] = {"status": "unavailable", "reason": "no GPU in this session (use --bf16 to force on CPU)"}
    report["ray"] = ({"status": "skipped", "reason": "--quick / --no-ray"} if args.no_ray
                     else ray_overhead(args.dataset, work / "ray"))
    return finish(report, t0)


if __name__ == "__main__":
    sys.exit(main())
