"""The sweep's Parquet results: one file per trial, written atomically; the file name is the idempotency key
(the layout is `ld.distributed.paths`: episode rows under `results/<suite>/`, one status row per trial under
`results/<suite>/_status/`).

A retried or resumed trial rewrites its own file (temp file + rename), so rows are never duplicated and a
reader never sees a half-written file. `read_results` concatenates the trial files (the `_status` folder
and temp files are skipped).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from ld.distributed.paths import StorageLayout
from ld.results import write_parquet


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


def write_trial_rows(df: pd.DataFrame, storage: str | Path, suite: str, trial_id: str, seed: int) -> Path:
    return write_parquet(df, trial_file(storage, suite, trial_id, seed))


def write_status(storage: str | Path, suite: str, trial_id: str, seed: int, *, status: str, axis: str = "",
                 value: Any = "", rows: int = 0, error: Optional[BaseException | str] = None,
                 extra: Optional[dict[str, Any]] = None) -> Path:
    if isinstance(error, BaseException):
        error = "".join(traceback.format_exception_only(type(error), error)).strip()
    row = {"suite": suite, "trial_id": trial_id, "seed": int(seed), "status": status, "sweep.axis": str(axis),
           "sweep.value": str(value), "rows": int(rows), "error": error or "", "host": os.uname().nodename,
           "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    row.update(extra or {})
    return write_parquet(pd.DataFrame([row]), status_file(storage, suite, trial_id, seed))


def _read_all(folder: Path) -> pd.DataFrame:
    files = sorted(f for f in folder.glob("trial=*.parquet") if not f.name.startswith("."))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def read_results(storage: str | Path, suite: str) -> pd.DataFrame:
    """Every episode row of a suite's sweep (all trials, one DataFrame)."""
    return _read_all(results_dir(storage, suite))


def read_status(storage: str | Path, suite: str) -> pd.DataFrame:
    """One row per trial: status ok | failed, the error text, rows written, where it ran, its timings."""
    return _read_all(StorageLayout.of(storage).status_dir(suite))
