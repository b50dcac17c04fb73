"""The results contract: one Parquet row per evaluation episode, every config field a typed column.

Analysis reads only these files. Writes are atomic (temp file + rename), so a reader never sees a
half-written table and an interrupted run leaves the previous file intact.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import ld
from ld.config import Config

# 2: `predicted_return` and `energy` are the means over an episode's decisions (were: its last decision, now
#    `predicted_return_last`, `energy_last`), `decisions` per episode; `planning.*` config columns
SCHEMA_VERSION = 2

# Columns every results table has besides the flattened config (`dataset`, `seed`, `energy.loss`, ...).
REQUIRED_COLUMNS = (
    "schema_version", "suite", "trial_id", "variant", "env_id", "dataset_name", "dataset_fingerprint",
    "episode", "env_seed", "episode_return", "normalized_score", "length", "success",
    "plan_ms_per_decision", "predicted_return", "package_version", "git_commit", "hardware", "created",
)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip()
        if out.returncode == 0 and commit:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


@functools.lru_cache(maxsize=1)
def hardware() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} CPUs, {gpu}, torch {torch.__version__}"


def episode_rows(
    cfg: Config,
    *,
    suite: str,
    trial_id: str,
    variant: str,
    results: Iterable[Any],
    dataset_info,
    dataset_fingerprint: str,
    stage_columns: dict[str, Any],
    config_overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    flat = cfg.flat()
    flat.update(config_overrides or {})
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = []
    for r in results:
        row = {
            "schema_version": SCHEMA_VERSION, "suite": suite, "trial_id": trial_id, "variant": variant,
            **{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in flat.items()},
            "env_id": dataset_info.env_id, "dataset_name": dataset_info.name,
            "dataset_fingerprint": dataset_fingerprint,
            # the built-in generator that made the data (None for a user's file): a figure of retired data says so
            "dataset_generator_version": dataset_info.generator_version,
            **r.to_dict(),
            **stage_columns,
            "package_version": ld.__version__, "git_commit": git_commit(), "hardware": hardware(),
            "created": created,
        }
        rows.append(row)
    return rows


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in df.columns:  # list-valued config fields (prior.dim_mults) as strings keep the schema flat
        if df[col].map(lambda v: isinstance(v, list)).any():
            df[col] = df[col].map(lambda v: ",".join(map(str, v)) if isinstance(v, list) else v)
    return df


def _table(df: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(df, preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          b"ld_schema_version": str(SCHEMA_VERSION).encode()})


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """The Parquet file of `df` as bytes (for storage that writes a file whole: an object store)."""
    buf = pa.BufferOutputStream()
    pq.write_table(_table(df), buf)
    return buf.getvalue().to_pybytes()


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(_table(df), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_parquet(path: str | Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not an ld results table (missing columns: {', '.join(missing)})")
    return df
