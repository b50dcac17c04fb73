"""`ray start --head` + `ray job submit --working-dir DIR -- latentdiffuser sweep ...` of the smoke suite, as on
a cluster; and `latentdiffuser sweep` on the head's machine, which joins that head.

The head is started with `--block` in its own session and stopped by killing that process group (never
`ray stop`, which would stop every Ray instance of this user on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
LATENTDIFFUSER = str(Path(sys.executable).with_name("latentdiffuser"))  # the command a user types

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """`ray start --head` with Ray's token auth on. `ray start` turns it on when the user has a token
    (~/.ray/auth_token, which any earlier `ray.init()` of the user writes) and starts without auth otherwise, so
    on a machine with no token yet the test makes one (`ray get-auth-token --generate`) and removes it after."""
    base = tmp_path_factory.mktemp("head")
    tmp = Path("/tmp") / f"ldjob{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "LD_DATA_DIR": str(base / "data"), "OMP_NUM_THREADS": "1",
           "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "RAY_ADDRESS"):
        env.pop(k, None)
    token = Path.home() / ".ray" / "auth_token"
    made_token = not token.exists()
    if made_token:
        subprocess.run([RAY, "get-auth-token", "--generate"], capture_output=True, env=env, check=True, timeout=120)
    port, dash = free_port(), free_port()
    proc = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--port", str(port),
                             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port",
                             str(dash), "--disable-usage-stats"],  # its temp dir: RAY_TMPDIR, as a user's `ray start`
                            stdout=open(base / "head.log", "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    client = {**env, "RAY_AUTH_MODE": "token"}  # the client side of Ray's token auth (RAY-NOTES.md)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            p = subprocess.run([RAY, "job", "list", "--address", address], capture_output=True, text=True,
                               env=client)
            if p.returncode == 0:
                break
            assert proc.poll() is None, (base / "head.log").read_text()[-3000:]
            time.sleep(2)
        else:
            pytest.fail("the Ray head's job server did not come up:\n" + (base / "head.log").read_text()[-3000:]
                        + "\nray job list: " + p.stderr[-2000:])
        assert "Token authentication is enabled" in (base / "head.log").read_text()
        yield address, client, f"127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        if made_token:
            token.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def maze(head, tmp_path_factory) -> Path:
    """The tiny built-in maze every sweep of this module trains on (made once)."""
    path = tmp_path_factory.mktemp("data") / "umaze.hdf5"
    p = subprocess.run([sys.executable, "-m", "ld.cli", "data", "make", "pointmaze-umaze", "--episodes", "6",
                        "--out", str(path)], capture_output=True, text=True, env=head[1], timeout=300)
    assert p.returncode == 0, p.stderr
    return path


def test_job_submit_runs_the_smoke_sweep(head, maze, tmp_path):
    address, client, _ = head
    work = tmp_path / "job"
    (work / "sweeps").mkdir(parents=True)
    shutil.copy(ROOT / "sweeps" / "smoke.yaml", work / "sweeps" / "smoke.yaml")
    storage = tmp_path / "store"
    for _ in range(12):  # the job server answers `ray job list` before its agent takes jobs (slow under load)
        p = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(work), "--",
                            sys.executable, "-m", "ld.cli", "sweep", "sweeps/smoke.yaml", "--storage", str(storage),
                            "--set", f"dataset={maze}", "--checkpoint-every", "20"],
                           capture_output=True, text=True, env=client, timeout=600)
        if p.returncode == 0 or "No available agent to submit job" not in p.stdout + p.stderr:
            break
        time.sleep(5)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "4 trials, 4 ok" in p.stdout and "succeeded" in p.stdout, p.stdout[-3000:]
    files = list((storage / "results" / "smoke").glob("trial=*.parquet"))
    assert len(files) == 4
    assert sum(len(pd.read_parquet(f)) for f in files) == 16


def user_shell(client: dict[str, str]) -> dict[str, str]:
    """The shell of a user who ran `ray start --head` on this machine: no RAY_ADDRESS and none of the auth
    variables, which `ray.init()` does not need to join that head either."""
    return {k: v for k, v in client.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH",
                                                          "RAY_AUTH_TOKEN")}


def test_sweep_against_the_cluster_without_the_auth_token_is_one_clear_error(head, tmp_path):
    """The mistake every first cluster run makes: the client forgot RAY_AUTH_MODE=token. One message naming
    the cause and the fix, exit 2, and nothing written to the storage."""
    _, client, gcs = head
    env = user_shell(client)
    storage = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "ld.cli", "sweep", str(ROOT / "sweeps" / "smoke.yaml"), "--address",
                        gcs, "--storage", str(storage)], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"cannot connect to the Ray cluster at {gcs}" in p.stderr and "RAY_AUTH_MODE=token" in p.stderr
    assert "Traceback" not in p.stderr
    assert not storage.exists()


def test_sweep_on_a_machine_where_ray_runs_joins_that_cluster(head, maze, tmp_path):
    """`ray start --head` already ran here (every head node): `latentdiffuser sweep` without --address joins it, as
    `ray.init()` would (address="auto": no RAY_AUTH_MODE needed, though the head has token auth on), and uses its
    CPUs; it neither starts a second instance nor dies on num_cpus."""
    _, client, gcs = head
    storage = tmp_path / "store"
    env = user_shell(client)  # found the way ray.init() finds it
    p = subprocess.run([LATENTDIFFUSER, "sweep", str(ROOT / "sweeps" / "smoke.yaml"), "--storage",
                        str(storage), "--set", f"dataset={maze}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    port = gcs.rsplit(":", 1)[1]  # Ray reports the node's IP, not 127.0.0.1
    assert "joined the running Ray cluster at " in p.stdout and f":{port} (" in p.stdout, p.stdout[-2000:]
    assert "4 trials, 4 ok" in p.stdout, p.stdout[-2000:]
    files = list((storage / "results" / "smoke").glob("trial=*.parquet"))
    assert len(files) == 4 and sum(len(pd.read_parquet(f)) for f in files) == 16


def test_num_cpus_with_a_running_cluster_is_one_clear_error(head, tmp_path):
    _, client, gcs = head
    env = user_shell(client)
    storage = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "ld.cli", "sweep", str(ROOT / "sweeps" / "smoke.yaml"), "--storage",
                        str(storage), "--num-cpus", "2"], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "--num-cpus 2 cannot apply to the running Ray cluster at " in p.stderr, p.stderr
    assert "Drop --num-cpus" in p.stderr
    assert "Traceback" not in p.stderr
    assert not storage.exists()
