"""Plot the learning curves of the behavior-policy runs (bench/behavior/<env>-s<seed>/curve.csv) on D4RL's scale.

    python scripts/plot_behavior.py [--out docs/behavior-policies/learning_curves.png]

One panel per environment: the mean return of 5 deterministic episodes every 10k steps, D4RL's expert
reference (normalized 100), the issue's expert target (normalized 75), D4RL's medium data mean, and, where the
policies ship, the chosen medium and expert snapshots. Prints a JSON summary per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ld.data.builtin import behavior, locomotion, td3  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
D4RL_MEDIUM_DATA = {"halfcheetah": 4770.0, "hopper": 1422.0, "walker2d": 2852.0}  # D4RL's medium data means
TARGET = 75.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=ROOT / "bench" / "behavior")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "behavior-policies" / "learning_curves.png")
    a = p.parse_args(argv)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, env in zip(axes, td3.ENVS):
        lo, hi = locomotion.d4rl_references(env)
        shipped = behavior.shipped_file(env)
        pol = None
        if shipped is not None:
            import torch

            pol = torch.load(shipped, weights_only=True)
        runs = sorted((int(r.name.rsplit("-s", 1)[1]), r) for r in a.runs.glob(f"{env}-s[0-9]*"))
        for k, (seed, run) in enumerate(runs):
            rows = td3.read_curve(run)
            steps = [r["step"] / 1e3 for r in rows]
            rets = [r["return_mean"] for r in rows]
            ships = pol is not None and int(pol["seed"]) == seed
            ax.plot(steps, rets, color=f"C{[0, 4, 5, 6][k % 4]}", lw=1.4 if ships or len(runs) == 1 else 0.9,
                    label=f"TD3 seed {seed}, 5 eval episodes" + (" (shipped)" if ships else ""))
            summary = {"env": env, "seed": seed, "shipped": ships, "steps": int(steps[-1] * 1e3) if steps else 0,
                       "last_return": rets[-1] if rets else None, "best_return": max(rets) if rets else None}
            if ships:
                for key, marker in (("medium_step", "s"), ("expert_step", "*")):
                    st = pol[key]
                    y = dict(zip(pol["curve_steps"], pol["curve_returns"])).get(st)
                    ax.plot([st / 1e3], [y], marker=marker, color="C1", ms=9, ls="none")
                summary.update(medium_step=pol["medium_step"], expert_step=pol["expert_step"])
            if rets:
                summary["best_normalized"] = 100 * (max(rets) - lo) / (hi - lo)
            print(json.dumps(summary))
        ax.axhline(hi, color="k", lw=0.8, ls="--", label="D4RL expert reference (100)")
        ax.axhline(lo + TARGET / 100 * (hi - lo), color="C3", lw=0.8, ls=":", label="expert target (75)")
        ax.axhline(D4RL_MEDIUM_DATA[env], color="C2", lw=0.8, ls="-.", label="D4RL medium data mean")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
        ax.set_title(f"{td3.ENVS[env]}")
        ax.set_xlabel("env steps (thousands)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("return (raw)")
    fig.text(0.5, 0.01, "square: the shipped medium snapshot; star: the shipped expert", ha="center", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
