"""Content-addressed artifacts: the hand-off between pipeline stages.

An artifact is a directory `<root>/<stage>/<key>/` holding weights (`*.pt`, plain state dicts / tensor dicts,
loaded with `weights_only=True`) and `manifest.json`. The key is a hash of everything that determines the
result (stage name, the config subset the stage reads, upstream keys, dataset fingerprint, seed), so a
trial whose inputs already exist reuses them: a beta ablation trains one VAE and one prior.

Two rules keep a shared store safe for concurrent trials: an artifact becomes visible only by an atomic
rename of a finished temp directory (a half-written artifact is never seen), and `ArtifactStore.build`
holds an exclusive file lock per key while training, so two processes that need the same missing artifact
train it once (the second waits, then reuses). On an object store (`ObjectArtifacts`) the manifest, uploaded
last, plays the rename's part and a lease the lock's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

import ld

MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """A missing, corrupt or incompatible artifact, phrased for the user."""


def stage_key(stage: str, config: dict[str, Any], upstream: dict[str, str], dataset: str, seed: int) -> str:
    payload = json.dumps(
        {"stage": stage, "config": config, "upstream": upstream, "dataset": dataset, "seed": seed},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def stage(self) -> str:
        return self.manifest["stage"]

    def load(self, name: str) -> Any:
        f = self.path / f"{name}.pt"
        if not f.is_file():
            raise ArtifactError(f"artifact {self.stage}/{self.key} has no {name}.pt (in {self.path})")
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated or foreign file
            raise ArtifactError(f"artifact file {f} is corrupt or not a weights file: {e}") from None

    def load_json(self, name: str) -> Any:
        f = self.path / f"{name}.json"
        try:
            return json.loads(f.read_text())
        except FileNotFoundError:
            raise ArtifactError(f"artifact {self.stage}/{self.key} has no {name}.json") from None
        except json.JSONDecodeError as e:
            raise ArtifactError(f"artifact file {f} is corrupt: {e}") from None


class ArtifactWriter:
    """Collects files in a temp dir; the store publishes it atomically when the stage returns."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.metrics: dict[str, Any] = {}

    def save(self, name: str, obj: Any) -> None:
        torch.save(obj, self.dir / f"{name}.pt")

    def save_json(self, name: str, obj: Any) -> None:
        (self.dir / f"{name}.json").write_text(json.dumps(obj, indent=1, default=float))


class ArtifactStore:
    """Artifacts under a local root (`objects` None: POSIX rename + flock, as documented above), or on an
    object store (`objects`: an `ObjectArtifacts`, read through a local cache)."""

    def __init__(self, root: str | Path, *, objects: "Optional[ObjectArtifacts]" = None):
        self.objects = objects
        self.root = Path(root) if objects is None else objects.cache

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Artifact | None:
        if self.objects is not None:
            return self.objects.get(stage, key)
        p = self.path(stage, key)
        m = p / MANIFEST
        if not m.is_file():
            return None
        try:
            manifest = json.loads(m.read_text())
        except json.JSONDecodeError as e:
            raise ArtifactError(f"artifact manifest {m} is corrupt ({e}); delete {p} to retrain it") from None
        return Artifact(p, manifest)

    @contextlib.contextmanager
    def _lock(self, stage: str, key: str) -> Iterator[None]:
        if self.objects is not None:
            with self.objects.lease(stage, key):
                yield
            return
        lock_dir = self.root / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{stage}-{key}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def build(
        self,
        stage: str,
        key: str,
        manifest: dict[str, Any],
        produce: Callable[[ArtifactWriter], None],
        *,
        run: Any = None,
        trains: bool = True,
    ) -> tuple[Artifact, bool]:
        """Return (artifact, reused). Runs `produce` only if the artifact does not exist yet.

        `run` (the pipeline's `StageRun`) and `trains` (gradient loop or sampling only) are for stores that
        coordinate a worker group or checkpoint (`ld.distributed.store.SweepStore`); this one needs neither."""
        found = self.get(stage, key)
        if found is not None:
            return found, True
        with self._lock(stage, key):
            found = self.get(stage, key)  # someone else finished it while we waited
            if found is not None:
                return found, True
            final = self.path(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
            try:
                writer = ArtifactWriter(tmp)
                t0 = time.perf_counter()
                produce(writer)
                full = dict(manifest)
                full.update(
                    stage=stage,
                    key=key,
                    metrics=writer.metrics,
                    wall_time_s=round(time.perf_counter() - t0, 3),
                    package_version=ld.__version__,
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    host=os.uname().nodename,
                )
                if self.objects is not None:
                    return self.objects.publish(tmp, stage, key, full), False
                (tmp / MANIFEST).write_text(json.dumps(full, indent=1, sort_keys=True, default=str))
                if final.exists():  # a stale, manifest-less directory from a crash
                    shutil.rmtree(final)
                os.replace(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return Artifact(final, full), False


class ObjectArtifacts:
    """Artifacts on an object store, same layout (`<root>/<stage>/<key>/`), read through a local cache.

    Publishing uploads every file of the finished temp directory, then the manifest, last and whole (one PUT):
    an artifact exists when its manifest does, so a half-uploaded one is never seen, and the manifest lists
    each file with its size, which a download checks. Producers of one missing artifact are serialized by
    `lease(stage, key)` (the Ray layer passes leases from a named actor, `ld.distributed.leases`); without
    one, two producers may both train, and whichever manifest lands last is the artifact, whole either way.
    The cache (`cache/<stage>/<key>/`, a local directory per node) is filled by the same rename-into-place as
    a local store, so concurrent readers on one node download at most twice and never see a partial copy."""

    def __init__(self, files: Any, root: Any, cache: Path,
                 lease: Optional[Callable[[str, str], contextlib.AbstractContextManager]] = None):
        self.files, self.root, self.cache = files, root, Path(cache)
        self._lease = lease

    def lease(self, stage: str, key: str) -> contextlib.AbstractContextManager:
        return self._lease(stage, key) if self._lease is not None else contextlib.nullcontext()

    def remote(self, stage: str, key: str) -> Any:
        return self.root / stage / key

    def get(self, stage: str, key: str) -> Artifact | None:
        local = self.cache / stage / key
        if (local / MANIFEST).is_file():  # content-addressed: a cached copy is the artifact
            return Artifact(local, json.loads((local / MANIFEST).read_text()))
        m = self.remote(stage, key) / MANIFEST
        try:
            text = self.files.read_text(m)
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"artifact manifest {m} is corrupt ({e}); delete {self.remote(stage, key)} "
                                "to retrain it") from None
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=local.parent))
        try:
            for name, size in manifest.get("files", {}).items():
                dst = tmp / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                self.files.download(self.remote(stage, key) / name, dst)
                if dst.stat().st_size != int(size):
                    raise ArtifactError(f"artifact file {self.remote(stage, key) / name} has "
                                        f"{dst.stat().st_size} bytes, its manifest says {size}")
            (tmp / MANIFEST).write_text(text)
            try:
                os.replace(tmp, local)
            except OSError:  # another process on this node cached it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Artifact(local, json.loads((local / MANIFEST).read_text()))

    def publish(self, tmp: Path, stage: str, key: str, manifest: dict[str, Any]) -> Artifact:
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        full = dict(manifest, files=files)
        for name in files:
            self.files.upload(tmp / name, self.remote(stage, key) / name)
        text = json.dumps(full, indent=1, sort_keys=True, default=str)
        self.files.write_text(self.remote(stage, key) / MANIFEST, text)  # last: now the artifact exists
        (tmp / MANIFEST).write_text(text)
        local = self.cache / stage / key
        if local.exists():  # a stale copy (no manifest) from a crash
            shutil.rmtree(local)
        os.replace(tmp, local)
        return Artifact(local, full)
