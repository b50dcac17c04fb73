"""`minari:<dataset id>` -- a Minari dataset as an `EpisodeDataset`.

- Local datasets load offline (`minari.load_dataset`, `iterate_episodes`), from `$MINARI_DATASETS_PATH`
  or `~/.minari/datasets/<namespace>/<env>/<name>-vN/`.
- Dict observation spaces (mazes): the state is the `observation` key; a constant `desired_goal` is kept in
  `DatasetInfo.extra["desired_goal"]` (a varying one in `extra["desired_goal_varies"] = True`).
- Minari episodes store n+1 observations for n steps; the last (final next-state) is dropped.
  `terminations[-1]` -> `Episode.terminal`.
- Env id / kwargs / max_episode_steps from the dataset's eval env spec (else its env spec), reference
  scores from the dataset metadata (`ref_min_score` / `ref_max_score`) if present.
- Not local: Minari's download is tried only when the network looks reachable (a 2 s TCP probe of the
  remote host) and `LD_OFFLINE` is not set; otherwise one `DataError` says where to put the files.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any, Optional

import numpy as np

from ld.data.types import DataError, DatasetInfo, Episode, EpisodeDataset

_REMOTE_HOSTS = {"hf": "huggingface.co", "gcp": "storage.googleapis.com"}


def _offline() -> bool:
    return os.environ.get("LD_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _network_reachable(timeout: float = 2.0) -> bool:
    remote = os.environ.get("MINARI_REMOTE", "hf://farama-minari")
    host = _REMOTE_HOSTS.get(remote.split("://", 1)[0], "huggingface.co")
    result: list[bool] = []

    def probe() -> None:  # in a thread so a hanging DNS lookup cannot block past `timeout`
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _not_found(dataset_id: str, path: Any, why: str) -> DataError:
    return DataError(
        f"Minari dataset '{dataset_id}' is not available locally ({why}). Put its files at {path} "
        f"(i.e. $MINARI_DATASETS_PATH/<namespace>/<env>/<name>-vN, default ~/.minari/datasets/...), "
        f"or point MINARI_DATASETS_PATH at the directory that holds them. "
        f"List local ids with `minari list local` or `python -c \"import minari; "
        f"print(list(minari.list_local_datasets()))\"`."
    )


def _load_minari(dataset_id: str):
    try:
        import minari
        from minari.storage.datasets_root_dir import get_dataset_path
    except ImportError as e:  # pragma: no cover - minari is a dependency
        raise DataError(f"minari is not installed ({e}); `pip install 'minari[create]'`") from None

    path = get_dataset_path(dataset_id)
    if (path / "data").exists():
        try:
            return minari.load_dataset(dataset_id)
        except Exception as e:
            raise DataError(
                f"Minari dataset '{dataset_id}' at {path} cannot be read ({type(e).__name__}: {e})"
            ) from None
    if _offline():
        raise _not_found(dataset_id, path, "LD_OFFLINE is set, so no download was tried")
    if not _network_reachable():
        raise _not_found(dataset_id, path, "the Minari remote is unreachable, so no download was tried")
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as e:
        raise _not_found(dataset_id, path, f"download failed: {type(e).__name__}: {e}") from None


def _jsonable(x: Any) -> Any:
    try:
        return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    except (TypeError, ValueError):
        return str(x)


def load_minari(dataset_id: str) -> EpisodeDataset:
    """Load a (local, or downloadable when online) Minari dataset into an `EpisodeDataset`."""
    dataset_id = dataset_id.strip()
    if not dataset_id:
        raise DataError("empty Minari dataset id: use minari:<namespace>/<env>/<name>-vN")
    mds = _load_minari(dataset_id)

    episodes: list[Episode] = []
    goals: list[np.ndarray] = []
    obs_key: Optional[str] = None
    for ep in mds.iterate_episodes():
        obs = ep.observations
        if isinstance(obs, dict):
            if "observation" not in obs:
                raise DataError(
                    f"Minari dataset '{dataset_id}': dict observations without an 'observation' key "
                    f"(keys {sorted(obs)})"
                )
            obs_key = "observation"
            if "desired_goal" in obs:
                goals.append(np.asarray(obs["desired_goal"])[:-1])
            obs = obs["observation"]
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim == 1:
            obs = obs[:, None]
        if obs.ndim != 2:
            raise DataError(f"Minari dataset '{dataset_id}': observations of shape {obs.shape} are not flat vectors")
        acts = np.asarray(ep.actions, dtype=np.float32)
        if acts.ndim == 1:
            acts = acts[:, None]
        rews = np.asarray(ep.rewards, dtype=np.float32).reshape(-1)
        n = rews.shape[0]
        if n == 0:
            continue
        if obs.shape[0] != n + 1 or acts.shape[0] != n:
            raise DataError(
                f"Minari dataset '{dataset_id}', episode {ep.id}: expected {n + 1} observations and {n} actions "
                f"for {n} rewards, got {obs.shape[0]} and {acts.shape[0]}"
            )
        for key, a in (("observations", obs), ("actions", acts), ("rewards", rews)):
            if not np.isfinite(a).all():
                bad = int(np.argwhere(~np.isfinite(a))[0][0])
                raise DataError(f"Minari dataset '{dataset_id}', episode {ep.id}: '{key}' has NaN/inf at step {bad}")
        episodes.append(Episode(observations=obs[:-1].copy(), actions=acts, rewards=rews,
                                terminal=bool(np.asarray(ep.terminations)[-1])))
    if not episodes:
        raise DataError(f"Minari dataset '{dataset_id}' is empty (no non-empty episodes)")

    meta = mds.storage.metadata
    spec = getattr(mds, "_eval_env_spec", None) or mds.env_spec
    extra: dict[str, Any] = {"minari_id": dataset_id}
    if obs_key:
        extra["observation_key"] = obs_key
    if goals:
        g = np.concatenate(goals)
        if np.allclose(g, g[0]):
            extra["desired_goal"] = [float(v) for v in g[0]]
        else:
            extra["desired_goal_varies"] = True
    for k in ("algorithm_name", "description"):
        if meta.get(k):
            extra[k] = str(meta[k])

    def _f(k: str) -> Optional[float]:
        v = meta.get(k)
        try:
            return None if v is None else float(v)
        except (TypeError, ValueError):
            return None

    info = DatasetInfo(
        name=dataset_id,
        source=f"minari:{dataset_id}",
        env_id=spec.id if spec is not None else None,
        env_kwargs=_jsonable(dict(spec.kwargs)) if spec is not None and spec.kwargs else {},
        max_episode_steps=spec.max_episode_steps if spec is not None else None,
        ref_min_score=_f("ref_min_score"),
        ref_max_score=_f("ref_max_score"),
        success_key="success" if obs_key else None,
        behavior_policy=str(meta["algorithm_name"]) if meta.get("algorithm_name") else None,
        extra=extra,
    )
    return EpisodeDataset(episodes=episodes, info=info)
