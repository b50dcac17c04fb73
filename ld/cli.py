"""The `latentdiffuser` command line (also `python -m ld`). Not `ld`: that name is binutils' linker, which gcc and
every other compiler driver run from PATH.

    latentdiffuser run [CONFIG.yaml] [--preset smoke|small|paper] [--set key=value ...] [--out DIR]
    latentdiffuser data make NAME [--out PATH] [--episodes N] [--seed S]
    latentdiffuser data info SOURCE [--json]
    latentdiffuser config [CONFIG.yaml] [--preset P] [--set k=v ...]     print the resolved config
    latentdiffuser report SUITE --results URI [--out DIR]                 figures + HTML from a suite's Parquet

Errors in the user's input (config, dataset, artifact) print one message and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

PROG = "latentdiffuser"  # the console script (pyproject.toml) and every message naming the command
DEFAULT_PRESET = "small"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, help="YAML config file (fields of ld.config.Config)")
    p.add_argument("--preset", choices=("smoke", "small", "paper"), default=None,
                   help=f"size preset (default: the file's `preset:` or {DEFAULT_PRESET})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set beta=0 --set energy.loss=emse (repeatable)")


def _resolve(args: argparse.Namespace):
    from ld.config import resolve

    return resolve(args.config, args.preset, args.sets, default_preset=DEFAULT_PRESET)


def build_parser() -> argparse.ArgumentParser:
    from ld import __version__
    from ld.data.commands import add_data_parser

    parser = argparse.ArgumentParser(prog=PROG, description="LatentDiffuser: plan with latent diffusion.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,sweep,report,data,config}")
    sub.required = True

    run = sub.add_parser("run", help="train every stage, plan in the real env, write Parquet results")
    _add_config_args(run)
    run.add_argument("--out", type=Path, default=Path("runs/default"),
                     help="output dir: artifacts/ (reused across runs), results/<trial>.parquet, config.yaml")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    cfg = sub.add_parser("config", help="print the resolved config as YAML")
    _add_config_args(cfg)
    cfg.set_defaults(func=cmd_config)

    add_data_parser(sub)

    from ld.distributed.cli import add_sweep_parser  # `latentdiffuser sweep`: Ray is imported only when it runs

    add_sweep_parser(sub)
    from ld.report import add_report_parser

    add_report_parser(sub)
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _resolve(args)
    print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
    return 0


def _summary_table(res, cfg) -> str:
    from ld.analysis.stats import bootstrap_ci

    df = res.frame
    lines = []
    w = max([16, *(len(str(v)) + 2 for v in df["variant"].unique())])  # latentdiffuser+select is 21 wide
    header = (f"{'policy':<{w}}{'episodes':>9}{'return':>10}{'norm. score':>13}{'95% CI':>18}{'success':>9}"
              f"{'plan ms':>9}")
    lines.append(header)
    lines.append("-" * len(header))
    for variant, g in df.groupby("variant", sort=False):
        lo, hi = bootstrap_ci(g["normalized_score"].to_numpy())
        lines.append(f"{variant:<{w}}{len(g):>9}{g['episode_return'].mean():>10.2f}"
                     f"{g['normalized_score'].mean():>13.1f}{f'[{lo:.1f}, {hi:.1f}]':>18}"
                     f"{g['success'].mean():>9.0%}{g['plan_ms_per_decision'].mean():>9.1f}")
    info = res.dataset.info
    behavior = res.dataset.behavior_score()
    lines.append("-" * len(header))
    lines.append(f"{'behavior data':<{w}}{len(res.dataset.episodes):>9}{res.dataset.returns().mean():>10.2f}"
                 f"{behavior:>13.1f}")
    if info.ref_min_score is not None:
        lines.append(f"{'random':<{w}}{'':>9}{info.ref_min_score:>10.2f}{0.0:>13.1f}")
    if "capped" in df and df["capped"].any():
        lines.append(f"episodes capped at {int(df['episode_limit'].iloc[0])} of {info.max_episode_steps} steps: "
                     "scores use references prorated to that length; behavior data is full-episode")
    if "terminated" in df and df["terminated"].any():
        fell = ", ".join(f"{v} {int(g['terminated'].sum())}/{len(g)}" for v, g in df.groupby("variant", sort=False))
        lines.append(f"episodes that ended in a fall (finished, scored as full episodes): {fell}")
    if info.extra.get("reference_scores", "").startswith("D4RL") or info.extra.get("d4rl_task"):
        lines.append("scores use D4RL's reference min/max; the environments are gymnasium's v5, the maintained "
                     "successors of D4RL's v2: compare with published tables with that caveat")
    lines += _diagnostics(res)
    lines.append("")
    lines.append("stage           key               cached   wall s")
    for r in res.records:
        lines.append(f"{r.stage:<16}{r.key:<18}{'yes' if r.reused else 'no':<9}{r.wall_s:>6.1f}")
    for k, v in res.timings.items():
        lines.append(f"{k:<34}{'':<9}{v:>6.1f}")
    return "\n".join(lines)


def _diagnostics(res) -> list[str]:
    """One line per trained model whose health a reader should see before trusting the scores."""
    out = []
    for name, art in res.artifacts.items():
        m = art.manifest.get("metrics", {})
        if "target_ess_mean" in m:
            line = (f"energy target ESS: mean {m['target_ess_mean']:.2f}, p10 {m['target_ess_p10']:.2f} of M = "
                    f"{m.get('support_size', '?')} (1 = uniform: nothing to learn; 1/M = one-hot)")
            if m.get("nonfinite_step") is not None:
                line += f"; {name} loss stopped being finite at step {m['nonfinite_step']}"
            out.append(line)
        if name == "bc" and "converged" in m:
            out.append(f"bc: final loss {m['final_loss']:.4f} after {m['steps']} steps, "
                       f"{'converged' if m['converged'] else 'NOT converged (raise bc.steps)'}")
    return out


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _resolve(args)
    from ld.pipeline import run_trial
    from ld.results import write_parquet

    out: Path = args.out
    t0 = time.perf_counter()
    print(f"{PROG} run: dataset={cfg.dataset} modeling={cfg.modeling} L={cfg.latent_step} T={cfg.horizon} "
          f"K={cfg.diffusion_steps} beta={cfg.beta} w={cfg.guidance_scale} sampler={cfg.sampler.name}"
          f"({cfg.sampling_steps}) seed={cfg.seed} -> {out}", flush=True)
    res = run_trial(cfg, out / "artifacts", progress=not args.no_progress)
    tid = res.frame["trial_id"].iloc[0]
    path = write_parquet(res.frame, out / "results" / f"{tid}.parquet")
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "configs" / f"{tid}.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    print(_summary_table(res, cfg))
    print(f"\nresults: {path} ({len(res.frame)} rows); total {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ld.config import ConfigError
    from ld.data.types import DataError
    from ld.stages.artifact import ArtifactError
    from ld.storage import StorageError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError, ArtifactError, StorageError) as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
