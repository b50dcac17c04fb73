"""Baseline: behavior cloning on the same data, so every score has an imitation baseline beside it.

CORL's BC, written for ld: an MLP s_t -> a_t (2 x 256, ReLU) regressing standardized actions with MSE, Adam
3e-4, batch 256, on every transition of the dataset. It reads only the data and its own `bc.*` fields, so one
BC serves every trial of a suite that shares the dataset and seed (an L, H, beta or K ablation trains it once).
Training stops once the loss has converged -- the smoothed loss fell by less than 2% over the last 20% of
training and over the last tenth of `bc.steps`, checked every `bc.steps / 50` steps after the first fifth --
or at the cap `bc.steps`; the manifest keeps the loss curve, the steps run and `converged`, so an under-trained
baseline is visible, not silent.
"""

from __future__ import annotations

import numpy as np
import torch

from ld.config import Config
from ld.data.normalizer import Normalizer
from ld.models.mlp import mlp
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.common import StageInputs
from ld.stages.training import train_loop

NAME = "bc"


def converged(history: list[tuple[int, float]], tail: float = 0.2, tol: float = 0.02, window: int = 0) -> bool:
    """True if the smoothed loss improved by less than `tol` (relative) over the last `tail` of training, or
    over the last `window` steps if that is longer (so an early, noisy plateau does not count)."""
    if len(history) < 2:
        return False
    last_step = history[-1][0]
    since = min(last_step * (1 - tail), last_step - window)
    before = [loss for step, loss in history if step <= since]
    if not before:
        return False
    return (before[-1] - history[-1][1]) < tol * abs(before[-1])


def produce(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """Fit the BC MLP on every transition until its loss converges (or the `bc.steps` cap)."""
    ds = inputs.dataset
    states = np.concatenate([e.observations for e in ds.episodes]).astype(np.float32)
    actions = np.concatenate([e.actions for e in ds.episodes]).astype(np.float32)
    norm = {"states": Normalizer.fit(states), "actions": Normalizer.fit(actions)}
    s_all = torch.as_tensor(norm["states"].normalize(states), dtype=torch.float32, device=inputs.device)
    a_all = torch.as_tensor(norm["actions"].normalize(actions), dtype=torch.float32, device=inputs.device)
    torch.manual_seed(cfg.seed)
    bc = cfg.bc
    arch = {"obs_dim": ds.obs_dim, "act_dim": ds.act_dim, "hidden": bc.hidden, "layers": bc.layers}
    model = mlp(ds.obs_dim, bc.hidden, bc.layers, ds.act_dim).to(inputs.device)
    n = s_all.shape[0]

    def loss_fn(step, rng, gen):
        idx = torch.from_numpy(rng.integers(0, n, bc.batch_size)).to(inputs.device)
        return ((model(s_all[idx]) - a_all[idx]) ** 2).mean(), {}

    log_every = max(1, bc.steps // 50)
    result = train_loop(model, loss_fn, steps=bc.steps, lr=bc.lr, seed=cfg.seed, desc=NAME,
                        log_every=log_every, progress=inputs.progress,
                        until=lambda h: h[-1][0] >= bc.steps // 5 and converged(h, window=bc.steps // 10))
    out.save("model", {k: v.cpu() for k, v in model.state_dict().items()})
    out.save_json("arch", arch)
    out.save_json("normalizer", {k: v.state_dict() for k, v in norm.items()})
    out.metrics.update(result.summary())
    out.metrics["history"] = result.history
    out.metrics["converged"] = converged(result.history)
    out.metrics["transitions"] = int(n)


class BCPolicy:
    """The batched policy interface of the evaluator, for the BC baseline."""

    def __init__(self, artifact: Artifact, device: torch.device | str = "cpu"):
        arch = artifact.load_json("arch")
        self.model = mlp(arch["obs_dim"], arch["hidden"], arch["layers"], arch["act_dim"])
        self.model.load_state_dict(artifact.load("model"))
        self.model.to(device).eval()
        self.device = device
        self.norm = {k: Normalizer.from_state_dict(v) for k, v in artifact.load_json("normalizer").items()}

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        s = torch.as_tensor(self.norm["states"].normalize(obs.astype(np.float32)), dtype=torch.float32,
                            device=self.device)
        with torch.no_grad():
            a = self.model(s).cpu().numpy()
        return self.norm["actions"].unnormalize(a)
