"""Every benchmark script runs in --quick mode and prints valid JSON with its expected keys (issue 7).

Benchmarks are not timed tests: nothing here checks a number, only that the script ran end to end (tiny
data, smoke preset) and reported what its full mode reports. The eight scripts run concurrently (about a
minute of wall time in all on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXPECTED = {
    "planning.py": ["machine", "samplers", "target_dpm_solver_10", "training", "model"],
    "eval_throughput.py": ["machine", "batched", "sequential", "ratio", "target"],
    "train_throughput.py": ["machine", "fp32", "bf16", "ray"],
    "sweep_cost.py": ["machine", "cached", "uncached", "stage_runs_ratio", "dry_count", "target"],
    "guidance_gain.py": ["machine", "datasets", "targets"],
    "storage_ops.py": ["machine", "artifacts", "local", "s3", "s3_over_local"],
    "planner_ceilings.py": ["machine", "datasets", "seeds", "episodes", "candidates", "results"],
    "guidance_ratio.py": ["machine", "beta", "states", "guidance_scale", "groups"],
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["TMPDIR"] = str(tmp_path_factory.mktemp("bench"))
    procs = {name: subprocess.Popen([sys.executable, str(ROOT / "bench" / name), "--quick"], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in EXPECTED}
    out = {}
    for name, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out[name] = (p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_mode_prints_valid_json(outputs, script):
    rc, stdout, stderr = outputs[script]
    assert rc == 0, f"{script} --quick failed:\n{stderr[-3000:]}"
    report = json.loads(stdout)
    for key in EXPECTED[script]:
        assert key in report, f"{script}: no {key!r} in {sorted(report)}"
    assert report["benchmark"] == script.removesuffix(".py")
    assert report["machine"]["cpus"] >= 1


def test_planning_reports_every_sampler_at_every_batch(outputs):
    report = json.loads(outputs["planning.py"][1])
    for lab, entry in report["samplers"].items():
        for cell in entry["latency"].values():
            assert cell["planner"]["median_ms"] > 0 and cell["fast_path"]["median_ms"] > 0
        assert "score" in entry and len(entry["score"]["ci95"]) == 2


def test_guidance_gain_reports_every_baseline_and_the_beta_curve(outputs):
    report = json.loads(outputs["guidance_gain.py"][1])
    (entry,) = report["datasets"].values()
    for key in ("guided", "prior_beta0", "bc", "behavior_data_mean", "gain", "gain_vs_bc", "beta_curve",
                "energy.target_ess_mean", "episode_limit", "capped"):
        assert key in entry, key
    assert entry["capped"] is True  # the smoke preset caps episodes, and says so
    assert set(entry["beta_curve"]) == {"1"}
    assert set(entry["gain"]["per_seed"]) == {"0"}


def test_planner_ceilings_reports_every_variant_on_the_same_episodes(outputs):
    report = json.loads(outputs["planner_ceilings.py"][1])
    assert report["seeds"] == [0] and report["episodes"] == 2 and report["candidates"] == 4
    (entry,) = report["results"].values()
    assert set(entry["variants"]) == {"guided", "prior", "prior_select_E", "prior_select_Q", "prior_oracle",
                                      "codec_ceiling", "behavior_policy", "bc"}
    for v in entry["variants"].values():
        assert v["episodes"] == 2 and len(v["ci95"]) == 2 and v["plan_ms_per_decision"] >= 0
        assert "gap_to_behavior_data" in v
    assert entry["variants"]["codec_ceiling"]["plan_ms_per_decision"] > 0
    oracle = entry["variants"]["prior_oracle"]
    assert 0 <= oracle["oracle_tie_fraction"] <= 1
    # rankings of the candidates against their true return (absent where the sparse maze reward tied them all)
    for key in ("oracle_energy_rank_corr", "oracle_critic_rank_corr", "oracle_interval_rank_corr"):
        assert -1 <= oracle.get(key, 0.0) <= 1
    assert entry["behavior_data_mean"] is not None and entry["capped"] is True
    assert any("waypoint controller" in n for n in entry["notes"])


def test_guidance_ratio_measures_every_sibling_energy_at_every_step(outputs):
    report = json.loads(outputs["guidance_ratio.py"][1])
    (group,) = report["groups"]  # the quick store: one prior and support set, two energy losses
    assert set(group["energies"]) == {"contrastive/q_sum", "mse/q_sum"}
    for e in group["energies"].values():
        ratios = list(e["ratio_by_k"].values())
        assert len(ratios) == 10 and all(r > 0 for r in ratios)  # smoke: K = 10 steps, each measured
        assert e["max"] == max(ratios) and min(ratios) <= e["mean"] <= e["max"]
