"""The artifact store as trials and Ray Train workers see it: mid-stage checkpoints and rank coordination.

`SweepStore` is an `ArtifactStore` (same layout, same per-key fcntl lock -- a lease on an object store --
same atomic publish) that additionally installs `TrainHooks` around every stage it builds, so the stage's
`train_loop`

- checkpoints every `checkpoint_every` steps and resumes from the last checkpoint after a crash. Where
  the checkpoint lives is a `Checkpointer`: `DirCheckpointer` writes `<root>/.checkpoints/<stage>-<key>/`
  (in-process trials, in the bucket on an object store; a retried Tune trial finds it there), the Ray Train
  one (`ld.distributed.train`)
  goes through `ray.train.report(checkpoint=...)` / `ray.train.get_checkpoint()`;
- under a worker group, runs data parallel (`Comm`): rank 0 alone takes the lock and publishes; it
  broadcasts whether the stage is trained or reused, every rank then runs the same `produce` (so DDP's
  collectives line up) into a scratch directory that is thrown away, and a final broadcast tells the other
  ranks the artifact is published. Stages that do not train (support sampling) run on rank 0 only.

The checkpoint is deleted once the artifact is published.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import torch

from ld.stages.artifact import Artifact, ArtifactStore, ArtifactWriter, ObjectArtifacts
from ld.stages.common import StageRun
from ld.stages.training import TrainHooks, training_hooks
from ld.storage import Files


class Comm(Protocol):
    """The collectives a worker group needs (implemented over torch.distributed in ld.distributed.train)."""

    rank: int
    world_size: int

    def broadcast(self, obj: Any) -> Any: ...  # rank 0's obj, on every rank

    def gather(self, obj: Any) -> Optional[list[Any]]: ...  # every rank's obj on rank 0, None elsewhere

    def all_reduce_mean(self, values: list[float]) -> list[float]: ...


class Checkpointer(Protocol):
    def save(self, stage: str, key: str, state: dict[str, Any]) -> None: ...

    def load(self, stage: str, key: str) -> Optional[dict[str, Any]]: ...

    def clear(self, stage: str, key: str) -> None: ...


class DirCheckpointer:
    """Mid-stage checkpoints as `<root>/.checkpoints/<stage>-<key>/state.pt`, each written whole (locally a
    temp file renamed into place; on an object store one upload, `files`: an `ld.storage.Files`)."""

    def __init__(self, root: Path, files: Optional[Files] = None):
        self.root = (Path(root) if isinstance(root, str) else root) / ".checkpoints"
        self.files = files if files is not None else Files()

    def _file(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key}" / "state.pt"

    def save(self, stage: str, key: str, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        self.files.write_bytes(self._file(stage, key), buf.getvalue())

    def load(self, stage: str, key: str) -> Optional[dict[str, Any]]:
        f = self._file(stage, key)
        if not self.files.is_file(f):
            return None
        try:
            return torch.load(io.BytesIO(self.files.read_bytes(f)), map_location="cpu", weights_only=False)
        except Exception:  # a checkpoint from a crash mid-write of an older format: start over
            return None

    def clear(self, stage: str, key: str) -> None:
        self.files.delete_dir(self._file(stage, key).parent)


class SweepStore(ArtifactStore):
    def __init__(self, root: str | Path, *, checkpointer: Optional[Checkpointer] = None,
                 checkpoint_every: int = 0, comm: Optional[Comm] = None,
                 wrap: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None,
                 on_step: Optional[Callable[[str, int], None]] = None,
                 on_log: Optional[Callable[[str, int, float, dict[str, float]], None]] = None,
                 objects: Optional[ObjectArtifacts] = None):
        super().__init__(root, objects=objects)
        if checkpointer is None:  # next to the artifacts, where a retried trial (on any node) finds it
            checkpointer = (DirCheckpointer(self.root) if objects is None
                            else DirCheckpointer(objects.root, objects.files))
        self.checkpointer = checkpointer
        self.checkpoint_every = checkpoint_every
        self.comm = comm
        self.wrap = wrap
        self.on_step = on_step
        self.on_log = on_log

    @property
    def rank(self) -> int:
        return self.comm.rank if self.comm is not None else 0

    @property
    def world_size(self) -> int:
        return self.comm.world_size if self.comm is not None else 1

    def _hooks(self, stage: str, key: str) -> TrainHooks:
        comm = self.comm
        hooks = TrainHooks(rank=self.rank, world_size=self.world_size, wrap=self.wrap,
                           checkpoint_every=self.checkpoint_every)
        if comm is not None and comm.world_size > 1:
            hooks.all_reduce_mean = comm.all_reduce_mean
        if self.on_step is not None:
            hooks.on_step = lambda step: self.on_step(stage, step)
        if self.on_log is not None:
            hooks.on_log = lambda step, loss, terms: self.on_log(stage, step, loss, terms)

        def save(state: dict[str, Any]) -> None:
            if comm is not None and comm.world_size > 1:  # every rank's generator states, in one file
                parts = comm.gather({"rng": state["rng"], "gen": state["gen"]})
                if parts is not None:
                    state = dict(state, rng={k: v for p in parts for k, v in p["rng"].items()},
                                 gen={k: v for p in parts for k, v in p["gen"].items()})
            state = dict(state, stage=stage, key=key, world_size=self.world_size)
            if self.rank == 0 or _collective(self.checkpointer):
                self.checkpointer.save(stage, key, state)

        def restore() -> Optional[dict[str, Any]]:
            state = self.checkpointer.load(stage, key)
            if state is None or state.get("world_size", 1) != self.world_size:
                return None
            return state

        hooks.save, hooks.restore = save, restore
        return hooks

    def _produce_with_hooks(self, stage: str, key: str, produce: Callable[[ArtifactWriter], None],
                            writer: ArtifactWriter, run: StageRun) -> None:
        hooks = self._hooks(stage, key)
        with training_hooks(hooks):
            produce(writer)
        run.loop_s += hooks.loop_seconds
        run.resumed_from += hooks.resumed_from

    def build(self, stage: str, key: str, manifest: dict[str, Any],
              produce: Callable[[ArtifactWriter], None], *, run: Optional[StageRun] = None,
              trains: bool = True) -> tuple[Artifact, bool]:
        """`run` is the pipeline's record of this stage (the time inside training loops and any resumed steps
        are added to it); `trains` is the stage's declaration (ld.stages.dag): a stage that only samples runs
        on rank 0 alone under a worker group."""
        run = run if run is not None else StageRun(stage, key)  # build_stage times the whole build
        if self.world_size == 1:
            def wrapped(writer: ArtifactWriter) -> None:
                run.trained = True
                self._produce_with_hooks(stage, key, produce, writer, run)

            art, reused = super().build(stage, key, manifest, wrapped)
        else:
            art, reused = self._build_collective(stage, key, manifest, produce, run, trains)
        if not reused and self.rank == 0:
            self.checkpointer.clear(stage, key)
        return art, reused

    def _build_collective(self, stage, key, manifest, produce, run, everyone: bool) -> tuple[Artifact, bool]:
        comm = self.comm
        assert comm is not None
        if comm.rank == 0:
            announced = []

            def wrapped(writer: ArtifactWriter) -> None:
                comm.broadcast("train")
                announced.append(True)
                run.trained = True
                self._produce_with_hooks(stage, key, produce, writer, run)

            # If produce raises, the worker group fails as a whole and Ray Train restarts it.
            art, reused = super().build(stage, key, manifest, wrapped)
            if not announced:
                comm.broadcast("reuse")
            else:
                comm.broadcast("published")
            return art, reused
        decision = comm.broadcast(None)
        if decision == "train":
            run.trained = True
            if everyone:
                scratch = Path(tempfile.mkdtemp(prefix=f"ld-rank{comm.rank}-{stage}-"))
                try:
                    self._produce_with_hooks(stage, key, produce, ArtifactWriter(scratch), run)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            comm.broadcast(None)  # wait until rank 0 has published
        art = self.get(stage, key)
        if art is None:
            raise RuntimeError(f"rank {comm.rank}: artifact {stage}/{key} not visible after rank 0 published it; "
                               f"the artifact store ({self.root}) must be on storage shared by every node")
        return art, decision != "train"


def _collective(checkpointer: Any) -> bool:
    """Whether every rank must call `save` (a Ray Train checkpointer reports from every rank)."""
    return bool(getattr(checkpointer, "collective", False))
