"""The one gradient loop every stage uses.

Stages differ in what a batch is and what the loss is; the loop (Adam, seeded batch sampling, progress,
loss history) is shared so that the Ray Train wrapper has exactly one place to hook into.

That hook is `TrainHooks`, passed explicitly or installed for a block of code with `training_hooks(...)`
(a context variable, so the stage functions need not know whether they run in-process or on a Ray Train
worker). With no hooks the loop is exactly the plain single-process loop. Hooks add:

- data parallelism: `wrap` (e.g. `ray.train.torch.prepare_model`, i.e. DDP) wraps a module whose forward
  is the loss, so gradients are averaged across ranks; each rank draws its own shard of every minibatch
  from generators seeded `seed + rank` (`rng.integers(lo, hi, batch_size)` returns this rank's share of
  `batch_size`); logged losses are averaged over ranks (`all_reduce_mean`);
- mid-stage checkpoints: every `checkpoint_every` steps `save(state)` receives model + optimizer + step +
  generator states + loss bookkeeping; at start `restore()` may return such a state, and the loop continues
  from it, bit-for-bit as if it had never stopped;
- `on_step(step)` (fault injection in tests), `on_log(step, loss, terms)` at every logged point (a sweep
  trial reports it to Tune: a loss curve per stage) and `loop_seconds` accounting (time inside loops).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


@dataclass
class TrainResult:
    steps: int
    first_loss: float
    final_loss: float
    history: list[tuple[int, float]] = field(default_factory=list)
    wall_time_s: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)
    nonfinite_step: Optional[int] = None  # with nonfinite="stop": the step whose loss or gradient was not finite

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "nonfinite_step": self.nonfinite_step,
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "train_wall_time_s": round(self.wall_time_s, 3),
            **{f"final_{k}": v for k, v in self.last_metrics.items()},
        }


@dataclass
class TrainHooks:
    """How a loop runs beyond the plain single process (see the module docstring)."""

    rank: int = 0
    world_size: int = 1
    wrap: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None
    all_reduce_mean: Optional[Callable[[list[float]], list[float]]] = None
    checkpoint_every: int = 0
    save: Optional[Callable[[dict[str, Any]], None]] = None
    restore: Optional[Callable[[], Optional[dict[str, Any]]]] = None
    on_step: Optional[Callable[[int], None]] = None
    # at every logged point, on rank 0: (step, smoothed loss, the loss terms) -> e.g. Tune's live loss curves
    on_log: Optional[Callable[[int, float, dict[str, float]], None]] = None
    loop_seconds: float = 0.0  # accumulated over every loop run under these hooks
    resumed_from: list[int] = field(default_factory=list)  # steps restored from (for tests and logs)

    def shard(self, n: int) -> int:
        """This rank's share of a global batch of n (the first n % world ranks take one extra)."""
        return n // self.world_size + (1 if self.rank < n % self.world_size else 0)


_HOOKS: contextvars.ContextVar[Optional[TrainHooks]] = contextvars.ContextVar("ld_train_hooks", default=None)


@contextlib.contextmanager
def training_hooks(hooks: Optional[TrainHooks]) -> Iterator[Optional[TrainHooks]]:
    """Install `hooks` for every `train_loop` called (directly or by a stage) inside the block."""
    token = _HOOKS.set(hooks)
    try:
        yield hooks
    finally:
        _HOOKS.reset(token)


def current_hooks() -> Optional[TrainHooks]:
    return _HOOKS.get()


class ShardedRNG:
    """A numpy Generator whose `integers(lo, hi, size)` draws this rank's shard of a batch of `size`."""

    def __init__(self, rng: np.random.Generator, hooks: TrainHooks):
        self._rng, self._hooks = rng, hooks

    def integers(self, low, high=None, size=None, *args, **kwargs):
        if isinstance(size, (int, np.integer)):
            size = self._hooks.shard(int(size))
        elif isinstance(size, tuple) and size:
            size = (self._hooks.shard(int(size[0])),) + tuple(size[1:])
        return self._rng.integers(low, high, size, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._rng, name)


class _LossModule(torch.nn.Module):
    """A module whose forward is the stage's loss, so DDP sees (and syncs) every parameter's gradient."""

    def __init__(self, model: torch.nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self._loss_fn = loss_fn

    def forward(self, step, rng, gen):
        return self._loss_fn(step, rng, gen)


def train_loop(
    model: torch.nn.Module,
    loss_fn: Callable[[int, np.random.Generator, torch.Generator], tuple[torch.Tensor, dict[str, float]]],
    *,
    steps: int,
    lr: float,
    seed: int,
    desc: str,
    log_every: int = 200,
    grad_clip: float | None = 1.0,
    progress: bool = True,
    hooks: Optional[TrainHooks] = None,
    nonfinite: str = "raise",
    until: Optional[Callable[[list[tuple[int, float]]], bool]] = None,
) -> TrainResult:
    """Run `steps` Adam steps of `loss_fn(step, np_rng, torch_gen) -> (loss, metrics)`.

    The loss function draws its own minibatch from the two seeded generators, so a run is a pure function
    of the seed on CPU. `hooks` (default: those installed by `training_hooks`) add data parallelism,
    mid-stage checkpoints and accounting; without them this is the plain single-process loop.

    A loss or gradient that is not finite is a bug for most stages (`nonfinite="raise"`: FloatingPointError).
    For a loss whose instability is itself the thing measured (E-MSE), `nonfinite="stop"` ends training at
    that step *before* the update, keeps the last finite weights and records the step in the result.

    `until(history)` is asked at every logged point (`log_every`); True ends training there ("train until
    converged", with `steps` as the cap). The result's `steps` is the number of steps actually run.
    """
    if nonfinite not in ("raise", "stop"):
        raise ValueError(f"nonfinite must be 'raise' or 'stop', got {nonfinite!r}")
    nonfinite_step: Optional[int] = None
    steps_run = steps
    hooks = hooks if hooks is not None else current_hooks()
    rank, world = (hooks.rank, hooks.world_size) if hooks is not None else (0, 1)
    rng = np.random.default_rng(seed + rank)
    gen = torch.Generator().manual_seed(seed + rank)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history: list[tuple[int, float]] = []
    # Smoothed over a window so that "first" and "final" are not single noisy minibatches.
    window = max(1, min(50, steps // 10))
    recent: list[float] = []
    first = math.nan
    last_metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    start = 0
    if hooks is not None and hooks.restore is not None:
        state = hooks.restore()
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            rng.bit_generator.state = state["rng"][rank]
            gen.set_state(state["gen"][rank])
            start, recent, history, first = state["step"], list(state["recent"]), list(state["history"]), state["first"]
            last_metrics = dict(state.get("last_metrics", {}))
            hooks.resumed_from.append(start)
    forward = loss_fn
    draw_rng: Any = rng
    if world > 1:
        draw_rng = ShardedRNG(rng, hooks)
    if hooks is not None and hooks.wrap is not None:
        forward = hooks.wrap(_LossModule(model, loss_fn))
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, leave=False, mininterval=1.0,
               initial=start, total=steps)
    for step in bar:
        if hooks is not None and hooks.on_step is not None:
            hooks.on_step(step)
        loss, metrics = forward(step, draw_rng, gen)
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value) and nonfinite == "stop":
            nonfinite_step = step
            break
        loss.backward()
        if nonfinite == "stop" and not all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
                                           if p.grad is not None):
            nonfinite_step = step
            break
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: loss became {value} at step {step}")
        recent.append(value)
        if len(recent) > window:
            recent.pop(0)
        if step + 1 == window:
            first = _mean_over_ranks(hooks, float(np.mean(recent)))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            smoothed = _mean_over_ranks(hooks, float(np.mean(recent)))
            history.append((step + 1, smoothed))
            bar.set_postfix(loss=f"{smoothed:.4g}")
            last_metrics = {k: float(v) for k, v in metrics.items()}
            if hooks is not None and hooks.on_log is not None and rank == 0:
                hooks.on_log(step + 1, smoothed, last_metrics)
            if until is not None and step + 1 < steps and until(history):
                steps_run = step + 1
                break
        if (hooks is not None and hooks.save is not None and hooks.checkpoint_every > 0
                and (step + 1) % hooks.checkpoint_every == 0 and step + 1 < steps):
            hooks.save({
                "step": step + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "rng": {rank: rng.bit_generator.state}, "gen": {rank: gen.get_state()},
                "recent": list(recent), "history": list(history), "first": first,
                "last_metrics": last_metrics, "desc": desc, "loss": float(np.mean(recent)),
            })
    model.eval()
    final = _mean_over_ranks(hooks, float(np.mean(recent))) if recent else math.nan
    wall = time.perf_counter() - t0
    if hooks is not None:
        hooks.loop_seconds += wall
    if nonfinite_step is not None:
        steps_run = nonfinite_step
    return TrainResult(steps_run, first, final, history, wall, last_metrics, nonfinite_step)


def _mean_over_ranks(hooks: Optional[TrainHooks], value: float) -> float:
    if hooks is None or hooks.world_size == 1 or hooks.all_reduce_mean is None:
        return value
    return float(hooks.all_reduce_mean([value])[0])
