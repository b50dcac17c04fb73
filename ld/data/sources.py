"""`load_dataset(spec)`: one entry point for every data source.

Spec forms:
  minari:<dataset id>          a Minari dataset (local; downloaded only when online and LD_OFFLINE unset)
  builtin:<name>               a built-in generated dataset, cached under `data_dir()` (ld.data.builtin)
  <path>.hdf5[#<d4rl task>]    a D4RL-layout HDF5 file; `#task` names the D4RL task when the file has no
                               `ld_info` attribute and its stem is not a task name
Every returned dataset has `fingerprint` set (ld.data.fingerprint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ld.data.fingerprint import fingerprint
from ld.data.types import DataError, EpisodeDataset

SPEC_FORMS = (
    "minari:<namespace>/<env>/<name>-vN",
    "builtin:<name>",
    "/path/to/file.hdf5 (optionally /path/to/file.hdf5#<d4rl-task>, e.g. #hopper-medium-v2)",
)


def data_dir() -> Path:
    """Where built-in datasets are cached: $LD_DATA_DIR, default ~/.cache/ld/data."""
    env = os.environ.get("LD_DATA_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ld" / "data"


_default_data_dir = data_dir  # `load_dataset`'s parameter shadows the name


def builtin_names() -> tuple[str, ...]:
    """Names of the built-in datasets (empty if the generators cannot be imported)."""
    try:
        from ld.data.builtin import BUILTIN_NAMES
    except Exception:  # the generators are optional at import time
        return ()
    return tuple(BUILTIN_NAMES)


def _allowed() -> str:
    names = builtin_names()
    built = ", ".join(names) if names else "(none available)"
    return "allowed forms: " + "; ".join(SPEC_FORMS) + f". Built-in names: {built}"


def _load_builtin(name: str, ddir: Optional[Path]) -> EpisodeDataset:
    from ld.data.hdf5 import read_d4rl_hdf5

    name = name.strip()
    names = builtin_names()
    if names and name not in names:
        raise DataError(f"unknown built-in dataset {name!r}; built-in names: {', '.join(names)}")
    try:
        from ld.data import builtin
    except ImportError as e:
        raise DataError(f"built-in dataset generators cannot be imported ({e})") from None
    path = builtin.ensure(name, data_dir=Path(ddir) if ddir is not None else _default_data_dir())
    ds = read_d4rl_hdf5(path)
    ds.info.extra.setdefault("path", str(path))
    ds.info.source = f"builtin:{name}"
    return ds


def _split_task(spec: str) -> tuple[str, Optional[str]]:
    if "#" in spec:
        path, task = spec.rsplit("#", 1)
        return path, (task.strip() or None)
    return spec, None


def load_dataset(spec: str, data_dir: Optional[Path] = None) -> EpisodeDataset:
    """Load `spec` (see the module docstring) into an `EpisodeDataset` with its fingerprint set.

    `data_dir`: the built-in cache directory (default `ld.data.sources.data_dir()`); relative file paths
    that do not exist in the working directory are also looked up there.
    """
    from ld.data.hdf5 import read_d4rl_hdf5

    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty dataset spec; {_allowed()}")
    spec = spec.strip()
    if spec.startswith("minari:"):
        from ld.data.minari_source import load_minari

        ds = load_minari(spec[len("minari:"):])
    elif spec.startswith("builtin:"):
        ds = _load_builtin(spec[len("builtin:"):], data_dir)
    else:
        raw, task = _split_task(spec)
        path = Path(raw).expanduser()
        if not path.exists() and not path.is_absolute():
            alt = (Path(data_dir) if data_dir is not None else _default_data_dir()) / path
            if alt.exists():
                path = alt
        if path.exists():
            ds = read_d4rl_hdf5(path, task=task)
        elif path.suffix.lower() in (".hdf5", ".h5", ".hdf"):
            raise DataError(f"dataset file not found: {path}; {_allowed()}")
        else:
            raise DataError(f"unknown dataset spec {spec!r}: not minari:, builtin: or an existing file; {_allowed()}")
    ds.fingerprint = fingerprint(ds)
    return ds
