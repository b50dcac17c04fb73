"""The command line coexists with the system it is installed into.

Its executable is `latentdiffuser`: a console script named `ld` in an environment on PATH replaced binutils'
linker for gcc (collect2 runs `ld` from PATH), so every C extension, Triton launcher or link step built in
that environment failed. `python -m ld` is the same command. `scripts/ray_sweep.py --help` answers like any
command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project's environment: where pip puts its console scripts


def run(*args, env=None, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def test_the_console_script_is_latentdiffuser_and_no_ld_is_installed():
    scripts = {e.name: e.value for e in metadata.distribution("ld").entry_points if e.group == "console_scripts"}
    assert scripts == {"latentdiffuser": "ld.cli:main"}, scripts
    assert not (BIN / "ld").exists(), f"{BIN / 'ld'} would replace the linker for every compiler in this environment"
    assert (BIN / "latentdiffuser").is_file(), f"the project is not installed into {BIN} (pip install -e .)"


def test_a_c_compiler_links_with_the_environment_first_on_path(tmp_path):
    """What broke: with the venv's bin first on PATH (an activated venv, the cluster nodes' login shells),
    gcc's collect2 ran the console script `ld` instead of the linker."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    cc = shutil.which("gcc", path=path) or shutil.which("cc", path=path)
    if cc is None:
        pytest.skip("no C compiler (gcc or cc) on PATH, so there is no link step the command could break")
    (tmp_path / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    p = run(cc, "hello.c", "-o", "hello", env={**os.environ, "PATH": path}, cwd=tmp_path)
    assert p.returncode == 0, f"{cc} could not link with {BIN} first on PATH:\n{p.stdout}{p.stderr}"
    assert run(tmp_path / "hello").stdout == "hello\n"


def test_python_dash_m_ld_is_the_command():
    p = run(sys.executable, "-m", "ld", "--version")
    assert p.returncode == 0 and p.stdout.startswith("latentdiffuser "), p.stdout + p.stderr
    p = run(sys.executable, "-m", "ld", "--help")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: latentdiffuser ") and "{run,sweep,report,data,config}" in p.stdout
    p = run(sys.executable, "-m", "ld", "sweep", "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: latentdiffuser sweep "), p.stdout + p.stderr


def test_errors_name_the_command(tmp_path):
    """README's example of a bad value: one line that names `latentdiffuser run`, exit 2, nothing written."""
    p = run(sys.executable, "-m", "ld", "run", "--set", "sampler.name=euler", "--out", tmp_path / "out")
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.startswith("latentdiffuser run: error: invalid config: sampler.name: "), p.stderr
    assert not (tmp_path / "out").exists()
    p = run(sys.executable, "-m", "ld", "nosuch")
    assert p.returncode == 2 and "latentdiffuser: error: argument" in p.stderr, p.stderr


def test_ray_sweep_script_help(tmp_path):
    """As `ray submit` runs it (a copy in the head's home): `--help` is the script's usage and the sweep's options,
    exit 0; `SUITE --help` is the sweep's own help; no arguments stay a usage error."""
    shutil.copy(ROOT / "scripts" / "ray_sweep.py", tmp_path / "ray_sweep.py")
    env = {**os.environ, "LD_PROJECT": str(ROOT)}
    for args in (["--help"], ["-h"], ["--", "--help"]):
        p = run(sys.executable, tmp_path / "ray_sweep.py", *args, cwd=tmp_path, env=env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.startswith("usage: ray submit cluster.yaml scripts/ray_sweep.py SUITE.yaml"), p.stdout
        assert "--storage" in p.stdout and "--scale" in p.stdout and p.stderr == ""
    p = run(sys.executable, tmp_path / "ray_sweep.py", "sweeps/smoke.yaml", "--help", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "usage: latentdiffuser sweep " in p.stdout and "--max-concurrent" in p.stdout
    p = run(sys.executable, tmp_path / "ray_sweep.py", cwd=tmp_path, env=env)
    assert p.returncode != 0 and p.stderr.startswith("usage: ray submit"), p.stdout + p.stderr
