"""The Ray layer on a real local Ray instance (one per module): DDP, the smoke grid sweep, a killed worker,
an interrupted driver and `--resume`. Tiny configs; `RAY_TMPDIR` and `LD_DATA_DIR` under the test's tmp dir."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sweep_helpers import make_maze_file, one_trial_suite, wandb_offline_runs

from ld.stages.training import TrainHooks, train_loop

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.yaml"
def env() -> dict[str, str]:  # at call time: the Ray fixture sets RAY_TMPDIR and LD_DATA_DIR
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------------------------------------
# the loop's hooks, without Ray


def _toy(hooks, steps=30):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x.sum(1, keepdim=True)
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 1)

    def loss(step, rng, gen):
        idx = torch.from_numpy(rng.integers(0, len(x), 16))
        noise = 0.01 * torch.randn(16, 1, generator=gen)
        return ((model(x[idx]) - y[idx] + noise) ** 2).mean(), {}

    res = train_loop(model, loss, steps=steps, lr=1e-2, seed=3, desc="toy", log_every=5, progress=False,
                     hooks=hooks)
    return res, {k: v.clone() for k, v in model.state_dict().items()}


def test_single_rank_hooks_change_nothing():
    plain, w0 = _toy(None)
    hooked, w1 = _toy(TrainHooks())
    assert plain.history == hooked.history
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


def test_mid_stage_checkpoint_resumes_bit_for_bit():
    full, w_full = _toy(None)
    saved = {}

    def boom(step):
        if step == 23:
            raise KeyboardInterrupt("killed")

    hooks = TrainHooks(checkpoint_every=10, save=lambda s: saved.update(copy.deepcopy(s)), on_step=boom)
    with pytest.raises(KeyboardInterrupt):
        _toy(hooks)
    assert saved["step"] == 20
    resumed = TrainHooks(checkpoint_every=10, save=lambda s: None, restore=lambda: saved)
    res, w = _toy(resumed)
    assert resumed.resumed_from == [20]
    assert res.history == full.history
    assert all(torch.equal(w_full[k], w[k]) for k in w)


# ---------------------------------------------------------------------------------------------------
# real Ray


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    ray = pytest.importorskip("ray")
    base = tmp_path_factory.mktemp("ray")
    tmp = Path("/tmp") / f"ldray{os.getpid()}"  # AF_UNIX socket paths must stay short
    tmp.mkdir(exist_ok=True)
    old = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "LD_DATA_DIR", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")}
    os.environ.update(RAY_TMPDIR=str(tmp), LD_DATA_DIR=str(base / "data"), RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1")
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                   runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "OMP_NUM_THREADS": "1"}})
    yield ctx.address_info["gcs_address"]
    ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


@pytest.fixture(scope="module")
def maze_file(tmp_path_factory) -> Path:
    return make_maze_file(tmp_path_factory.mktemp("maze"))


def manifests(storage: Path) -> dict[str, int]:
    return {str(m.parent.relative_to(storage)): m.stat().st_mtime_ns
            for m in (storage / "artifacts").glob("*/*/manifest.json")}


def stage_counts(storage: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in manifests(storage):
        s = k.split("/")[1]
        out[s] = out.get(s, 0) + 1
    return out


def test_two_ddp_workers_match_one_worker_on_the_combined_batch(ray_local, tmp_path):
    from ld.distributed.selfcheck import ddp_curve, reference_curve

    ddp_hist, ddp_w = ddp_curve(2, str(tmp_path / "ddp"))
    ref_hist, ref_w = reference_curve(2)
    assert [s for s, _ in ddp_hist] == [s for s, _ in ref_hist] and len(ref_hist) == 8
    np.testing.assert_allclose([v for _, v in ddp_hist], [v for _, v in ref_hist], rtol=1e-4, atol=1e-6)
    for k in ref_w:
        torch.testing.assert_close(ddp_w[k], ref_w[k], rtol=1e-4, atol=1e-5)
    assert ref_hist[-1][1] < 0.5 * ref_hist[0][1]  # it actually learned


@pytest.mark.slow
def test_smoke_grid_sweep_rows_and_shared_stages(ray_local, maze_file, tmp_path, capsys, monkeypatch):
    from ray.tune import ExperimentAnalysis

    from ld.distributed import read_results, read_status, run_sweep

    storage = tmp_path / "store"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    s = run_sweep(SMOKE, storage=storage, scale="smoke", sets=[f"dataset={maze_file}"], checkpoint_every=20,
                  loggers=["mlflow", "wandb"])
    assert (s.trials, s.ok, s.failed) == (4, 4, 0), s.render()
    # live progress, one line per trial start and end, ending with all four done
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[latentdiffuser sweep]")]
    assert len(lines) == 8, lines
    assert lines[-1].startswith("[latentdiffuser sweep] 4/4 done, 0 running, 0 failed, 0 pending"), lines
    # Tune's own table shows the knobs, not an index
    tune_df = ExperimentAnalysis(str(storage / "tune" / "smoke")).dataframe()
    assert sorted(zip(tune_df["config/beta"], tune_df["config/energy_loss"])) == [
        (1.0, "contrastive"), (1.0, "emse"), (3.0, "contrastive"), (3.0, "emse")]
    assert set(tune_df["config/latent_step"]) == {3} and set(tune_df["config/axis"]) == {"product"}
    assert "config/trial_index" not in tune_df
    # a loss curve per trial and stage: every logged point of the energy model (60 steps, logged every 50)
    curves = list((storage / "tune" / "smoke").glob("*/progress.csv"))
    assert len(curves) == 4
    for progress_csv in curves:
        progress = pd.read_csv(progress_csv)
        curve = progress.loc[progress["stage"] == "energy", "train_loss"]
        assert len(curve) == 2 and np.isfinite(curve).all(), progress_csv
    # --logger mlflow: a run per trial in the local file store, the knobs as params, the loss curve as history
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(storage / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 4
    assert sorted((r.data.params["beta"], r.data.params["energy_loss"]) for r in runs) == [
        ("1.0", "contrastive"), ("1.0", "emse"), ("3.0", "contrastive"), ("3.0", "emse")]
    for r in runs:
        assert len(client.get_metric_history(r.info.run_id, "train_loss")) >= 2  # energy, at least
        assert "normalized_score" in r.data.metrics
    # --logger wandb, offline: a run per trial under <storage>/wandb, the same params and curves
    runs = wandb_offline_runs(storage / "wandb", expect=4)
    assert len(runs) == 4, [r["file"] for r in runs]
    got = sorted(((r["config"].get("beta"), r["config"].get("energy_loss")) for r in runs), key=str)
    assert got == [(1.0, "contrastive"), (1.0, "emse"), (3.0, "contrastive"), (3.0, "emse")], [
        (r["file"], sorted(r["config"]), len(r["history"])) for r in runs]
    for r in runs:
        assert len([h for h in r["history"] if "train_loss" in h]) >= 2
        assert any("normalized_score" in h for h in r["history"])

    df = read_results(storage, "smoke")
    assert len(df) == 4 * 2 * 2  # 4 trials x 2 episodes x (guided planner + unguided prior)
    assert not df.duplicated(["trial_id", "variant", "episode"]).any()
    assert set(df["sweep.value"]) == {f"beta={b},energy.loss={e}" for b in (1.0, 3.0) for e in ("contrastive", "emse")}
    assert (df["suite"] == "smoke").all() and (df["sweep.axis"] == "product").all()
    # one VAE, one prior, one support set shared by all four; one energy model each
    assert stage_counts(storage) == {"vae": 1, "prior": 1, "support": 1, "energy": 4, "eval": 1}
    st = read_status(storage, "smoke")
    trained = [x for t in st["trained"] for x in t.split(",") if x]
    assert sorted(trained) == sorted(["vae", "prior", "support"] + ["energy"] * 4)
    assert (s.stage_runs_trained, s.stage_runs_uncached) == (7, 16)
    assert len(list((storage / "tune" / "smoke").glob("*/events.out.tfevents*"))) == 4  # TensorBoard logs


@pytest.mark.slow
def test_killed_training_worker_resumes_from_its_checkpoint(ray_local, maze_file, tmp_path):
    from ld.distributed import read_results, read_status, run_sweep

    storage = tmp_path / "store"
    s = run_sweep(one_trial_suite(tmp_path), storage=storage, sets=[f"dataset={maze_file}", "train.num_workers=2"],
                  checkpoint_every=20, kill_at="prior:50:1")
    assert (s.ok, s.failed) == (1, 0), s.render()
    assert len(list((storage / ".faults").iterdir())) == 1  # rank 1 really was SIGKILLed at prior step 50
    st = read_status(storage, "one").iloc[0]
    assert st["world_size"] == 2 and st["resumed_from"] == "prior@40"
    assert len(read_results(storage, "one")) == 6  # 2 episodes x (planner, prior, BC)
    assert stage_counts(storage) == {"vae": 1, "prior": 1, "support": 1, "energy": 1, "bc": 1, "eval": 2}
    assert not list((storage / "artifacts").glob(".checkpoints/*"))
    # the worker group's loss curve reached the Tune trial: a point per checkpoint of each stage it trained
    (progress_csv,) = (storage / "tune" / "one").glob("*/progress.csv")
    progress = pd.read_csv(progress_csv)
    prior = progress.loc[progress["stage"] == "prior"]
    assert len(prior) >= 3 and np.isfinite(prior["train_loss"]).all(), progress


@pytest.mark.slow
def test_interrupted_driver_then_resume(ray_local, maze_file, tmp_path):
    from ld.distributed import read_results, read_status, run_sweep

    storage = tmp_path / "store"
    cmd = [sys.executable, "-m", "ld.cli", "sweep", str(SMOKE), "--storage", str(storage), "--set",
           f"dataset={maze_file}", "--address", ray_local, "--max-concurrent", "1", "--checkpoint-every", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                            start_new_session=True)
    status_dir = storage / "results" / "smoke" / "_status"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if status_dir.is_dir() and len(list(status_dir.glob("trial=*.parquet"))) >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.kill(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    done_before = set(read_status(storage, "smoke")["trial_id"])
    assert 1 <= len(done_before) < 4, out[-3000:]
    before = manifests(storage)
    assert (storage / "tune" / "smoke").is_dir()

    s = run_sweep(SMOKE, storage=storage, sets=[f"dataset={maze_file}"], resume=True, checkpoint_every=20)
    assert (s.trials, s.ok, s.failed) == (4, 4, 0), s.render()
    assert s.skipped == len(done_before) and s.restored
    df = read_results(storage, "smoke")
    assert len(df) == 16 and not df.duplicated(["trial_id", "variant", "episode"]).any()
    after = manifests(storage)
    assert all(after[k] == v for k, v in before.items())  # finished stages were not retrained
    assert stage_counts(storage) == {"vae": 1, "prior": 1, "support": 1, "energy": 4, "eval": 1}


@pytest.mark.slow
def test_optuna_search_runs_each_sample_on_every_seed_and_reports_the_best(ray_local, maze_file, tmp_path):
    """sweeps/search_guidance.yaml's shape with 3 samples x 2 seeds: Optuna samples (w, beta) in range, each
    sample runs on both seeds (a result file per seed, same point), the searcher gets the seed mean, and the
    summary's best is the best seed mean in the Parquet."""
    import json

    from ld.distributed import read_results, read_status, run_sweep

    body = yaml.safe_load((ROOT / "sweeps" / "search_guidance.yaml").read_text())
    body["name"] = "search"
    body["base"]["dataset"] = str(maze_file)
    body["scales"]["smoke"] = {"preset": "smoke", "seeds": [0, 1], "set": {
        "vae": {"steps": 60}, "prior": {"steps": 60}, "energy": {"steps": 40},
        "eval": {"episodes": 2, "max_steps": 16, "replan_every": 4}}}
    body["search"]["samples"] = 3
    suite = tmp_path / "search.yaml"
    suite.write_text(yaml.safe_dump(body))
    storage = tmp_path / "store"
    s = run_sweep(suite, storage=storage, scale="smoke", checkpoint_every=1000)
    assert (s.trials, s.ok, s.failed) == (6, 6, 0), s.render()
    df = read_results(storage, "search")
    guided = df[df["variant"] == "latentdiffuser"]
    points = guided.groupby("sweep.value")
    assert points.ngroups == 3
    for value, g in points:
        assert sorted(g["seed"].unique()) == [0, 1], value
        assert g["guidance_scale"].nunique() == 1 and g["beta"].nunique() == 1
        assert 1.0 <= g["guidance_scale"].iloc[0] <= 2.0 and 0.3 <= g["beta"].iloc[0] <= 30.0
    seed_mean = guided.groupby(["sweep.value", "seed"])["normalized_score"].mean().groupby("sweep.value").mean()
    assert s.best is not None and s.best["seeds"] == 2 and s.best["samples"] == 3
    assert s.best["value"] == pytest.approx(seed_mean.max(), abs=1e-6)
    best_point = ",".join(f"{k}={v:.4g}" for k, v in sorted(s.best["params"].items()))
    assert seed_mean[best_point] == pytest.approx(seed_mean.max(), abs=1e-6)  # (tiny models may tie)
    assert "best of 3 samples" in s.render()
    assert json.loads((storage / "results" / "search" / "_best.json").read_text())["value"] == pytest.approx(
        s.best["value"])
    assert set(read_status(storage, "search")["status"]) == {"ok"}
    # the VAE and the prior do not read w or beta: one of each per seed; the support set is drawn with the
    # sample's w and the energy model trained with its beta: one per sample x seed
    counts = stage_counts(storage)
    assert (counts["vae"], counts["prior"], counts["support"], counts["energy"]) == (2, 2, 6, 6)
