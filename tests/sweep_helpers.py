"""What the Ray-layer test modules share: a tiny maze dataset made through the CLI and a one-trial suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def make_maze_file(folder: Path) -> Path:
    """`latentdiffuser data make pointmaze-umaze --episodes 6` into `folder` (one torch thread)."""
    out = folder / "umaze.hdf5"
    p = subprocess.run([sys.executable, "-m", "ld.cli", "data", "make", "pointmaze-umaze", "--episodes", "6",
                        "--out", str(out)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr
    return out


def one_trial_suite(tmp_path: Path, name: str = "one") -> Path:
    """A suite of one smoke trial (beta 3, seed 0) with a few training steps per stage."""
    f = tmp_path / f"{name}.yaml"
    f.write_text(f"""name: {name}
base: {{dataset: builtin:pointmaze-umaze}}
scales:
  smoke:
    preset: smoke
    seeds: [0]
    set: {{vae: {{steps: 80}}, prior: {{steps: 80}}, energy: {{steps: 60}},
           eval: {{episodes: 2, max_steps: 16, replan_every: 4}}}}
grid: {{mode: product, axes: {{beta: [3.0]}}}}
""")
    return f


def wandb_offline_runs(folder: Path, expect: int = 0, wait_s: float = 60.0) -> list[dict]:
    """Every offline W&B run under `folder` as {"config": {...}, "history": [{key: value}, ...]}, read from its
    `.wandb` transaction log (a ":W&B" header, then LevelDB-style 32 KiB blocks of protobuf `Record`s), since
    wandb >= 0.19 has no Python reader of its own. wandb's service process writes the log after the trial has
    returned, so with `expect` runs this re-reads (up to `wait_s`) until that many have their config written:
    on a loaded machine the last run's log was seen still empty."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        runs = _read_wandb_runs(folder)
        if not expect or sum(bool(r["config"]) for r in runs) >= expect or time.monotonic() > deadline:
            return runs
        time.sleep(1.0)


def _read_wandb_runs(folder: Path) -> list[dict]:
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    def records(data: bytes):
        assert data[:4] == b":W&B"
        pos, block, buf = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:
                pos += left
                continue
            _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
            if kind == 1:  # full
                yield chunk
            elif kind == 2:  # first
                buf = chunk
            elif kind == 3:  # middle
                buf += chunk
            elif kind == 4:  # last
                yield buf + chunk

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    runs = []
    for f in sorted(Path(folder).rglob("offline-run-*/*.wandb")):
        config, history = {}, []
        for raw in records(f.read_bytes()):
            r = pb.Record()
            r.ParseFromString(raw)
            kind = r.WhichOneof("record_type")
            # the config given to wandb.init travels in the run record, later updates in config records
            # (which of them is flushed by the end depends on wandb's timing, so read both)
            if kind in ("run", "config"):
                updates = (r.run.config if kind == "run" else r.config).update
                config.update({key(i): json.loads(i.value_json) for i in updates})
            elif kind == "history":
                history.append({key(i): json.loads(i.value_json) for i in r.history.item})
        runs.append({"config": config, "history": history, "file": str(f)})
    return runs
