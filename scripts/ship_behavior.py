"""Choose the expert and medium policies of finished TD3 runs and write the files ld ships.

    python scripts/ship_behavior.py bench/behavior/halfcheetah-s0 [bench/behavior/hopper-s0 ...]
    python scripts/ship_behavior.py --fingerprints      # after shipping: record the default sets' fingerprints

For each run: the expert is the best of its top snapshots re-evaluated on 10 episodes, the medium the earlier
snapshot closest to D4RL's medium/expert ratio for that environment (ld/data/builtin/behavior.py); the result,
with the snapshots medium-replay is regenerated from, goes to ld/data/builtin/policies/<env>-td3-s<seed>.pt.
Prints what was chosen as JSON. Bump GENERATOR_VERSION (ld/data/builtin/__init__.py) when shipped files change,
then run with --fingerprints: every locomotion set of a shipped environment is generated at its default size
(seed 0) and its fingerprint written to ld/data/builtin/fingerprints.json, which `make` checks from then on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ld.data import builtin
from ld.data.builtin import behavior, locomotion
from ld.data.hdf5 import read_d4rl_hdf5


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="TD3 run directories (scripts/train_behavior.py)")
    p.add_argument("--fingerprints", action="store_true",
                   help="generate every default-size locomotion set of the shipped policies and record its fingerprint")
    a = p.parse_args(argv)
    if not a.runs and not a.fingerprints:
        p.error("give run directories, --fingerprints, or both")
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
    if a.fingerprints:
        record_fingerprints()
    return 0


def record_fingerprints() -> None:
    shipped = set(behavior.shipped_envs())
    table = {"generator_version": builtin.GENERATOR_VERSION, "datasets": {}}
    old = builtin.FINGERPRINTS_FILE
    builtin.FINGERPRINTS_FILE = Path("/nonexistent")  # record, do not check against the old table
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, (env, _) in locomotion.DATASETS.items():
                if env not in shipped:
                    continue
                path = builtin.make(name, Path(tmp) / f"{name}.hdf5", progress=True)
                info = read_d4rl_hdf5(path).info
                table["datasets"][name] = {"episodes": builtin.DEFAULT_EPISODES[name],
                                           "fingerprint": info.extra["fingerprint"],
                                           "transitions": info.extra["transitions"],
                                           "normalized_return_mean": round(info.extra["dataset_normalized_score"], 2)}
                print(json.dumps({name: table["datasets"][name]}))
    finally:
        builtin.FINGERPRINTS_FILE = old
    old.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {old}")


if __name__ == "__main__":
    raise SystemExit(main())
