"""Ray's cluster launcher for real, exactly as the README tells a user to drive it:

    ray up -y  ->  ray submit scripts/ray_sweep.py (figure 5, then --resume)
    ->  ray exec "latentdiffuser report figure5"  ->  ray job submit (the smoke suite)  ->  ray down -y

The cluster is this machine as a one-node cluster of Ray's `local` provider, reached over SSH on 127.0.0.1:22
(an sshd from Debian's openssh-server that this test starts, with a host key and a client key it makes). Its
config is generated from `cluster-local.yaml`, with only what must differ on a shared test machine replaced:
the head's address and SSH user, this venv instead of ~/venv, ports and a RAY_TMPDIR of its own, no `ray stop`
(it would stop every Ray of this user here) and no `pip install` (this venv already has ld). Every
replacement is asserted, so an edit of cluster-local.yaml that the test no longer matches fails here.

The launcher runs commands on the head in a login shell that sources ~/.bashrc of the SSH user, so the setup
line of cluster-local.yaml appends to the real ~/.bashrc: the test restores that file afterwards. `ray down`
leaves the dashboard and runtime-env agents running; they are killed by pid (every Ray process whose command
line names this test's temp dir).
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ld.suite import load_suite

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
RAY = str(Path(sys.executable).with_name("ray"))
SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def install_ssh() -> str | None:
    """openssh-server and rsync from Debian's packages; the reason it cannot, or None."""
    if Path(SSHD).exists() and shutil.which("rsync") and shutil.which("ssh"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return ("the cluster launcher test needs sshd and rsync (Debian: apt-get install openssh-server rsync); "
                f"they are missing and this user ({getpass.getuser()}) cannot install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "openssh-server", "rsync"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0 or not Path(SSHD).exists():
        return f"apt-get install openssh-server rsync failed (exit {p.returncode}): {p.stderr[-1500:]}"
    return None


def sh(*args, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert p.returncode == 0, (
            f"{' '.join(map(str, args[:4]))} exited {p.returncode}:\n" + (p.stdout + p.stderr)[-5000:]
        )
    return p


@pytest.fixture(scope="module")
def sshd():
    reason = install_ssh()
    if reason:
        pytest.skip(reason)
    tmp = Path(f"/tmp/ldc{os.getpid()}")  # short: Ray's unix sockets live under RAY_TMPDIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    key, host = tmp / "id_ed25519", tmp / "host_ed25519"
    for k in (key, host):
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k)
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    restore: list[tuple[Path, bytes | None]] = []
    proc = None
    if port_open(22):  # an sshd already serves this machine: authorize the test key there, for the test only
        auth = home / ".ssh" / "authorized_keys"
        auth.parent.mkdir(mode=0o700, exist_ok=True)
        restore.append((auth, auth.read_bytes() if auth.exists() else None))
        with open(auth, "a") as f:
            f.write((tmp / "id_ed25519.pub").read_text())
    else:
        (tmp / "authorized_keys").write_text((tmp / "id_ed25519.pub").read_text())
        (tmp / "sshd_config").write_text("\n".join([
            "Port 22", "ListenAddress 127.0.0.1", f"HostKey {host}", f"PidFile {tmp / 'sshd.pid'}",
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")], stdout=open(tmp / "sshd.log", "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while not port_open(22):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("sshd did not start on 127.0.0.1:22:\n" + (tmp / "sshd.log").read_text()[-3000:])
            time.sleep(0.2)
    user = getpass.getuser()
    sh("ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
       "IdentitiesOnly=yes", "-o", "BatchMode=yes", f"{user}@127.0.0.1", "true", timeout=60)
    bashrc = home / ".bashrc"
    restore.append((bashrc, bashrc.read_bytes() if bashrc.exists() else None))
    restore += [(home / name, (home / name).read_bytes() if (home / name).exists() else None)
                for name in ("ray_sweep.py", "ray_bootstrap_config.yaml", "ray_bootstrap_key.pem")]
    try:
        yield tmp, key, user
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
        for path, content in restore:
            if content is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(content)
        kill_ray_of(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def kill_ray_of(tmp: Path) -> list[int]:
    """Every process whose command line names this test's temp dir (what `ray down` leaves running)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in cmd and "sshd" not in cmd:
            pids.append(int(d.name))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"cluster-local.yaml changed: {old!r} not found in {text!r}; update this test"
    return text.replace(old, new)


def local_cluster_config(tmp: Path, key: Path, user: str, ports: dict[str, int], data_dir: Path) -> dict:
    """cluster-local.yaml, pointed at this machine (see the module docstring for what is replaced and why)."""
    cfg = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    assert cfg["provider"]["type"] == "local"
    cfg["cluster_name"] = f"ldtest{os.getpid()}"
    cfg["provider"] = {**cfg["provider"], "head_ip": "127.0.0.1", "worker_ips": []}
    cfg["min_workers"] = cfg["max_workers"] = 0
    cfg["auth"] = {"ssh_user": user, "ssh_private_key": str(key)}
    assert list(cfg["file_mounts"].values()) == ["."]
    cfg["file_mounts"] = {str(tmp / "ld-project"): str(ROOT)}  # the head is this machine: sync to a private folder

    def here(cmd: str) -> str:
        return cmd.replace("~/venv", str(VENV)).replace("$HOME/venv", str(VENV)).replace("/mnt/ld/data", str(data_dir))

    setup = []
    for cmd in cfg["setup_commands"]:
        if "pip install" in cmd or cmd.startswith("mountpoint"):
            continue  # this venv already has ld (editable, from this checkout); no NFS here
        cmd = here(cmd)
        if "LD_CLUSTER_ENV" in cmd:
            cmd = replaced(cmd, "echo 'export ", f"echo 'export RAY_TMPDIR={tmp} ")
            assert str(VENV / "bin") in cmd
        setup.append(cmd)
    assert any("LD_CLUSTER_ENV" in c for c in setup), "cluster-local.yaml no longer puts the venv on PATH"
    cfg["setup_commands"] = setup
    head = []
    for cmd in cfg["head_start_ray_commands"]:
        if cmd.strip().endswith("ray stop"):
            continue
        cmd = here(cmd)
        cmd = replaced(cmd, "--port=6379", f"--port={ports['gcs']}")
        cmd = replaced(cmd, "--object-manager-port=8076", f"--object-manager-port={ports['om']}")
        cmd = replaced(cmd, "--dashboard-host=0.0.0.0",
                       f"--dashboard-host=127.0.0.1 --dashboard-port={ports['dash']} --num-cpus=2")
        cmd = replaced(cmd, "LD_DATA_DIR=", f"RAY_TMPDIR={tmp} OMP_NUM_THREADS=1 LD_DATA_DIR=")
        head.append(cmd)
    cfg["head_start_ray_commands"] = head
    cfg["worker_start_ray_commands"] = []
    return cfg


def test_cluster_yaml_and_cluster_local_yaml_share_their_setup():
    """The AWS file and the on-prem file the launcher test brings up must not drift apart."""
    aws = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    local = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    for key in ("file_mounts", "rsync_exclude", "head_start_ray_commands", "worker_start_ray_commands"):
        assert aws[key] == local[key], key
    storage_free = [c for c in aws["setup_commands"]
                    if "/mnt/ld " not in c and "apt-get" not in c and "LD_STORAGE" not in c]
    assert storage_free == [c for c in local["setup_commands"] if not c.startswith("mountpoint")]


def _ray_sweep_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ray_sweep", ROOT / "scripts" / "ray_sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ray_sweep_script_resolves_the_suite_in_the_project_and_defaults_the_storage(tmp_path, monkeypatch):
    """What ray submit hands the script, run from the head's home (not the project)."""
    mod = _ray_sweep_script()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ld").mkdir()  # the folder that used to shadow the package
    monkeypatch.setenv("LD_PROJECT", str(ROOT))
    monkeypatch.setenv("LD_STORAGE", str(tmp_path / "store"))
    argv = mod.build_argv(["ablations/figure5.yaml", "--scale", "paper"])
    assert argv == ["sweep", str(ROOT / "ablations" / "figure5.yaml"), "--scale", "paper",
                    "--storage", str(tmp_path / "store")]
    assert mod.build_argv(["--", "sweeps/smoke.yaml", "--storage", "s3"]) == [
        "sweep", str(ROOT / "sweeps" / "smoke.yaml"), "--storage", "s3"]
    with pytest.raises(SystemExit, match="usage: ray submit"):
        mod.build_argv(["--scale", "paper"])
    # run as ray submit runs it: `python ~/ray_sweep.py ...` from a home holding a folder named ld
    shutil.copy(ROOT / "scripts" / "ray_sweep.py", tmp_path / "ray_sweep.py")
    p = subprocess.run([sys.executable, str(tmp_path / "ray_sweep.py"), "no/such/suite.yaml"], capture_output=True,
                       text=True, cwd=tmp_path, env={**os.environ, "LD_PROJECT": str(ROOT)}, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "no/such/suite.yaml" in p.stderr


def test_ray_up_submit_exec_job_down(sshd, tmp_path):
    tmp, key, user = sshd
    ports = {"gcs": free_port(), "om": free_port(), "dash": free_port()}
    data_dir = tmp_path / "data"
    cfg_path = tmp_path / "cluster.yaml"
    cfg_path.write_text(yaml.safe_dump(local_cluster_config(tmp, key, user, ports, data_dir), sort_keys=False))
    env = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}", "LD_DATA_DIR": str(data_dir),
           "RAY_TMPDIR": str(tmp)}
    env.pop("RAY_ADDRESS", None)
    maze = tmp_path / "maze.hdf5"
    sh(sys.executable, "-m", "ld.cli", "data", "make", "pointmaze-umaze", "--episodes", "6", "--out", maze, env=env)
    storage = tmp_path / "store"
    up = False
    try:
        sh(RAY, "up", "-y", "--no-config-cache", cfg_path, env=env, timeout=600)
        up = True
        # ray submit: exactly the README's line, with the smoke scale and this test's data and storage
        args = [RAY, "submit", cfg_path, ROOT / "scripts" / "ray_sweep.py", ROOT / "ablations" / "figure5.yaml",
                "--scale", "smoke", "--storage", storage, "--set", f"dataset={maze}"]
        p = sh(*args, env=env, timeout=900)
        assert "joined the running Ray cluster at " in p.stdout and f":{ports['gcs']} (" in p.stdout, p.stdout[-3000:]
        suite = load_suite(ROOT / "ablations" / "figure5.yaml")
        n = len(suite.trials("smoke"))
        assert f"{n} trials, {n} ok" in p.stdout, p.stdout[-3000:]
        rows = pd.read_parquet(storage / "results" / "figure5")
        assert rows["trial_id"].nunique() == n
        per_trial = rows.groupby(["trial_id", "seed", "variant"]).size()
        assert (per_trial == 2).all(), per_trial  # 2 episodes per variant, none twice
        assert not rows.duplicated(["trial_id", "seed", "variant", "episode"]).any()
        # --resume through ray submit: nothing re-run, no row added
        p = sh(*args, "--resume", env=env, timeout=900)
        assert f"{n} ok ({n} already done)" in p.stdout, p.stdout[-3000:]
        assert len(pd.read_parquet(storage / "results" / "figure5")) == len(rows)
        # ray exec of latentdiffuser report on the head: the figure from the cluster's own Parquet
        report = tmp_path / "report"
        p = sh(RAY, "exec", cfg_path, f"latentdiffuser report figure5 --results {storage} --out {report} --scale smoke",
               env=env, timeout=900)
        assert (report / "figure5.png").stat().st_size > 10_000 and (report / "index.html").is_file()
        assert "0 missing" in p.stdout, p.stdout[-3000:]
        # ray job submit of a second suite, through the head's dashboard, with the head's token
        job_env = {**env, "RAY_AUTH_MODE": "token"}
        for _ in range(12):  # the job agent takes jobs a little after the dashboard answers
            p = sh(RAY, "job", "submit", "--address", f"http://127.0.0.1:{ports['dash']}", "--working-dir", ROOT,
                   "--", "latentdiffuser", "sweep", "sweeps/smoke.yaml", "--storage", storage,
                   "--set", f"dataset={maze}", env=job_env, timeout=900, check=False)
            if p.returncode == 0 or "No available agent to submit job" not in p.stdout + p.stderr:
                break
            time.sleep(5)
        assert p.returncode == 0, (p.stdout + p.stderr)[-5000:]
        assert "4 trials, 4 ok" in p.stdout and "succeeded" in p.stdout, p.stdout[-3000:]
        smoke = pd.read_parquet(storage / "results" / "smoke")
        assert smoke["trial_id"].nunique() == 4 and len(smoke) == 16
        assert not smoke.duplicated(["trial_id", "seed", "variant", "episode"]).any()
    finally:
        if up:
            down = sh(RAY, "down", "-y", cfg_path, env=env, timeout=300, check=False)
            assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
        left = kill_ray_of(tmp)
        print(f"killed {len(left)} processes ray down left running: {left}")
