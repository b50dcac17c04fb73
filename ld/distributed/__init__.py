"""Ray layer: Tune sweeps of trials, Ray Train worker groups for training stages, shared artifact store, Parquet sink.

Nothing here is needed by `latentdiffuser run`; Ray is imported only when a sweep runs.

    from ld.distributed import run_sweep, read_results, read_status
    summary = run_sweep("sweeps/smoke.yaml", storage="runs/sweeps", scale="smoke")
    df = read_results("runs/sweeps", "smoke")      # every episode row of the suite
"""

from __future__ import annotations

__all__ = ["run_sweep", "read_results", "read_status"]


def __getattr__(name: str):
    if name in ("read_results", "read_status"):
        from ld.distributed import sink

        return getattr(sink, name)
    if name == "run_sweep":
        from ld.distributed.sweep import run_sweep

        return run_sweep
    raise AttributeError(name)
