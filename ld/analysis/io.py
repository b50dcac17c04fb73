"""Reading a results set for the figures: the one place that knows where results live (a sweep storage root,
a `results/<suite>/` folder, a `latentdiffuser run --out` folder, one Parquet file; local or any pyarrow filesystem
URI) and that turns every way of getting it wrong into one ResultsError the user can act on.

The status rows `latentdiffuser sweep` writes next to the results (`ld.distributed.sink`: one Parquet row per trial in
`<results folder>/_status/trial=*.parquet`) are read here too, from the same folder, so a report lists the
failures of exactly the results it plots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from ld.distributed.paths import STATUS_DIR
from ld.results import REQUIRED_COLUMNS

SWEEP_AXIS, SWEEP_VALUE = "sweep.axis", "sweep.value"


class ResultsError(ValueError):
    """A results set that cannot be analyzed (none, empty, wrong schema), phrased for the user."""


def _fs_and_path(uri: str | Path):
    """(pyarrow filesystem, path inside it) of a local path, file:// or object-store URI (`ld.storage`)."""
    import pyarrow.fs as pafs

    from ld.storage import StorageError, is_remote, local_path, open_root

    if not is_remote(uri):
        return pafs.LocalFileSystem(), str(local_path(uri))
    try:
        files, root = open_root(str(uri))
    except StorageError as e:
        raise ResultsError(str(e)) from None
    return files.fs, str(root)


def find_parquet_files(uri: str | Path, suite: Optional[str] = None) -> list[str]:
    """Parquet files of a results set. `uri` may be a sweep storage root (its `results/<suite>/` is used),
    a `results/<suite>/` folder, a `latentdiffuser run --out` folder (its `results/`), or one Parquet file."""
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as e:  # an object store that refuses us: credentials, endpoint
        raise ResultsError(f"cannot read {uri}: {str(e).strip().splitlines()[0]} (for s3://, set AWS_ACCESS_KEY_ID "
                           "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") from None
    if info.type == pafs.FileType.NotFound:
        raise ResultsError(f"results not found: {uri}")
    if info.type == pafs.FileType.File:
        return [path]
    candidates = []
    if suite:
        candidates.append(f"{path}/results/{suite}")
    candidates += [path, f"{path}/results"]
    for folder in candidates:
        if fs.get_file_info(folder).type != pafs.FileType.Directory:
            continue
        files = sorted(
            f.path for f in fs.get_file_info(pafs.FileSelector(folder, recursive=False))
            if f.type == pafs.FileType.File and f.base_name.endswith(".parquet") and not f.base_name.startswith(".")
        )
        if files:
            return files
    where = f"{path}/results/{suite}/, " if suite else ""
    raise ResultsError(f"no results (*.parquet) under {uri} (looked in {where}{path}/ and {path}/results/)")


def results_dir(uri: str | Path, suite: Optional[str] = None) -> str:
    """The folder that holds the results files (where `_status/` lives, if anywhere)."""
    files = find_parquet_files(uri, suite)
    return files[0].rsplit("/", 1)[0]


def load_results(uri: str | Path, suite: Optional[str] = None) -> pd.DataFrame:
    """All results rows under `uri`, checked against the results schema; rows of other suites dropped.
    Raises ResultsError (one message) when there is nothing usable."""
    import pyarrow.parquet as pq

    fs, _ = _fs_and_path(uri)
    frames = []
    for f in find_parquet_files(uri, suite):
        try:
            table = pq.read_table(f, filesystem=fs)
        except Exception as e:  # pyarrow raises several types for a corrupt or non-Parquet file
            raise ResultsError(f"{f}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        df = table.to_pandas()
        missing = [c for c in (*REQUIRED_COLUMNS, "seed") if c not in df.columns]
        if missing:
            raise ResultsError(f"{f}: not an ld results table (missing columns: {', '.join(missing)})")
        if len(df) == 0:
            continue
        frames.append(df)
    if not frames:
        raise ResultsError(f"results under {uri} hold no rows")
    df = pd.concat(frames, ignore_index=True, sort=False)
    if suite and "suite" in df.columns and (df["suite"] == suite).any():
        df = df[df["suite"] == suite].reset_index(drop=True)
    elif suite and "suite" in df.columns and SWEEP_AXIS in df.columns:
        found = ", ".join(sorted(map(str, df["suite"].unique())))
        raise ResultsError(f"results under {uri} are for suite(s) {found}, not {suite}")
    if df["normalized_score"].isna().all():
        raise ResultsError(f"results under {uri}: normalized_score is empty in every row")
    return df


def load_status(uri: str | Path, suite: Optional[str] = None) -> pd.DataFrame:
    """The status rows of the trials whose results are under `uri` (columns as `ld.distributed.sink`
    writes them: suite, trial_id, seed, status ok | failed, error, ...), in file-name order. Status is an
    extra: results without a `_status/` folder (`latentdiffuser run --out`, a copy of the results alone) give an empty
    frame, and a status file that cannot be read is left out rather than failing the figure."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, _ = _fs_and_path(uri)
    folder = f"{results_dir(uri, suite)}/{STATUS_DIR}"
    if fs.get_file_info(folder).type != pafs.FileType.Directory:
        return pd.DataFrame()
    files = sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(folder, recursive=False))
        if f.type == pafs.FileType.File and f.base_name.startswith("trial=") and f.base_name.endswith(".parquet")
    )
    frames = []
    for f in files:
        try:
            frames.append(pq.read_table(f, filesystem=fs).to_pandas())
        except Exception:  # pyarrow raises several types for a corrupt or non-Parquet file
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
