"""What the Ray-layer test modules share: a tiny maze dataset made through the CLI and a one-trial suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def make_maze_file(folder: Path) -> Path:
    """`ld data make pointmaze-umaze --episodes 6` into `folder` (one torch thread)."""
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
