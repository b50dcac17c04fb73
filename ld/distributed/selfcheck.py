"""Self-check of the data-parallel loop: N DDP workers == 1 process on the combined batch.

`ddp_curve(n)` trains a small regression model with `train_loop` on a Ray Train worker group of n CPU
workers (gloo): each rank draws its shard of the batch from a generator seeded seed + rank. `reference_curve(n)`
trains the same model in one process on the union of those shards (n generators, concatenated). Their loss
curves and final weights agree up to float summation order. Used by the tests; handy on a new cluster.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ld.stages.training import TrainHooks, train_loop

STEPS, BATCH, SEED, LR = 40, 32, 7, 1e-2


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return x, x @ w + 0.1 * torch.randn(512, 1, generator=g)


def _model() -> torch.nn.Module:
    torch.manual_seed(SEED)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _train(hooks: TrainHooks | None, loss_fn=None) -> tuple[list, dict[str, torch.Tensor]]:
    x, y = _problem()
    model = _model()

    def default_loss(step, rng, gen):
        idx = torch.from_numpy(rng.integers(0, len(x), BATCH))
        return ((model(x[idx]) - y[idx]) ** 2).mean(), {}

    res = train_loop(model, loss_fn(model, x, y) if loss_fn else default_loss, steps=STEPS, lr=LR, seed=SEED,
                     desc="toy", log_every=5, progress=False, hooks=hooks)
    return res.history, {k: v.detach().clone() for k, v in model.state_dict().items()}


def reference_curve(num_workers: int) -> tuple[list, dict[str, torch.Tensor]]:
    """One process, the combined batch: the n ranks' shards drawn from n generators and concatenated."""
    rngs = [np.random.default_rng(SEED + r) for r in range(num_workers)]
    def make(model, x, y):
        def loss(step, rng, gen):
            idx = np.concatenate([g.integers(0, len(x), TrainHooks(rank=r, world_size=num_workers).shard(BATCH))
                                  for r, g in enumerate(rngs)])
            idx = torch.from_numpy(idx)
            return ((model(x[idx]) - y[idx]) ** 2).mean(), {}
        return loss

    return _train(None, make)


def _worker(config: dict[str, Any]) -> None:
    from ld.distributed.train import TorchComm, ddp_wrap

    comm = TorchComm()
    hooks = TrainHooks(rank=comm.rank, world_size=comm.world_size, wrap=ddp_wrap,
                       all_reduce_mean=comm.all_reduce_mean)
    history, state = _train(hooks)
    if comm.rank == 0:
        torch.save({"history": history, "state": state}, Path(config["out"]) / "ddp.pt")


def ddp_curve(num_workers: int, workdir: str | None = None) -> tuple[list, dict[str, torch.Tensor]]:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(workdir or tempfile.mkdtemp(prefix="ld-ddp-"))
    out.mkdir(parents=True, exist_ok=True)
    TorchTrainer(_worker, train_loop_config={"out": str(out)}, torch_config=TorchConfig(backend="gloo"),
                 scaling_config=ray.train.ScalingConfig(num_workers=num_workers,
                                                        resources_per_worker={"CPU": 0.99}),
                 run_config=ray.train.RunConfig(name="ddp-selfcheck", storage_path=str(out / "train"))).fit()
    got = torch.load(out / "ddp.pt", weights_only=False)
    return got["history"], got["state"]


if __name__ == "__main__":  # python -m ld.distributed.selfcheck  (on a running cluster or locally)
    import ray

    ray.init()
    a, _ = ddp_curve(2)
    b, _ = reference_curve(2)
    print(json.dumps({"ddp": a, "reference": b}))
