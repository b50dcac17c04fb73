"""The sweep's Parquet results: one file per trial, written atomically; the file name is the idempotency key
(the layout is `ld.distributed.paths`: episode rows under `results/<suite>/`, one status row per trial under
`results/<suite>/_status/`).

A retried or resumed trial rewrites its own file (temp file + rename locally, one upload on an object store),
so rows are never duplicated and a reader never sees a half-written file. `read_results` concatenates the
trial files (the `_status` folder and temp files are skipped).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ld.distributed.paths import StorageLayout
from ld.results import parquet_bytes


def results_dir(storage: str | Path, suite: str) -> Path:
    return StorageLayout.of(storage).results(suite)


def trial_file(storage: str | Path, suite: str, trial_id: str, seed: int) -> Path:
    return StorageLayout.of(storage).trial_file(suite, trial_id, seed)


def status_file(storage: str | Path, suite: str, trial_id: str, seed: int) -> Path:
    return StorageLayout.of(storage).status_file(suite, trial_id, seed)


def add_sweep_columns(df: pd.DataFrame, suite: str, axis: str, value: Any) -> pd.DataFrame:
    df = df.copy()
    df["suite"] = suite
    df["sweep.axis"] = str(axis)
    df["sweep.value"] = str(value)
    return df


def _write(storage: str | Path, path: Path, df: pd.DataFrame) -> Path:
    StorageLayout.of(storage).files.write_bytes(path, parquet_bytes(df))
    return path


def write_trial_rows(df: pd.DataFrame, storage: str | Path, suite: str, trial_id: str, seed: int) -> Path:
    return _write(storage, trial_file(storage, suite, trial_id, seed), df)


def write_status(storage: str | Path, suite: str, trial_id: str, seed: int, *, status: str, axis: str = "",
                 value: Any = "", rows: int = 0, error: Optional[BaseException | str] = None,
                 extra: Optional[dict[str, Any]] = None) -> Path:
    if isinstance(error, BaseException):
        error = "".join(traceback.format_exception_only(type(error), error)).strip()
    row = {"suite": suite, "trial_id": trial_id, "seed": int(seed), "status": status, "sweep.axis": str(axis),
           "sweep.value": str(value), "rows": int(rows), "error": error or "", "host": os.uname().nodename,
           "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    row.update(extra or {})
    return _write(storage, status_file(storage, suite, trial_id, seed), pd.DataFrame([row]))


def _read_all(storage: str | Path, folder: Path) -> pd.DataFrame:
    files = StorageLayout.of(storage).files
    found = files.glob(folder, "trial=*.parquet")
    if not found:
        return pd.DataFrame()
    if files.local:
        return pd.concat([pd.read_parquet(f) for f in found], ignore_index=True)
    import pyarrow.parquet as pq

    return pd.concat([pq.read_table(str(f), filesystem=files.fs).to_pandas() for f in found], ignore_index=True)


def read_results(storage: str | Path, suite: str) -> pd.DataFrame:
    """Every episode row of a suite's sweep (all trials, one DataFrame)."""
    return _read_all(storage, results_dir(storage, suite))


def read_status(storage: str | Path, suite: str) -> pd.DataFrame:
    """One row per trial: status ok | failed, the error text, rows written, where it ran, its timings."""
    return _read_all(storage, StorageLayout.of(storage).status_dir(suite))
