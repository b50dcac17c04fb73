"""`latentdiffuser run` end to end at smoke size, CleanRL-style: the real CLI on real (tiny) data in a real env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ld.results import REQUIRED_COLUMNS
from ld.stages import dag

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ld(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ld.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def maze_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "umaze.hdf5"
    p = ld("data", "make", "pointmaze-umaze", "--episodes", "6", "--out", str(out))
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def first_run(maze_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    p = ld("run", "--preset", "smoke", "--set", f"dataset={maze_file}", "--out", str(out), "--no-progress")
    assert p.returncode == 0, p.stdout + p.stderr
    return out, p


def test_run_writes_the_promised_parquet(first_run):
    out, p = first_run
    files = list((out / "results").glob("*.parquet"))
    assert len(files) == 1
    df = pd.read_parquet(files[0])
    # smoke: 2 episodes x (energy-guided planner + unguided prior baseline + behavior cloning)
    assert len(df) == 6
    assert set(df["variant"]) == {"latentdiffuser", "prior", "bc"}
    for col in REQUIRED_COLUMNS:
        assert col in df.columns, col
    for axis in ("latent_step", "horizon", "diffusion_steps", "beta", "guidance_scale", "temperature",
                 "support_size", "modeling", "energy.target", "energy.loss", "sampler.name", "sampler.steps",
                 "seed", "dataset", "vae.steps", "prior.dim_mults"):
        assert axis in df.columns, axis
    assert df["latent_step"].dtype.kind == "i" and df["beta"].dtype.kind == "f"
    assert (df.loc[df.variant == "prior", "beta"] == 0).all()
    assert (df["length"] == 40).all()  # eval.max_steps at smoke
    # a capped run says so, and is normalized against references prorated to its length (umaze: 300 steps)
    assert df["capped"].all() and (df["episode_limit"] == 40).all()
    assert df["ref_max_score"].iloc[0] > 0
    # the energy's health is in every row and in the printed table
    assert df["stage.energy.target_ess_mean"].between(0.25, 1.0).all()
    # each stage's version, so that `latentdiffuser report` can tell a figure of older math (ld.report.stale_stages)
    for stage in ("vae", "prior", "support", "energy", "bc"):
        assert (df[f"stage.{stage}.version"] == dag.by_name(stage).version).all(), stage
    assert "energy target ESS" in p.stdout and "behavior data" in p.stdout and "capped at 40" in p.stdout
    assert df["normalized_score"].notna().all() and df["env_id"].iloc[0] == "PointMaze_UMaze-v3"
    assert df["schema_version"].iloc[0] == 2 and df["git_commit"].iloc[0]
    assert "norm. score" in p.stdout and "latentdiffuser" in p.stdout


def test_second_run_reuses_every_stage(first_run, maze_file):
    out, _ = first_run
    manifests = sorted((out / "artifacts").glob("*/*/manifest.json"))
    # `eval`: the baselines' episodes (prior, BC), evaluated once per policy (ld.evaluation.reuse)
    assert {m.parent.parent.name for m in manifests} == {"vae", "prior", "support", "energy", "bc", "eval"}
    before = {m: m.stat().st_mtime_ns for m in manifests}
    p = ld("run", "--preset", "smoke", "--set", f"dataset={maze_file}", "--out", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert {m: m.stat().st_mtime_ns for m in manifests} == before  # nothing retrained
    df = pd.concat(pd.read_parquet(f) for f in (out / "results").glob("*.parquet"))
    for stage in ("vae", "prior", "support", "energy", "bc"):
        assert df[f"stage.{stage}.cached"].all()
    assert df.loc[df.variant.isin(["prior", "bc"]), "eval_cached"].all()
    assert not df.loc[df.variant == "latentdiffuser", "eval_cached"].any()


def test_changing_beta_retrains_only_the_energy(first_run, maze_file):
    out, _ = first_run
    p = ld("run", "--preset", "smoke", "--set", f"dataset={maze_file}", "--set", "beta=1.0", "--out", str(out),
           "--no-progress")
    assert p.returncode == 0, p.stderr
    counts = {s: len(list((out / "artifacts" / s).glob("*/manifest.json")))
              for s in ("vae", "prior", "support", "energy", "bc", "eval")}
    # the new beta's prior and BC are the first trial's policies: their episodes are reused, not re-run
    assert counts == {"vae": 1, "prior": 1, "support": 1, "energy": 2, "bc": 1, "eval": 2}
    assert len(list((out / "results").glob("*.parquet"))) == 2  # the first trial's results are kept


@pytest.mark.parametrize("sets", [["modeling=raw"], ["modeling=skill"], ["energy.target=return"],
                                  ["energy.loss=emse"], ["energy.loss=mse"],
                                  ["sampler.name=dpm_solver", "sampler.steps=5"],
                                  ["sampler.name=ddim", "sampler.steps=5"]])
def test_every_modeling_selection_runs(maze_file, tmp_path, sets):
    args = ["run", "--preset", "smoke", "--set", f"dataset={maze_file}", "--set", "eval.max_steps=12",
            "--out", str(tmp_path), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    p = ld(*args)
    assert p.returncode == 0, p.stdout + p.stderr
    df = pd.concat(pd.read_parquet(f) for f in (tmp_path / "results").glob("*.parquet"))
    assert len(df) == 6 and (df["length"] == 12).all()
    key, value = sets[0].split("=")
    assert str(df[key].iloc[0]) == value


def test_missing_dataset_is_a_clear_error(tmp_path):
    p = ld("run", "--preset", "smoke", "--set", f"dataset={tmp_path / 'nope.hdf5'}", "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert "nope.hdf5" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "o" / "results").exists()


def test_bc_baseline_can_be_turned_off(maze_file, tmp_path):
    p = ld("run", "--preset", "smoke", "--set", f"dataset={maze_file}", "--set", "eval.bc_baseline=false",
           "--set", "eval.max_steps=12", "--out", str(tmp_path), "--no-progress")
    assert p.returncode == 0, p.stderr
    df = pd.concat(pd.read_parquet(f) for f in (tmp_path / "results").glob("*.parquet"))
    assert df.groupby("variant").size().to_dict() == {"latentdiffuser": 2, "prior": 2}
    assert not (tmp_path / "artifacts" / "bc").exists()
