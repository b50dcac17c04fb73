"""The layout of a sweep's storage root (`--storage`): every path under it is built here and nowhere else.

    artifacts/                                   stage artifacts (+ .locks/, .checkpoints/ of unfinished stages)
    results/<suite>/trial=<id>-seed=<s>.parquet  episode rows of one trial
    results/<suite>/_status/trial=<id>-seed=<s>.parquet   one status row per trial (ok | failed)
    results/<suite>/_runs/trial=<id>-seed=<s>.json        the trial's run summary (stages trained / reused, timings)
    results/<suite>/_best.json                   the best sample of a search
    tune/<suite>/                                Tune's experiment state (Tuner.restore), per-trial logs, TensorBoard
    train/<run name>/                            Ray Train checkpoints of worker-group trials
    mlruns/                                      MLflow's file store (`--logger mlflow` without a tracking URI)
    .faults/                                     markers of injected faults (tests)

The file name `trial=<id>-seed=<s>` is a trial's idempotency key: a retried or resumed trial rewrites its own
files, so rows are never duplicated.

The root is a local path (every node mounts it: local disk, NFS, EFS) or an object-store URI
(`s3://bucket/prefix`, `gs://...`): then the paths below are `PurePosixPath`s inside the bucket, and every read
and write goes through `files` (`ld.storage.Files`), the same layout either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Union

from ld.storage import Files, is_remote, open_root, without_file_scheme

DEFAULT_STORAGE = "runs/sweeps"
STATUS_DIR = "_status"
RUNS_DIR = "_runs"


def trial_stem(trial_id: str, seed: int) -> str:
    return f"trial={trial_id}-seed={seed}"


def trial_file_name(trial_id: str, seed: int) -> str:
    return f"{trial_stem(trial_id, seed)}.parquet"


@dataclass(frozen=True)
class StorageLayout:
    """The folders and files of one storage root."""

    root: Union[Path, PurePosixPath]
    files: Files = field(default_factory=Files, compare=False)
    uri: str = ""  # the root as the user gave it (object stores: the URI with its query)

    @classmethod
    def of(cls, storage: "str | Path | StorageLayout") -> "StorageLayout":
        if isinstance(storage, StorageLayout):
            return storage
        if is_remote(storage):
            files, root = open_root(str(storage))
            return cls(root, files, str(storage))
        return cls(Path(without_file_scheme(storage)), Files(), str(storage))

    @property
    def remote(self) -> bool:
        return not self.files.local

    def uri_of(self, path: "Path | PurePosixPath") -> str:
        """A path under this root as a URI another process can open (object stores: with the root's query)."""
        if not self.remote:
            return str(path)
        scheme, _, rest = self.uri.partition("://")
        query = rest.partition("?")[2]
        return f"{scheme}://{path}" + (f"?{query}" if query else "")

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    def tune_experiment(self, suite: str) -> Path:
        return self.tune / suite

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def mlruns(self) -> Path:
        return self.root / "mlruns"

    @property
    def faults(self) -> Path:
        return self.root / ".faults"

    def results(self, suite: str) -> Path:
        return self.root / "results" / suite

    def status_dir(self, suite: str) -> Path:
        return self.results(suite) / STATUS_DIR

    def runs_dir(self, suite: str) -> Path:
        return self.results(suite) / RUNS_DIR

    def trial_file(self, suite: str, trial_id: str, seed: int) -> Path:
        return self.results(suite) / trial_file_name(trial_id, seed)

    def status_file(self, suite: str, trial_id: str, seed: int) -> Path:
        return self.status_dir(suite) / trial_file_name(trial_id, seed)

    def summary_file(self, suite: str, trial_id: str, seed: int) -> Path:
        return self.runs_dir(suite) / f"{trial_stem(trial_id, seed)}.json"

    def best_file(self, suite: str) -> Path:
        return self.results(suite) / "_best.json"
