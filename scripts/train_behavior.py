"""Train (or resume) the TD3 behavior policies of the built-in locomotion data, one environment per process.

    python scripts/train_behavior.py halfcheetah [--steps 1000000] [--stop-after-min 120]

A run lives in bench/behavior/<env>-s<seed>/ (see ld/data/builtin/td3.py for its files); running the same
command again resumes it from its last checkpoint. Ctrl-C or SIGTERM checkpoints at the end of the current
episode and exits (a second one stops at once, losing what followed the last checkpoint). Progress goes to
stderr (tqdm) and the learning curve to curve.csv every 10k steps. `ld/data/builtin/policies/` is then made
from the finished runs by `python scripts/ship_behavior.py`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ld.data.builtin import td3

ROOT = Path(__file__).resolve().parents[1] / "bench" / "behavior"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("env", choices=sorted(td3.ENVS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="total env steps (default: the run's, 1M for a new one)")
    p.add_argument("--stop-after-min", type=float, default=None,
                   help="checkpoint and stop at the first episode end after this many minutes")
    p.add_argument("--out", type=Path, default=None, help=f"run directory (default {ROOT}/<env>-s<seed>)")
    a = p.parse_args(argv)
    out = a.out or ROOT / f"{a.env}-s{a.seed}"
    asked = []

    def on_signal(signum, frame):
        if asked:  # the second one: stop now
            raise SystemExit(128 + signum)
        asked.append(signum)
        print(f"\n{signal.Signals(signum).name}: checkpointing at the end of this episode (again to stop now)",
              file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    td3.train(a.env, out, seed=a.seed, total_steps=a.steps,
              stop_after_s=None if a.stop_after_min is None else 60 * a.stop_after_min, stop=lambda: bool(asked))
    print(f"{out}: step {max(td3.snapshot_steps(out), default=0)}; curve in {out / 'curve.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
