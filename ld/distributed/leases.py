"""Who trains a missing artifact when the store is an object store (no `flock`): leases from one Ray actor.

A sweep on object storage starts one named actor, `LeaseBoard`, before its trials. A trial that needs a
missing artifact asks it for the artifact's lease and trains only while it holds it; the others wait, then
find the published artifact (ArtifactStore.build looks again once it has the lease). A lease lasts `ttl`
seconds and the holder renews it from a background thread every ttl/4, so a holder that dies -- a SIGKILLed
worker, a lost node -- stops renewing and its lease lapses: the next asker gets it and trains. The board
keeps no state worth saving: if it is restarted, leases are forgotten, and at worst two trials train the
same artifact, whose manifest, uploaded last, makes either result whole.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
import uuid
from typing import Iterator, Optional

NAME, NAMESPACE = "ld-artifact-leases", "ld"


def default_ttl() -> float:
    return float(os.environ.get("LD_LEASE_TTL_S", "60"))


class _Board:
    """Plain Python (tested directly); `board()` runs it as a Ray actor."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float]] = {}  # key -> (owner, expires at, monotonic)
        self.granted: dict[str, int] = {}  # key -> times granted (a lapsed lease granted again counts twice)

    def acquire(self, key: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        cur = self.held.get(key)
        if cur is not None and cur[0] != owner and cur[1] > now:
            return False
        if cur is None or cur[0] != owner:
            self.granted[key] = self.granted.get(key, 0) + 1
        self.held[key] = (owner, now + ttl)
        return True

    def renew(self, key: str, owner: str, ttl: float) -> bool:
        cur = self.held.get(key)
        if cur is None or cur[0] != owner:
            return False
        self.held[key] = (owner, time.monotonic() + ttl)
        return True

    def release(self, key: str, owner: str) -> None:
        cur = self.held.get(key)
        if cur is not None and cur[0] == owner:
            del self.held[key]

    def stats(self) -> dict[str, int]:
        return dict(self.granted)


def board(create: bool = False):
    """The sweep's lease actor (created by the driver with `create=True`), or None outside Ray."""
    import ray

    if not ray.is_initialized():
        return None
    if create:
        actor = ray.remote(num_cpus=0, max_restarts=-1)(_Board)
        return actor.options(name=NAME, namespace=NAMESPACE, get_if_exists=True).remote()
    try:
        return ray.get_actor(NAME, namespace=NAMESPACE)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1)
def _warn_once() -> None:
    print(f"ld: no lease actor ({NAME!r}) in this Ray cluster: missing artifacts are trained without "
          "coordination (two trials may train the same one; either result is whole)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def lease(stage: str, key: str, *, ttl: Optional[float] = None, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the lease of artifact `stage/key` for the duration of the block (waits until it is free)."""
    import ray

    b = board()
    if b is None:  # not in a sweep on object storage: nothing to coordinate with
        if ray.is_initialized():
            _warn_once()
        yield
        return
    ttl = default_ttl() if ttl is None else ttl
    name, owner = f"{stage}/{key}", f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    while not ray.get(b.acquire.remote(name, owner, ttl)):
        time.sleep(poll_s)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl / 4):
            try:
                ray.get(b.renew.remote(name, owner, ttl))
            except Exception:  # the board restarted or Ray is going down: the lease lapses, which is safe
                pass

    beat = threading.Thread(target=renew, name=f"ld-lease-{stage}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        try:
            ray.get(b.release.remote(name, owner))
        except Exception:
            pass
