"""The built-in locomotion behavior policies: TD3 training that checkpoints and resumes, the choice of medium and
expert, the fixed-point actor, and data that is the same bytes whatever BLAS kernel or thread count a machine uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ld.data.builtin import behavior, td3
from ld.data.builtin.actor import NumpyActor

FIXTURES = Path(__file__).parent / "fixtures" / "behavior"


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo's MUJOCO_LOG.TXT


def _actor_sd(seed: int, od: int = 11, ad: int = 3, hidden: int = 64) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return td3.mlp(torch, od, ad, hidden).state_dict()


def test_fixed_point_actor_matches_torch_and_ignores_summation_order():
    sd = _actor_sd(0)
    net = td3.mlp(torch, 11, 3, 64)
    net.load_state_dict(sd)
    actor = NumpyActor(sd, 1.0)
    obs = np.random.default_rng(0).normal(scale=3.0, size=(20, 11))
    for o in obs:
        want = torch.tanh(net(torch.as_tensor(o, dtype=torch.float32))).detach().numpy()
        np.testing.assert_allclose(actor(o), want, atol=2e-5)
    # The same network with its hidden units permuted: every float sum runs in another order, the integer
    # one has the same answer, so the actions are bit-identical.
    perm = np.random.default_rng(1).permutation(64)
    psd = dict(sd)
    psd["0.weight"], psd["0.bias"] = sd["0.weight"][perm], sd["0.bias"][perm]
    psd["2.weight"] = sd["2.weight"][perm][:, perm]
    psd["2.bias"] = sd["2.bias"][perm]
    psd["4.weight"] = sd["4.weight"][:, perm]
    permuted = NumpyActor(psd, 1.0)
    for o in obs:
        assert np.array_equal(actor(o), permuted(o))


def test_training_resumes_exactly_and_rebuilds_a_missing_buffer(tmp_path):
    cfg = td3.TD3Config.fast()
    whole = td3.train("hopper", tmp_path / "whole", cfg=td3.TD3Config.fast(), progress=False)
    parts = tmp_path / "parts"
    td3.train("hopper", parts, cfg=td3.TD3Config.fast(), progress=False, stop_after_s=0.0)
    st = torch.load(parts / "state.pt", weights_only=True)
    assert 0 < st["step"] < cfg.total_steps  # stopped at the first episode end
    td3.train("hopper", parts, progress=False)  # resumes with its own config
    a = torch.load(whole / "state.pt", weights_only=True)
    b = torch.load(parts / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == cfg.total_steps and a["updates"] == b["updates"]
    for k in a["actor"]:
        assert torch.equal(a["actor"][k], b["actor"][k]), k
    assert td3.read_curve(whole)[-1]["return_mean"] == td3.read_curve(parts)[-1]["return_mean"]
    assert td3.snapshot_steps(parts) == list(range(100, cfg.total_steps + 1, 100))

    # a fresh clone has no buffer.npz: the buffer is regenerated from the snapshots and training goes on
    (parts / "buffer.npz").unlink()
    td3.train("hopper", parts, total_steps=cfg.total_steps + 200, progress=False)
    assert torch.load(parts / "state.pt", weights_only=True)["step"] == cfg.total_steps + 200
    assert td3.snapshot_steps(parts)[-1] == cfg.total_steps + 200

    with pytest.raises(ValueError, match="another TD3Config"):
        td3.train("hopper", parts, cfg=td3.TD3Config(), progress=False)
    with pytest.raises(ValueError, match="allowed: halfcheetah, hopper, walker2d"):
        td3.train("ant", tmp_path / "ant", progress=False)


def test_a_run_killed_after_its_checkpoint_resumes_without_duplicate_curve_rows(tmp_path):
    run = tmp_path / "run"
    td3.train("hopper", run, cfg=td3.TD3Config.fast(), progress=False, stop_after_s=0.0)
    t0 = torch.load(run / "state.pt", weights_only=True)["step"]
    # what a kill after the checkpoint leaves: a later snapshot and its curve row
    later = (t0 // 100 + 1) * 100
    sd = {k: v.half() for k, v in _actor_sd(0, hidden=32).items()}
    td3.snapshot_path(run, later).parent.mkdir(exist_ok=True)
    torch.save({"actor": sd, "max_action": 1.0, "step": later}, td3.snapshot_path(run, later))
    new = not (run / "curve.csv").exists()
    with open(run / "curve.csv", "a") as fh:
        fh.write(("step,return_mean,return_std,episodes,wall_s\n" if new else "") + f"{later},-1.0,0.0,1,0.0\n")
    td3.train("hopper", run, progress=False)
    steps = [int(r["step"]) for r in td3.read_curve(run)]
    assert steps == sorted(set(steps)) == td3.snapshot_steps(run)
    assert -1.0 not in [r["return_mean"] for r in td3.read_curve(run)]


def test_replay_stream_follows_the_snapshots_that_filled_the_buffer(tmp_path):
    snaps = {100: _actor_sd(1), 200: _actor_sd(2)}
    arr = td3.replay_stream(snaps, 1.0, 300, 0, "hopper", start_steps=50, expl_noise=0.0)
    assert len(arr["rewards"]) == 300 and (arr["terminals"] | arr["timeouts"])[-1]
    # the first 50 steps are uniformly random; from step 100 the actions are snapshot 100's (no noise here)
    a100, a200 = NumpyActor(snaps[100]), NumpyActor(snaps[200])
    for t in (100, 150, 199):
        np.testing.assert_array_equal(arr["actions"][t], a100(arr["observations"][t].astype(np.float64)).clip(-1, 1))
    for t in (200, 299):
        np.testing.assert_array_equal(arr["actions"][t], a200(arr["observations"][t].astype(np.float64)).clip(-1, 1))
    again = td3.replay_stream(snaps, 1.0, 300, 0, "hopper", start_steps=50, expl_noise=0.0)
    assert all(np.array_equal(arr[k], again[k]) for k in arr)


def test_select_expert_by_reevaluation_and_medium_by_d4rl_fraction():
    # the curve (5 episodes) vs the re-evaluated returns: step 70 spiked by chance, 80 is the real best
    curve = {10: 0.0, 20: 900.0, 30: 2000.0, 40: 4200.0, 50: 5000.0, 60: 8000.0, 70: 10000.0, 80: 9800.0}
    true = {10: 0.0, 20: 900.0, 30: 2100.0, 40: 4600.0, 50: 4300.0, 60: 8200.0, 70: 7000.0, 80: 10000.0}
    expert, medium, sel = behavior.select(curve, lambda s: true[s], 0.45)
    assert expert == 80
    assert sel["target_medium_return"] == pytest.approx(4500.0)
    assert medium == 40  # re-evaluated 4600 is closest to 4500 (50's curve was closer, its return is not)
    assert set(sel["measured_steps"]) >= {40, 50, 70, 80}


SETTINGS = [
    {},
    {"OPENBLAS_CORETYPE": "Sandybridge", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "TORCH_THREADS": "1"},
    {"OPENBLAS_CORETYPE": "Haswell", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "TORCH_THREADS": "2",
     "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL"},  # numpy's own SIMD loops as on a CPU without AVX-512
]
CASES = {  # name -> (episodes, max_episode_steps): long enough for chaos to amplify any difference
    "halfcheetah-medium-expert": (2, 300),
    "halfcheetah-medium-replay": (None, 300),
    "hopper-medium": (4, None),
    "hopper-expert": (4, None),
}
_SCRIPT = """
import json, os, sys, torch
torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "2")))
from ld.data.builtin import make
from ld.data.fingerprint import fingerprint
from ld.data.hdf5 import read_d4rl_hdf5
cases, fixtures = json.loads(sys.argv[1]), sys.argv[2]
out = {}
for name, (episodes, steps) in cases.items():
    env = name.split("-")[0]
    p = make(name, f"{name}.hdf5", episodes=episodes, progress=False, max_episode_steps=steps,
             policy_file=f"{fixtures}/{env}-td3-s0-fast.pt")
    out[name] = fingerprint(read_d4rl_hdf5(p))
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("setting", SETTINGS, ids=["default", "sandybridge-1thread", "haswell-2threads"])
def test_same_fingerprints_under_other_blas_kernels_and_thread_counts(tmp_path, setting):
    """The committed fingerprints (made on one machine) must come out under other BLAS kernels and thread
    counts, in a fresh process: the rollouts use no floating-point reduction whose order can change."""
    want = json.loads((FIXTURES / "fingerprints.json").read_text())
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS[-1]}
    env.update(setting)
    res = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(CASES), str(FIXTURES)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == want


_SHIPPED_SCRIPT = """
import json, os, sys, torch
torch.set_num_threads(1)
from ld.data.builtin import make
from ld.data.hdf5 import read_d4rl_hdf5
out = {}
for name in json.loads(sys.argv[1]):
    out[name] = read_d4rl_hdf5(make(name, f"{name}.hdf5", progress=False)).info.extra["fingerprint"]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_shipped_policies_regenerate_the_committed_default_fingerprints(tmp_path):
    """What a user's `make` produces from the policies ld ships: each shipped environment's -medium set at its
    default size, in a fresh process on another BLAS kernel and one thread, is the committed fingerprint (and
    `make` itself checks it against ld/data/builtin/fingerprints.json)."""
    from ld.data import builtin

    table = json.loads(builtin.FINGERPRINTS_FILE.read_text()) if builtin.FINGERPRINTS_FILE.exists() else {}
    shipped = behavior.shipped_envs()
    if not shipped:
        pytest.skip("no behavior policies ship yet")
    assert table.get("generator_version") == builtin.GENERATOR_VERSION
    names = [f"{e}-medium" for e in shipped]
    assert all(n in table["datasets"] for n in names), "run scripts/ship_behavior.py --fingerprints"
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS[-1]}
    env.update({"OPENBLAS_CORETYPE": "Sandybridge", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    res = subprocess.run([sys.executable, "-c", _SHIPPED_SCRIPT, json.dumps(names)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == {n: table["datasets"][n]["fingerprint"] for n in names}


def test_stop_request_checkpoints_at_the_episode_end(tmp_path):
    cfg = td3.TD3Config.fast()
    td3.train("hopper", tmp_path / "run", cfg=cfg, progress=False, stop=lambda: True)
    st = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert 0 < st["step"] < cfg.total_steps


@pytest.mark.slow
def test_sigterm_to_the_training_script_checkpoints_and_exits_cleanly(tmp_path):
    import signal
    import time

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_behavior.py"
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(script), "hopper", "--out", str(run), "--steps", "40000"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (run / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    assert "SIGTERM: checkpointing" in err
    st = torch.load(run / "state.pt", weights_only=True)
    assert 0 < st["step"] < 40000
