"""D4RL-layout HDF5 files: an atomic writer and a validating reader.

Layout (what D4RL's `get_dataset()` files contain, and what the built-in generators write):

    observations [N, obs_dim] float32
    actions      [N, act_dim] float32
    rewards      [N]          float32
    terminals    [N]          bool
    timeouts     [N]          bool
    infos/<key>  [N, ...]     optional, any numeric dtype
    attrs["ld_info"]          optional JSON of `DatasetInfo.to_dict()`

Episode splitting: an episode ends at every index i where terminals[i] or timeouts[i] is true
(terminals[i] -> `Episode.terminal=True`); the transitions after the last end form a final non-terminal
episode if non-empty. Zero-length episodes cannot occur by construction (each end closes at least one
transition).

Every problem is reported as one `DataError` naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ld.data.types import DataError, DatasetInfo, Episode, EpisodeDataset

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
_NDIM = {"observations": 2, "actions": 2, "rewards": 1, "terminals": 1, "timeouts": 1}
INFO_ATTR = "ld_info"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def _as_array(name: str, x: Any, dtype: Any, ndim: int, where: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise DataError(f"{where}: key '{name}' must have {ndim} dimension(s), got shape {a.shape}")
    return a.astype(dtype, copy=False)


def write_d4rl_hdf5(
    path: str | os.PathLike,
    *,
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    info: DatasetInfo,
    infos: Optional[Mapping[str, np.ndarray]] = None,
) -> Path:
    """Write a D4RL-layout HDF5 file atomically (temp file in the same directory, then `os.replace`).

    The arrays are validated exactly as `read_d4rl_hdf5` validates them, so a file this writes always
    reads back. On any error the temp file is removed and an existing `path` is left untouched.
    """
    import h5py

    path = Path(path)
    where = f"writing {path}"
    arrays = {
        "observations": _as_array("observations", observations, np.float32, 2, where),
        "actions": _as_array("actions", actions, np.float32, 2, where),
        "rewards": _as_array("rewards", rewards, np.float32, 1, where),
        "terminals": _as_array("terminals", terminals, bool, 1, where),
        "timeouts": _as_array("timeouts", timeouts, bool, 1, where),
    }
    extra = {k: np.asarray(v) for k, v in (infos or {}).items()}
    _validate_arrays(arrays, extra, where)
    meta = json.dumps(info.to_dict(), default=_json_default, sort_keys=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for k in REQUIRED_KEYS:
                f.create_dataset(k, data=arrays[k])
            if extra:
                g = f.create_group("infos")
                for k, v in extra.items():
                    g.create_dataset(k, data=v)
            f.attrs[INFO_ATTR] = meta
        # mkstemp creates 0600; a dataset on shared storage must be readable like any file the user writes
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _validate_arrays(arrays: Mapping[str, np.ndarray], infos: Mapping[str, np.ndarray], where: str) -> None:
    for k in REQUIRED_KEYS:
        a = arrays[k]
        if a.ndim != _NDIM[k]:
            raise DataError(f"{where}: key '{k}' must have {_NDIM[k]} dimension(s), got shape {a.shape}")
    n = arrays["observations"].shape[0]
    for k in REQUIRED_KEYS[1:]:
        m = arrays[k].shape[0]
        if m != n:
            raise DataError(
                f"{where}: mismatched lengths: 'observations' has {n} rows but '{k}' has {m}"
            )
    for k, v in infos.items():
        if v.ndim == 0 or v.shape[0] != n:
            raise DataError(
                f"{where}: mismatched lengths: 'observations' has {n} rows but 'infos/{k}' has shape {v.shape}"
            )
    if n == 0:
        raise DataError(f"{where}: empty dataset (key 'observations' has 0 rows)")
    for k in ("observations", "actions"):
        if arrays[k].shape[1] == 0:
            raise DataError(f"{where}: key '{k}' has shape {arrays[k].shape}: zero-width feature dimension")
    for k in ("observations", "actions", "rewards"):
        a = arrays[k]
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"{where}: key '{k}' must be numeric, got dtype {a.dtype}")
        finite = np.isfinite(a)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            row = int(bad[0])
            val = a[tuple(bad)]
            kind = "NaN" if np.isnan(val) else "inf"
            raise DataError(f"{where}: key '{k}' contains {kind} (first bad row index {row})")


def split_episodes(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
) -> list[Episode]:
    """Split flat D4RL arrays into episodes (see the module docstring for the rule)."""
    terminals = np.asarray(terminals, dtype=bool)
    timeouts = np.asarray(timeouts, dtype=bool)
    ends = np.flatnonzero(terminals | timeouts)
    episodes: list[Episode] = []
    start = 0
    for e in ends:
        stop = int(e) + 1
        if stop > start:
            episodes.append(
                Episode(
                    observations=np.ascontiguousarray(observations[start:stop], dtype=np.float32),
                    actions=np.ascontiguousarray(actions[start:stop], dtype=np.float32),
                    rewards=np.ascontiguousarray(rewards[start:stop], dtype=np.float32),
                    terminal=bool(terminals[e]),
                )
            )
        start = stop
    n = len(rewards)
    if start < n:
        episodes.append(
            Episode(
                observations=np.ascontiguousarray(observations[start:], dtype=np.float32),
                actions=np.ascontiguousarray(actions[start:], dtype=np.float32),
                rewards=np.ascontiguousarray(rewards[start:], dtype=np.float32),
                terminal=False,
            )
        )
    return episodes


def read_info_attr(path: str | os.PathLike) -> Optional[DatasetInfo]:
    """The `ld_info` attribute of an HDF5 file as a DatasetInfo, or None if absent."""
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get(INFO_ATTR)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode()
    return DatasetInfo.from_dict(json.loads(raw))


def read_d4rl_hdf5(path: str | os.PathLike, task: Optional[str] = None) -> EpisodeDataset:
    """Read and validate a D4RL-layout HDF5 file into an `EpisodeDataset`.

    Metadata: the file's `ld_info` attribute if present; otherwise, if `task` (or the file stem) is a known
    D4RL task, its evaluation env and reference scores from `ld.data.d4rl_tasks`; otherwise a bare
    `DatasetInfo` with `env_id=None` (loads, but no evaluation env and unnormalized scores). An explicit
    `task` fills fields that `ld_info` leaves empty. `fingerprint` is left empty (`load_dataset` sets it).
    """
    import h5py

    from ld.data import d4rl_tasks

    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset file not found: {path}")
    if path.is_dir():
        raise DataError(f"dataset path is a directory, not an HDF5 file: {path}")
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # h5py raises OSError with varied messages
        raise DataError(f"{path}: not an HDF5 file or corrupt ({type(e).__name__}: {e})") from None
    arrays: dict[str, np.ndarray] = {}
    try:
        with f:
            found = sorted(f.keys())
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                hints = []
                for k in missing:
                    close = difflib.get_close_matches(k, [x for x in found if x not in REQUIRED_KEYS], n=1)
                    if close:
                        hints.append(f"'{close[0]}' should be named '{k}'?")
                raise DataError(
                    f"{path}: missing key(s) {missing}; a D4RL file needs keys {list(REQUIRED_KEYS)}, "
                    f"found {found}" + (f" ({' '.join(hints)})" if hints else "")
                )
            for k in REQUIRED_KEYS:
                obj = f[k]
                if not isinstance(obj, h5py.Dataset):
                    raise DataError(f"{path}: key '{k}' is a group, expected an array dataset")
                if obj.ndim != _NDIM[k]:
                    raise DataError(
                        f"{path}: key '{k}' must have {_NDIM[k]} dimension(s), got shape {obj.shape}"
                    )
                try:
                    arrays[k] = obj[()]
                except Exception as e:
                    raise DataError(f"{path}: key '{k}' cannot be read ({type(e).__name__}: {e})") from None
            raw = f.attrs.get(INFO_ATTR)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: corrupt HDF5 file ({type(e).__name__}: {e})") from None

    where = str(path)
    for k in ("observations", "actions", "rewards"):
        if not np.issubdtype(arrays[k].dtype, np.number):
            raise DataError(f"{where}: key '{k}' must be numeric, got dtype {arrays[k].dtype}")
    _validate_arrays(arrays, {}, where)

    info: Optional[DatasetInfo] = None
    if raw is not None:
        try:
            info = DatasetInfo.from_dict(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
        except Exception as e:
            raise DataError(f"{path}: attribute '{INFO_ATTR}' is not valid DatasetInfo JSON ({e})") from None
    name = task or (info.name if info else None) or path.stem
    task_info = d4rl_tasks.task_info(task) if task else None
    if task_info is None and info is None:
        task_info = d4rl_tasks.task_info(path.stem)
    if info is None:
        info = task_info or DatasetInfo(name=name, source=str(path))
        info.source = str(path)
    elif task_info is not None:
        for fld in ("env_id", "max_episode_steps", "ref_min_score", "ref_max_score", "success_key"):
            if getattr(info, fld) is None:
                setattr(info, fld, getattr(task_info, fld))
        if not info.env_kwargs:
            info.env_kwargs = dict(task_info.env_kwargs)
    if task:
        info.name = task

    episodes = split_episodes(
        arrays["observations"], arrays["actions"], arrays["rewards"], arrays["terminals"], arrays["timeouts"]
    )
    return EpisodeDataset(episodes=episodes, info=info)
