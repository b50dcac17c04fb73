"""Stage 1: the latent action representation (VAE over trajectory windows), or its raw-space stand-in.

modeling = latent: tokens (s, a, r, G); modeling = skill: tokens (s, a) only (no future information in the
latent); modeling = raw: no VAE, only the inverse-dynamics and reward/return heads on raw windows
(`raw_dynamics`). The normalizer fitted on the data is saved with the artifact so every later stage and the
planner see the same units.
"""

from __future__ import annotations

import numpy as np
import torch

from ld.config import Config, VAEConfig
from ld.models.vae import TrajectoryVAE
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.codec import LatentCodec, RawCodec, RawDynamics
from ld.stages.common import StageInputs, publish
from ld.stages.data import training_data
from ld.stages.training import train_loop

NAME = "vae"
# 2: r and G are reconstructed from (s_1, z) by the decoder (was: a value head on the true (s, a))
VERSION = 2
RAW_NAME = "raw_dynamics"
READS = ["modeling", "latent_step", "horizon", "gamma", "vae"]
RAW_READS = ["horizon", "gamma", "vae.id_hidden", "vae.id_layers", "vae.value_hidden", "vae.value_layers",
             "vae.lr", "vae.batch_size", "vae.steps"]


def stage_name(cfg: Config) -> str:
    return RAW_NAME if cfg.modeling == "raw" else NAME


def _arch(cfg: Config, obs_dim: int, act_dim: int) -> dict:
    return {
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "horizon": cfg.horizon,
        "latent_step": cfg.latent_step,
        "use_rewards": cfg.modeling == "latent",
        "modeling": cfg.modeling,
        "vae": cfg.vae.model_dump(),
    }


def build_model(arch: dict) -> torch.nn.Module:
    v = VAEConfig(**arch["vae"])
    if arch["modeling"] == "raw":
        return RawDynamics(arch["obs_dim"], arch["act_dim"], v.id_hidden, v.id_layers, v.value_hidden,
                           v.value_layers)
    return TrajectoryVAE(arch["obs_dim"], arch["act_dim"], arch["horizon"], arch["latent_step"], v,
                         use_rewards=arch["use_rewards"])


def load_codec(artifact: Artifact):
    """The trained codec of a vae / raw_dynamics artifact."""
    arch = artifact.load_json("arch")
    model = build_model(arch)
    model.load_state_dict(artifact.load("model"))
    model.eval()
    if arch["modeling"] == "raw":
        return RawCodec(model, arch["horizon"])
    return LatentCodec(model)


def train_inverse_dynamics(net: torch.nn.Module, data, cfg: Config, inputs: StageInputs):
    """The paper's separate inverse-dynamics training (batch `vae.id_batch_size`, `vae.id_steps` steps) on
    every consecutive pair (s_t, s_{t+1}) -> a_t inside an episode, in normalized units."""
    idx = data.index
    has_next = idx.start + 1 < idx.ep_len[idx.episode_index]
    rows = np.flatnonzero(has_next)
    norm = data.normalizer
    s = torch.as_tensor(norm.normalize("states", idx.states), dtype=torch.float32, device=inputs.device)
    a = torch.as_tensor(norm.normalize("actions", idx.actions), dtype=torch.float32, device=inputs.device)
    vc = cfg.vae

    def loss_fn(step, rng, gen):
        i = torch.from_numpy(rows[rng.integers(0, len(rows), vc.id_batch_size)]).to(inputs.device)
        return ((net(s[i], s[i + 1]) - a[i]) ** 2).mean(), {}

    return train_loop(net, loss_fn, steps=vc.id_steps, lr=vc.lr, seed=cfg.seed + 1, desc="inverse_dynamics",
                      log_every=cfg.train.log_every, progress=inputs.progress)


def run(cfg: Config, inputs: StageInputs) -> Artifact:
    data = training_data(cfg, inputs)

    def produce(out: ArtifactWriter) -> None:
        torch.manual_seed(cfg.seed)
        arch = _arch(cfg, data.obs_dim, data.act_dim)
        model = build_model(arch).to(inputs.device)
        vc = cfg.vae

        separate_id = vc.id_steps is not None and cfg.modeling != "raw"

        def loss_fn(step, rng, gen):
            batch = data.batch(rng.integers(0, data.n, vc.batch_size), inputs.device)
            if cfg.modeling == "raw":
                return model.loss(batch)
            return model.loss(batch, generator=gen, inverse_dynamics=not separate_id)

        result = train_loop(model, loss_fn, steps=vc.steps, lr=vc.lr, seed=cfg.seed,
                            desc=stage_name(cfg), log_every=cfg.train.log_every, progress=inputs.progress)
        if separate_id:
            id_result = train_inverse_dynamics(model.inverse_dynamics, data, cfg, inputs)
            out.metrics.update({f"inv_dyn_{k}": v for k, v in id_result.summary().items()})
        out.save("model", {k: v.cpu() for k, v in model.state_dict().items()})
        out.save_json("arch", arch)
        out.save_json("normalizer", data.normalizer.state_dict())
        out.metrics.update(result.summary())
        out.metrics["history"] = result.history

    reads = RAW_READS if cfg.modeling == "raw" else READS
    return publish(stage_name(cfg), reads, cfg, inputs, [], produce, version=VERSION)
