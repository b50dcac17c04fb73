"""Ray Train: a trial's training stages on a `TorchTrainer` worker group (DDP, sharded batches, checkpoints).

One worker group per trial: `train_trial_per_worker` runs every stage of the trial as phases of one training
function (vae -> prior -> support -> energy, then rank 0 evaluates), so the ~12 s worker-group start is
paid once per trial, not once per stage. Each stage's model is wrapped with `ray.train.torch.prepare_model`
(DDP; gloo on CPU, NCCL on GPU); each rank draws its own shard of every minibatch (generators seeded
seed + rank); rank 0 checkpoints every `checkpoint_every` steps through `ray.train.report(checkpoint=...)`
and the other ranks report the same metrics without one (report is a barrier); in a grid sweep those reports
reach the Tune trial too (TuneReportCallback), so a worker-group trial has a loss curve, one point per
checkpoint. After a worker dies, Ray
Train (`FailureConfig(max_failures)`) restarts the group; the function walks the stages again, reuses
published artifacts and resumes the interrupted stage from `ray.train.get_checkpoint()`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from ld.distributed.trial import TrialTask, execute_trial

# ray.train.report blocks ~2 s per call with the default health-check interval (RAY-NOTES.md).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")


class TorchComm:
    """The store's collectives over torch.distributed (a gloo side group when the main one is NCCL)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, obj: Any) -> Optional[list[Any]]:
        out = [None] * self.world_size if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def all_reduce_mean(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64)
        self.dist.all_reduce(t, group=self.group)
        return (t / self.world_size).tolist()


class RayTrainCheckpointer:
    """Mid-stage checkpoints through Ray Train: rank 0 reports a Checkpoint, the others report without."""

    collective = True  # every rank calls save() (ray.train.report is a barrier)

    def __init__(self, rank: int):
        import ray.train

        self.rank = rank
        self.latest: Optional[dict[str, Any]] = None
        ckpt = ray.train.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                f = Path(d) / "state.pt"
                if f.is_file():
                    self.latest = torch.load(f, map_location="cpu", weights_only=False)

    def save(self, stage: str, key: str, state: dict[str, Any]) -> None:
        import ray.train

        loss = float(state.get("loss", float("nan")))
        # the same keys as an in-process trial's loss reports (ld.distributed.trial.tune_loss_reporter), so that
        # Tune (through TuneReportCallback) draws this worker group's curve the same way, one point per checkpoint
        metrics = {"stage": stage, "stage_step": int(state["step"]), "train_loss": loss, f"loss/{stage}": loss}
        if self.rank != 0:
            ray.train.report(metrics)
            return
        tmp = Path(tempfile.mkdtemp(prefix="ld-ckpt-"))
        try:
            torch.save(state, tmp / "state.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self, stage: str, key: str) -> Optional[dict[str, Any]]:
        s = self.latest
        if s is not None and s.get("stage") == stage and s.get("key") == key:
            return s
        return None

    def clear(self, stage: str, key: str) -> None:
        if self.latest is not None and self.latest.get("key") == key:
            self.latest = None


def ddp_wrap(module: torch.nn.Module) -> torch.nn.Module:
    import ray.train.torch

    return ray.train.torch.prepare_model(module, move_to_device=False,
                                         parallel_strategy_kwargs={"find_unused_parameters": True})


def train_trial_per_worker(config: dict[str, Any]) -> None:
    """The Ray Train function of one trial: every stage as a phase, then rank 0 evaluates and writes."""
    import ray
    import ray.train
    import ray.train.torch

    task = TrialTask(**config["task"])
    ctx = ray.train.get_context()
    comm = TorchComm()
    use_gpu = task.placement.use_gpu
    device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
    execute_trial(task, comm=comm, wrap=ddp_wrap, checkpointer=RayTrainCheckpointer(ctx.get_world_rank()),
                  device=device, node_id=ray.get_runtime_context().get_node_id())


def run_with_ray_train(task: TrialTask, *, max_failures: int = 2, timeout_s: int = 6 * 3600) -> None:
    """Fit one trial on a TorchTrainer built from `cfg.train` (called inside the Tune trial function)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    where = task.placement  # worker count and per-worker CPU/GPU: ld.distributed.resources
    name = f"{task.suite}-{task.trial_id}-seed{task.seed}"
    trainer = TorchTrainer(
        train_trial_per_worker,
        train_loop_config={"task": task.__dict__},
        # A rank waits on a broadcast while another trial trains a shared stage it needs: allow hours.
        torch_config=TorchConfig(backend="nccl" if where.use_gpu else "gloo", timeout_s=timeout_s),
        scaling_config=where.scaling_config(),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(task.layout.train),
            storage_filesystem=task.layout.files.fs,  # None: a local path; else the object store's pyarrow fs
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            # every report of the group (one per checkpoint, made by every rank as Train V2 requires) also
            # becomes an intermediate result of the Tune trial: a loss curve per stage in Tune and TensorBoard
            callbacks=[TuneReportCallback()] if task.report_losses else [],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    trainer.fit()
