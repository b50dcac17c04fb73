#!/usr/bin/env python3
"""Run a suite on a Ray cluster's head: the script to hand to `ray submit`.

    ray up cluster.yaml -y
    ray submit cluster.yaml scripts/ray_sweep.py ablations/figure5.yaml --scale paper
    ray submit cluster.yaml scripts/ray_sweep.py ablations/figure5.yaml --scale paper --resume
    ray exec cluster.yaml "latentdiffuser report figure5 --results \\$LD_STORAGE"

`ray submit` copies this one file to the head's home and runs `python ~/ray_sweep.py ARGS` from `~`, in a
login shell (so the cluster's setup must put the project's venv on PATH: cluster.yaml does). Everything after
the script is `latentdiffuser sweep`'s own arguments. Why a script rather than `ld/cli.py`:

- Python puts the script's folder (`~`) first on sys.path. A folder `~/ld` there (the project synced under
  that name) would be imported as a namespace package in place of the installed `ld`. This script drops its
  own folder from sys.path, and cluster.yaml syncs the project to `~/ld-project`, where it cannot shadow.
- A suite path such as `ablations/figure5.yaml` is relative to the project, not to `~`: it is looked up in the
  current folder first, then in the synced project (`$LD_PROJECT`, default `~/ld-project`).
- Without `--storage`, results go to `$LD_STORAGE` (cluster.yaml sets it to an S3 bucket), else
  `/mnt/ld/sweeps` when a shared file system is mounted at /mnt/ld, else `latentdiffuser sweep`'s default under
  the current folder.

On the head, `latentdiffuser sweep` joins the cluster `ray start` is running there (it never starts a second
one). `--help` prints this script's usage and the sweep's options; `SUITE --help` is the sweep's own help.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
USAGE = ("usage: ray submit cluster.yaml scripts/ray_sweep.py SUITE.yaml [latentdiffuser sweep options]\n"
         "  e.g. ray submit cluster.yaml scripts/ray_sweep.py ablations/figure5.yaml --scale paper")


def _clean_sys_path() -> None:
    """Never import `ld` from the folder this script was copied to."""
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != HERE]


def _project() -> Path:
    env = os.environ.get("LD_PROJECT")
    if env:
        return Path(env).expanduser()
    if (HERE.parent / "pyproject.toml").is_file() and (HERE.parent / "ld").is_dir():
        return HERE.parent  # run from a checkout: scripts/ray_sweep.py
    return Path("~/ld-project").expanduser()


def resolve_suite(suite: str, project: Path) -> str:
    if Path(suite).expanduser().is_file():
        return str(Path(suite).expanduser())
    candidate = project / suite
    return str(candidate) if candidate.is_file() else suite  # latentdiffuser sweep names a missing suite clearly


def default_storage() -> str | None:
    if os.environ.get("LD_STORAGE"):
        return os.environ["LD_STORAGE"]
    if Path("/mnt/ld").is_dir() and os.access("/mnt/ld", os.W_OK):
        return "/mnt/ld/sweeps"
    return None


def build_argv(argv: list[str]) -> list[str]:
    """`latentdiffuser sweep` arguments from this script's: the suite resolved, a cluster storage default added."""
    if argv[:1] == ["--"]:  # `ray submit cluster.yaml scripts/ray_sweep.py -- SUITE ...` also works
        argv = argv[1:]
    if not argv or argv[0].startswith("-"):
        raise SystemExit(USAGE)
    out = ["sweep", resolve_suite(argv[0], _project()), *argv[1:]]
    if not any(a == "--storage" or a.startswith("--storage=") for a in argv):
        storage = default_storage()
        if storage:
            out += ["--storage", storage]
    return out


def print_help() -> None:
    """This script's usage, then the options it passes on (those of `latentdiffuser sweep`)."""
    import argparse

    print(USAGE + "\n\nRuns `latentdiffuser sweep SUITE.yaml ...` on the head: the suite is looked up in the synced "
          "project,\n--storage defaults to $LD_STORAGE. The options are the sweep's:\n")
    from ld.cli import PROG
    from ld.distributed.cli import add_sweep_parser

    add_sweep_parser(argparse.ArgumentParser(prog=PROG).add_subparsers()).print_help()


def main(argv: list[str] | None = None) -> int:
    _clean_sys_path()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from ld.cli import main as ld_main
    except ImportError as e:
        print(f"ray_sweep.py: cannot import ld with {sys.executable} ({e}). On the cluster, ld is installed into "
              "~/venv by cluster.yaml's setup_commands, which also put ~/venv/bin on PATH in ~/.bashrc; run "
              "`ray up cluster.yaml -y` again if the setup did not finish.", file=sys.stderr)
        return 2
    if argv[:1] in (["-h"], ["--help"]) or argv[:2] in (["--", "-h"], ["--", "--help"]):
        print_help()
        return 0
    args = build_argv(argv)
    print("ray_sweep.py: latentdiffuser " + " ".join(args), flush=True)
    return ld_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
