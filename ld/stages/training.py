"""The one gradient loop every stage uses.

Stages differ in what a batch is and what the loss is; the loop (Adam, seeded batch sampling, progress,
loss history) is shared so that the Ray Train wrapper has exactly one place to hook into.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

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

    def summary(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "train_wall_time_s": round(self.wall_time_s, 3),
            **{f"final_{k}": v for k, v in self.last_metrics.items()},
        }


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
) -> TrainResult:
    """Run `steps` Adam steps of `loss_fn(step, np_rng, torch_gen) -> (loss, metrics)`.

    The loss function draws its own minibatch from the two seeded generators, so a run is a pure function
    of the seed on CPU.
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    history: list[tuple[int, float]] = []
    # Smoothed over a window so that "first" and "final" are not single noisy minibatches.
    window = max(1, min(50, steps // 10))
    recent: list[float] = []
    first = math.nan
    last_metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, mininterval=1.0)
    for step in bar:
        loss, metrics = loss_fn(step, rng, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{desc}: loss became {value} at step {step}")
        recent.append(value)
        if len(recent) > window:
            recent.pop(0)
        if step + 1 == window:
            first = float(np.mean(recent))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            smoothed = float(np.mean(recent))
            history.append((step + 1, smoothed))
            bar.set_postfix(loss=f"{smoothed:.4g}")
            last_metrics = {k: float(v) for k, v in metrics.items()}
    model.eval()
    final = float(np.mean(recent)) if recent else math.nan
    return TrainResult(steps, first, final, history, time.perf_counter() - t0, last_metrics)
