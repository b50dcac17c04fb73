"""One sweep trial (one config x one seed) as plain phases, shared by the in-process path and Ray Train workers.

`execute_trial(task, ...)` calls `ld.pipeline.run_trial` -- the same function as `latentdiffuser run` -- with the
sweep's bookkeeping around it: a `SweepStore` (mid-stage checkpoints, rank coordination), the sweep columns, the
trial's Parquet file and a run summary (stage runs trained / reused, time inside training loops, evaluation time)
that the Tune trial turns into its status row and metrics. On a worker group every rank runs the training phases;
rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ld.config import Config
from ld.distributed import sink
from ld.distributed.paths import StorageLayout
from ld.distributed.store import Checkpointer, Comm, SweepStore
from ld.stages.artifact import ObjectArtifacts
from ld.storage import Files


@dataclass
class TrialTask:
    """Everything a process needs to run one trial (plain data: it travels to Ray workers)."""

    config: dict[str, Any]
    suite: str
    storage: str
    axis: str = ""
    value: Any = ""
    checkpoint_every: int = 0
    kill_at: Optional[str] = None  # fault injection for tests: "stage:step[:rank]" -> SIGKILL once
    progress: bool = False
    cluster_gpus: float = 0.0  # GPUs of the cluster when the sweep started: resolves train.use_gpu = "auto"
    # report training losses to the Tune trial (in-process: at every logged point; worker groups: per checkpoint)
    report_losses: bool = False

    @property
    def cfg(self) -> Config:
        return Config.model_validate(self.config)

    @property
    def trial_id(self) -> str:
        from ld.pipeline import trial_id

        return trial_id(self.cfg)

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def placement(self):
        from ld.distributed.resources import placement

        return placement(self.cfg.train, self.cluster_gpus)

    @property
    def distributed(self) -> bool:
        """A Ray Train worker group (several workers, or GPUs) rather than the in-process path."""
        return self.placement.worker_group

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout.of(self.storage)

    @property
    def artifacts(self) -> Path:
        return self.layout.artifacts

    @property
    def result_file(self) -> Path:
        return self.layout.trial_file(self.suite, self.trial_id, self.seed)

    @property
    def summary_file(self) -> Path:
        return self.layout.summary_file(self.suite, self.trial_id, self.seed)


@dataclass
class TrialSummary:
    trial_id: str
    seed: int
    rows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)  # StageRun records of the rank-0 process
    loop_s: float = 0.0
    data_s: float = 0.0
    eval_s: float = 0.0
    phases_s: float = 0.0  # wall time of execute_trial itself
    world_size: int = 1
    node_id: str = ""

    def save(self, path: Path, files: Optional[Files] = None) -> None:
        (files or Files()).write_text(path, json.dumps(asdict(self), default=str))

    @classmethod
    def load(cls, path: Path, files: Optional[Files] = None) -> "TrialSummary":
        return cls(**json.loads((files or Files()).read_text(path)))


def trial_metrics(df) -> dict[str, float]:
    """Tune metrics of a trial: the guided planner's mean score (the unguided prior's when beta = 0), with or
    without selection among candidate plans (`latentdiffuser+select`, `prior+select`); never BC's."""
    main = df
    for variant in ("latentdiffuser", "latentdiffuser+select", "prior", "prior+select"):
        if (df["variant"] == variant).any():
            main = df[df["variant"] == variant]
            break
    out = {"normalized_score": float(main["normalized_score"].mean()),
           "episode_return": float(main["episode_return"].mean()),
           "success": float(main["success"].mean()), "rows": float(len(df))}
    # energy health, so a degenerate target or a diverged E-MSE shows in the status row too
    for stage in ("energy", "raw_energy"):
        for name in ("target_ess_mean", "nonfinite_step"):
            col = f"stage.{stage}.{name}"
            if col in df:
                out[f"energy_{name}"] = float(df[col].iloc[0])
    return out


def fault_injector(task: TrialTask, rank: int) -> Optional[Callable[[str, int], None]]:
    """`kill_at="prior:60:1"`: rank 1 SIGKILLs itself at step 60 of the prior, once per storage root."""
    if not task.kill_at:
        return None
    parts = task.kill_at.split(":")
    stage, at, who = parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
    files = task.layout.files
    marker = task.layout.faults / f"{task.trial_id}-{task.kill_at.replace(':', '_')}"

    def on_step(name: str, step: int) -> None:
        if name == stage and step == at and rank == who and not files.is_file(marker):
            files.write_text(marker, f"killed pid {os.getpid()} at {name} step {step}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    return on_step


def tune_loss_reporter() -> Callable[[str, int, float, dict[str, float]], None]:
    """Each logged training loss of a stage as an intermediate Tune result (`loss/<stage>`, with the stage's
    own step), so TensorBoard and Tune's progress files hold a loss curve per trial and stage. The trial's
    final report (scores, timings) follows as the last result."""
    from ray import tune

    def report(stage: str, step: int, loss: float, terms: dict[str, float]) -> None:
        # the same keys in every result (Tune's progress.csv takes its columns from the first one), plus a
        # per-stage key so that TensorBoard draws one curve per stage
        tune.report({"stage": stage, "stage_step": step, "train_loss": loss, f"loss/{stage}": loss,
                     **{f"loss/{stage}.{k}": v for k, v in terms.items()}})

    return report


def execute_trial(task: TrialTask, *, comm: Optional[Comm] = None,
                  wrap: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None,
                  checkpointer: Optional[Checkpointer] = None,
                  device: Optional[torch.device] = None, node_id: str = "") -> Optional[TrialSummary]:
    """`ld.pipeline.run_trial` inside the sweep: with a `SweepStore`, and, on rank 0, the trial's rows and run
    summary written where the sweep looks for them. Returns the summary (None on the other ranks)."""
    from ld.pipeline import run_trial

    objects = object_artifacts(task.layout, node_id)
    t0 = time.perf_counter()
    rank = comm.rank if comm is not None else 0
    store = SweepStore(task.artifacts if objects is None else objects.cache, objects=objects,
                       checkpointer=checkpointer, checkpoint_every=task.checkpoint_every,
                       comm=comm, wrap=wrap, on_step=fault_injector(task, rank),
                       on_log=tune_loss_reporter() if task.report_losses and comm is None else None)
    res = run_trial(task.cfg, store.root, suite=task.suite, progress=task.progress, store=store,
                    device=device, evaluate=rank == 0)
    if rank != 0:
        return None
    frame = sink.add_sweep_columns(res.frame, task.suite, task.axis, task.value)
    sink.write_trial_rows(frame, task.storage, task.suite, task.trial_id, task.seed)
    summary = TrialSummary(
        trial_id=task.trial_id, seed=task.seed, rows=len(frame), metrics=trial_metrics(frame),
        stages=[asdict(r) for r in res.records], loop_s=sum(r.loop_s for r in res.records),
        data_s=res.timings["data_s"], eval_s=sum(v for k, v in res.timings.items() if k.startswith("eval_")),
        phases_s=time.perf_counter() - t0, world_size=comm.world_size if comm is not None else 1,
        node_id=node_id)
    summary.save(task.summary_file, task.layout.files)
    return summary


def object_artifacts(layout: StorageLayout, node_id: str = "") -> Optional[ObjectArtifacts]:
    """On an object store: its artifacts through a cache local to this node (LD_OBJECT_CACHE, default the temp
    dir), with leases from the sweep's lease actor. None for a local root (the artifacts are read in place)."""
    if not layout.remote:
        return None
    from ld.distributed.leases import lease

    base = Path(os.environ.get("LD_OBJECT_CACHE") or Path(tempfile.gettempdir()) / "ld-object-cache")
    root = hashlib.sha256(layout.uri.encode()).hexdigest()[:12]
    return ObjectArtifacts(layout.files, layout.artifacts, base / root / (node_id[:12] or "local"), lease=lease)
