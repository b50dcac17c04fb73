"""Content fingerprint of an `EpisodeDataset`: sha256 over every episode's arrays (bytes, shape, dtype)
and terminal flag, in episode order, observations/actions/rewards in that fixed order.

Metadata (`DatasetInfo`) is deliberately not hashed: the fingerprint identifies the *data*, so the same
arrays loaded from a D4RL file or a Minari dataset hash the same. Arrays are hashed as little-endian
C-contiguous float32 (the dtype every source yields), so the value is stable across loads and platforms
and changes if any value, shape or episode boundary changes.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ld.data.types import EpisodeDataset

FINGERPRINT_CHARS = 16


def _feed(h: "hashlib._Hash", a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())


def fingerprint(ds: EpisodeDataset, n_chars: int = FINGERPRINT_CHARS) -> str:
    """Hex content hash (first `n_chars` of sha256) of the dataset's arrays."""
    h = hashlib.sha256(b"ld-dataset-v1|")
    h.update(f"{len(ds.episodes)}|".encode())
    for ep in ds.episodes:
        _feed(h, np.asarray(ep.observations, dtype=np.float32))
        _feed(h, np.asarray(ep.actions, dtype=np.float32))
        _feed(h, np.asarray(ep.rewards, dtype=np.float32))
        h.update(b"T" if ep.terminal else b"F")
    return h.hexdigest()[:n_chars]
