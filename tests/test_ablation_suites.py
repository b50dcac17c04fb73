"""The paper's ablation suites end to end at smoke scale: `latentdiffuser sweep` on a real local Ray, then
`latentdiffuser report` renders each figure from the sweep's own Parquet, and the figure's content is checked from
its tidy CSV."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ld.suite import load_suite

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("suites")
    # Ray's AF_UNIX sockets live under RAY_TMPDIR and their paths must stay under 108 bytes: pytest's tmp dirs grow
    # with the run count (pytest-107/...) and pushed the plasma socket one byte over on CI, so Ray gets a short dir
    ray_tmp = Path("/tmp") / f"ldsuite{os.getpid()}"
    # tiny built-in data: the TD3 behavior policy in its fast mode, under a private data dir
    yield {**os.environ, "RAY_TMPDIR": str(ray_tmp), "LD_DATA_DIR": str(base / "data"), "LD_BUILTIN_FAST": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def ld(env, *args, timeout=900):
    p = subprocess.run([sys.executable, "-m", "ld.cli", *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=timeout)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return p


def test_figure5_smoke_sweep_and_report(env, tmp_path):
    maze = tmp_path / "maze.hdf5"
    ld(env, "data", "make", "pointmaze-umaze", "--episodes", "6", "--out", maze)
    storage, out = tmp_path / "store", tmp_path / "report"
    ld(env, "sweep", ROOT / "ablations" / "figure5.yaml", "--scale", "smoke", "--storage", storage,
       "--set", f"dataset={maze}", "--num-cpus", "2")
    suite = load_suite(ROOT / "ablations" / "figure5.yaml")
    files = list((storage / "results" / "figure5").glob("trial=*.parquet"))
    assert len(files) == len(suite.trials("smoke"))
    p = ld(env, "report", "figure5", "--results", storage, "--out", out, "--scale", "smoke")
    assert "0 missing" in p.stdout
    t = pd.read_csv(out / "figure5.csv")
    assert list(dict.fromkeys(t["panel"])) == ["latent_step", "horizon", "beta", "diffusion_steps"]
    axes, base = suite.axes("smoke"), suite.base_values("smoke")
    assert t.groupby("panel", sort=False).size().to_dict() == {
        a: len({float(v) for v in axes[a]} | {float(base[a])}) for a in axes}
    assert (out / "figure5.png").stat().st_size > 10_000 and (out / "index.html").is_file()


def test_figure3_smoke_sweep_and_report(env, tmp_path):
    storage, out = tmp_path / "store", tmp_path / "report"
    ld(env, "sweep", ROOT / "ablations" / "figure3.yaml", "--scale", "smoke", "--storage", storage, "--num-cpus", "2")
    suite = load_suite(ROOT / "ablations" / "figure3.yaml")
    assert len(list((storage / "results" / "figure3").glob("trial=*.parquet"))) == len(suite.trials("smoke")) == 12
    p = ld(env, "report", "figure3", "--results", storage, "--out", out, "--scale", "smoke")
    assert "0 missing" in p.stdout
    t = pd.read_csv(out / "figure3.csv")
    assert list(dict.fromkeys(t["panel"])) == ["locomotion", "maze"]
    assert (t.groupby("panel").size() == 6).all()
    assert t.groupby("panel")["setting"].apply(list).iloc[0][0] == "latent actions"
