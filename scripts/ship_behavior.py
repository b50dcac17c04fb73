"""Choose the expert and medium policies of finished TD3 runs and write the files ld ships.

    python scripts/ship_behavior.py bench/behavior/halfcheetah-s0 [bench/behavior/hopper-s0 ...]

For each run: the expert is the best of its top snapshots re-evaluated on 10 episodes, the medium the earlier
snapshot closest to D4RL's medium/expert ratio for that environment (ld/data/builtin/behavior.py); the result,
with the snapshots medium-replay is regenerated from, goes to ld/data/builtin/policies/<env>-td3-s<seed>.pt.
Prints what was chosen as JSON. Bump GENERATOR_VERSION (ld/data/builtin/__init__.py) when shipped files change.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ld.data.builtin import behavior, locomotion


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="TD3 run directories (scripts/train_behavior.py)")
    a = p.parse_args(argv)
    for run in a.runs:
        pol = behavior.ship(run)
        lo, hi = locomotion.d4rl_references(pol["env"])
        sel = pol["selection"]
        measured = dict(zip(sel["measured_steps"], sel["measured_returns"]))
        print(json.dumps({
            "env": pol["env"], "trained_steps": pol["trained_steps"],
            "expert_step": pol["expert_step"], "expert_return": measured[pol["expert_step"]],
            "expert_d4rl_normalized": 100 * (measured[pol["expert_step"]] - lo) / (hi - lo),
            "medium_step": pol["medium_step"], "medium_return": measured[pol["medium_step"]],
            "medium_fraction_of_expert": measured[pol["medium_step"]] / measured[pol["expert_step"]],
            "replay_snapshots": len(pol["replay_snapshots"]),
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
