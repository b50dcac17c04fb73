"""`latentdiffuser data ...` subcommands.

    latentdiffuser data make NAME [--out PATH] [--episodes N] [--seed S] [--data-dir DIR]
        generate a built-in dataset: to PATH (ld.data.builtin.make), or without --out into the cache
        (ld.data.builtin.ensure, the file `builtin:NAME` loads)
    latentdiffuser data info SOURCE [--json] [--data-dir DIR]
        episodes, transitions, dims, return and length statistics, reference scores, env id, fingerprint

Wiring (ld/cli.py): `add_data_parser(subparsers)` registers `data` and sets `func=run_data`; call
`args.func(args)` and exit with its return code. A `DataError` prints `latentdiffuser data: error: <message>` on
stderr and returns 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ld.data.types import DataError, EpisodeDataset


def add_data_parser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="make and inspect datasets",
                              description="Make built-in datasets and inspect any dataset source.")
    sub = p.add_subparsers(dest="data_command", metavar="{make,info}")
    sub.required = True

    mk = sub.add_parser("make", help="generate a built-in dataset (D4RL HDF5 layout)")
    mk.add_argument("name", help="built-in dataset name (an unknown name lists the available ones)")
    mk.add_argument("--out", type=Path, default=None, help="output file (default: the builtin: cache)")
    mk.add_argument("--episodes", type=int, default=None, help="number of episodes (default per dataset)")
    mk.add_argument("--seed", type=int, default=0,
                    help="seeds the rollouts (resets, action noise); locomotion sets always roll out the behavior "
                    "policies ld ships, and -medium-replay is their training's own stream whatever the seed; "
                    "only seed 0 at the default size has a committed fingerprint")
    mk.add_argument("--data-dir", type=Path, default=None, help="cache dir (default $LD_DATA_DIR or ~/.cache/ld/data)")

    info = sub.add_parser("info", help="summarize a dataset source")
    info.add_argument("source", help="minari:<id>, builtin:<name>, or a D4RL .hdf5 path[#task]")
    info.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    info.add_argument("--data-dir", type=Path, default=None)

    p.set_defaults(func=run_data)
    return p


def dataset_summary(ds: EpisodeDataset) -> dict[str, Any]:
    """The `latentdiffuser data info` numbers as a JSON-serializable dict."""
    rets = ds.returns()
    lens = np.array([len(e) for e in ds.episodes])
    info = ds.info

    def f(x: Any) -> Optional[float]:
        return None if x is None else float(x)

    return {
        "name": info.name,
        "source": info.source,
        "episodes": len(ds.episodes),
        "transitions": ds.n_transitions,
        "terminal_episodes": int(sum(e.terminal for e in ds.episodes)),
        "obs_dim": ds.obs_dim,
        "act_dim": ds.act_dim,
        "return_mean": float(rets.mean()),
        "return_std": float(rets.std()),
        "return_min": float(rets.min()),
        "return_max": float(rets.max()),
        "length_mean": float(lens.mean()),
        "length_min": int(lens.min()),
        "length_max": int(lens.max()),
        "normalized_return_mean": f(info.normalize(float(rets.mean())))
        if info.ref_min_score is not None and info.ref_max_score is not None else None,
        "ref_min_score": f(info.ref_min_score),
        "ref_max_score": f(info.ref_max_score),
        "env_id": info.env_id,
        "env_kwargs": info.env_kwargs,
        "reset_options": info.reset_options,
        "max_episode_steps": info.max_episode_steps,
        "success_key": info.success_key,
        "behavior_policy": info.behavior_policy,
        "behavior_policy_returns": _policy_returns(info),
        "reference_scores": info.extra.get("reference_scores"),
        "fingerprint": ds.fingerprint,
        "fingerprint_expected": info.extra.get("fingerprint_expected"),
    }


def _policy_returns(info) -> Optional[dict[str, dict[str, float]]]:
    """{policy: {raw, normalized}} as measured at generation (built-in locomotion data), else None."""
    raw = info.extra.get("policy_returns")
    if not raw:
        return None
    norm = info.extra.get("behavior_policy_normalized_scores", {})
    return {k: {"raw": float(v), "normalized": float(norm[k]) if k in norm else None} for k, v in raw.items()}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True) if v else "-"
    return str(v)


def format_table(summary: dict[str, Any]) -> str:
    width = max(len(k) for k in summary)
    lines = []
    for k, v in summary.items():
        if k == "behavior_policy_returns" and v:
            # one line per policy: raw return and its normalized score
            for i, (pol, r) in enumerate(v.items()):
                lines.append(f"{(k if i == 0 else '').ljust(width)}  {pol:<17} raw {r['raw']:>9.1f}   normalized "
                             f"{_fmt(r['normalized'])}")
        else:
            lines.append(f"{k.ljust(width)}  {_fmt(v)}")
    if summary.get("reference_scores", "") and str(summary["reference_scores"]).startswith("D4RL"):
        lines.append("(normalized with D4RL's reference scores; built-in data runs on the v5 environments, the "
                     "maintained successors of D4RL's v2: compare with that caveat)")
    return "\n".join(lines)


def _make(args: argparse.Namespace) -> int:
    try:
        from ld.data import builtin
    except ImportError as e:
        raise DataError(f"built-in dataset generators cannot be imported ({e})") from None
    if args.out is not None:
        path = builtin.make(args.name, out=args.out, episodes=args.episodes, seed=args.seed)
    else:
        from ld.data.sources import data_dir

        path = builtin.ensure(args.name, data_dir=args.data_dir or data_dir(), episodes=args.episodes,
                              seed=args.seed)
    print(path)
    return 0


def _info(args: argparse.Namespace) -> int:
    from ld.data.sources import load_dataset

    ds = load_dataset(args.source, data_dir=args.data_dir)
    summary = dataset_summary(ds)
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=False))
    else:
        print(format_table(summary))
    return 0


def run_data(args: argparse.Namespace) -> int:
    """Handler for `latentdiffuser data ...`; returns the exit code (0 ok, 2 DataError)."""
    try:
        if args.data_command == "make":
            return _make(args)
        if args.data_command == "info":
            return _info(args)
        raise DataError(f"unknown data command {args.data_command!r}; use make or info")
    except DataError as e:
        print(f"latentdiffuser data: error: {e}", file=sys.stderr)
        return 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry (`python -m ld.data.commands info ...`), same as `latentdiffuser data ...`."""
    parser = argparse.ArgumentParser(prog="latentdiffuser")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
