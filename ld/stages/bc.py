"""Baseline: behavior cloning on the same data (an MLP s_t -> a_t, MSE), so a score has a reference point."""

from __future__ import annotations

import numpy as np
import torch

from ld.config import Config
from ld.data.normalizer import DatasetNormalizer
from ld.models.mlp import mlp
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.common import StageInputs, publish
from ld.stages.data import training_data
from ld.stages.training import train_loop

NAME = "bc"
READS = ["horizon", "gamma", "vae.id_hidden", "vae.id_layers", "vae.lr", "vae.batch_size", "vae.steps"]


def run(cfg: Config, inputs: StageInputs) -> Artifact:
    data = training_data(cfg, inputs)

    def produce(out: ArtifactWriter) -> None:
        torch.manual_seed(cfg.seed)
        arch = {"obs_dim": data.obs_dim, "act_dim": data.act_dim, "hidden": cfg.vae.id_hidden,
                "layers": cfg.vae.id_layers}
        model = mlp(data.obs_dim, arch["hidden"], arch["layers"], data.act_dim).to(inputs.device)

        def loss_fn(step, rng, gen):
            b = data.batch(rng.integers(0, data.n, cfg.vae.batch_size), inputs.device)
            s, a = b["states"][:, 0], b["actions"][:, 0]
            return ((model(s) - a) ** 2).mean(), {}

        result = train_loop(model, loss_fn, steps=cfg.vae.steps, lr=cfg.vae.lr, seed=cfg.seed, desc=NAME,
                            log_every=cfg.train.log_every, progress=inputs.progress)
        out.save("model", {k: v.cpu() for k, v in model.state_dict().items()})
        out.save_json("arch", arch)
        out.save_json("normalizer", data.normalizer.state_dict())
        out.metrics.update(result.summary())

    return publish(NAME, READS, cfg, inputs, [], produce)


class BCPolicy:
    """The batched policy interface of the evaluator, for the BC baseline."""

    def __init__(self, artifact: Artifact, device: torch.device | str = "cpu"):
        arch = artifact.load_json("arch")
        self.model = mlp(arch["obs_dim"], arch["hidden"], arch["layers"], arch["act_dim"])
        self.model.load_state_dict(artifact.load("model"))
        self.model.to(device).eval()
        self.device = device
        self.normalizer = DatasetNormalizer.from_state_dict(artifact.load_json("normalizer"))

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: np.ndarray, ids: np.ndarray) -> np.ndarray:
        s = torch.as_tensor(self.normalizer.normalize("states", obs.astype(np.float32)), dtype=torch.float32,
                            device=self.device)
        with torch.no_grad():
            a = self.model(s).cpu().numpy()
        return self.normalizer.unnormalize("actions", a)
