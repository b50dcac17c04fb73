"""What one sweep trial asks Ray for, as pure functions of its `train` config and the cluster's resources.

Kept apart from the code that starts trials so the placement can be checked on a CPU-only machine: a GPU
cluster's plan (a Ray Train worker group of `num_workers` ranks with one GPU each, the Tune trial itself
holding almost nothing) is built and inspected without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

# The Tune trial of a worker-group trial only waits on its TorchTrainer: it holds a sliver of a CPU so that a
# 2-CPU machine can still run a 2-worker group (each worker takes the remaining 0.99).
DRIVER_CPU = 0.01
WORKER_CPU = 0.99


def resolve_use_gpu(setting: Union[bool, str], cluster_gpus: float) -> bool:
    """`train.use_gpu`: true, false, or "auto" = use GPUs when the cluster has any when the sweep starts.

    (On an autoscaling cluster whose GPU workers start at zero, "auto" sees none: set true there, or keep one GPU
    worker up -- cluster.yaml does.)"""
    if setting == "auto":
        return cluster_gpus > 0
    return bool(setting)


@dataclass(frozen=True)
class TrialPlacement:
    use_gpu: bool
    num_workers: int
    trial_resources: dict[str, float]  # the Tune trial's own bundle
    worker_resources: Optional[dict[str, float]]  # per Ray Train worker; None = the trial runs in-process

    @property
    def worker_group(self) -> bool:
        return self.worker_resources is not None

    def scaling_config(self):
        """The ray.train.ScalingConfig of the trial's worker group."""
        import ray.train

        assert self.worker_group, "an in-process trial has no worker group"
        return ray.train.ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu,
                                       resources_per_worker=dict(self.worker_resources))

    def max_concurrent(self, cluster: dict[str, float]) -> int:
        """Trials that fit the cluster at once: worker groups by GPUs (or CPUs), in-process trials by CPUs."""
        if not self.worker_group:
            return max(1, int(cluster.get("CPU", 1) // self.trial_resources.get("CPU", 1)))
        pool = cluster.get("GPU", 0) if self.use_gpu else cluster.get("CPU", 1)
        return max(1, int(pool // self.num_workers))


def placement(train: Any, cluster_gpus: float) -> TrialPlacement:
    """The placement of a trial whose config has `train` (ld.config.TrainConfig) on a cluster with these GPUs.

    A trial runs in-process on one CPU unless it asks for several workers or for GPUs; then it is a worker
    group, one rank per worker, each with one GPU when GPUs are used."""
    use_gpu = resolve_use_gpu(train.use_gpu, cluster_gpus)
    if train.num_workers <= 1 and not use_gpu:
        return TrialPlacement(False, 1, {"CPU": 1.0}, None)
    per = {"CPU": WORKER_CPU, **({"GPU": 1.0} if use_gpu else {})}
    return TrialPlacement(use_gpu, int(train.num_workers), {"CPU": DRIVER_CPU}, per)
