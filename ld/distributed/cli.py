"""The `latentdiffuser sweep` subcommand (the parser imports nothing heavy; Ray is imported when the command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ld.distributed.paths import DEFAULT_STORAGE


def add_sweep_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run a suite (grid or Optuna search) as Ray Tune trials -> Parquet")
    p.add_argument("suite", type=Path, help="suite YAML (ablations/*.yaml, sweeps/*.yaml)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="storage root for artifacts, results and Tune state: a local path, a path every node "
                        "mounts (NFS/EFS), or an object store: s3://bucket/prefix (other endpoints: "
                        "?endpoint_override=host:port&scheme=http), gs://bucket/prefix "
                        f"(default: {DEFAULT_STORAGE})")
    p.add_argument("--scale", choices=("smoke", "small", "paper"), default="smoke")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep (Tuner.restore); finished trials and stages are kept")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="trials at once (default: cluster CPUs (GPUs) // workers per trial)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of every trial, e.g. --set dataset=maze.hdf5 (repeatable)")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of the local Ray instance latentdiffuser sweep starts (default: all); "
                        "an error with a running cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (default: the job's cluster under ray job submit, else a Ray already "
                        "running on this machine, e.g. after `ray start --head`, else a new local instance)")
    p.add_argument("--logger", dest="loggers", action="append", default=[], choices=("mlflow", "wandb"),
                   help="also log every trial (its knobs as params, its losses and scores as metrics) through Ray's "
                        "own logger callbacks: mlflow ($MLFLOW_TRACKING_URI, default a file store <storage>/mlruns), "
                        "wandb (online with an API key, else offline into <storage>/wandb); repeatable")
    p.add_argument("--max-failures", type=int, default=3, help="retries of a failed trial (and of a worker group)")
    p.add_argument("--checkpoint-every", type=int, default=200, help="mid-stage checkpoint interval (steps)")
    p.add_argument("--inject-kill", default=None, help=argparse.SUPPRESS)  # tests: "stage:step[:rank]"
    p.set_defaults(func=cmd_sweep)
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    from ld.distributed.sweep import run_sweep

    summary = run_sweep(args.suite, storage=args.storage, scale=args.scale, sets=args.sets, resume=args.resume,
                        max_concurrent=args.max_concurrent, num_cpus=args.num_cpus, address=args.address,
                        max_failures=args.max_failures, checkpoint_every=args.checkpoint_every,
                        kill_at=args.inject_kill, loggers=args.loggers)
    print(summary.render(), flush=True)
    return 0 if summary.failed == 0 and summary.ok == summary.trials else 1
