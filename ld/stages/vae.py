"""Stage 1 (role `codec`): the latent action representation (VAE over trajectory windows), or its raw-space
stand-in. The math of the stages `vae` and `raw_dynamics`; their declarations are in `ld.stages.dag`.

modeling = latent: tokens (s, a, r, G); modeling = skill: tokens (s, a) only (no future information in the
latent); modeling = raw: no VAE, only the inverse-dynamics and reward/return heads on raw windows
(`raw_dynamics`). The normalizer fitted on the data is saved with the artifact so every later stage and the
planner see the same units.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from ld.config import Config, VAEConfig
from ld.models.vae import TrajectoryVAE
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.codec import LatentCodec, RawCodec, RawDynamics
from ld.stages.common import StageInputs
from ld.stages.data import training_data
from ld.stages.training import current_hooks, train_loop

NAME = "vae"
RAW_NAME = "raw_dynamics"


def _arch(cfg: Config, obs_dim: int, act_dim: int) -> dict:
    """The VAE's architecture record (latent and skill selections)."""
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


@contextlib.contextmanager
def _own_checkpoints(desc: str) -> Iterator[None]:
    """The stage's two loops (inverse dynamics, then the VAE) checkpoint under one stage key: each resumes
    only from a state its own loop saved (by the state's `desc`); an earlier loop reruns, seeded, instead."""
    hooks = current_hooks()
    if hooks is None or hooks.restore is None:
        yield
        return
    restore = hooks.restore

    def own() -> dict | None:
        state = restore()
        return state if state is not None and state.get("desc") == desc else None

    hooks.restore = own
    try:
        yield
    finally:
        hooks.restore = restore


def _save_codec(out: ArtifactWriter, model: torch.nn.Module, arch: dict, data, result) -> None:
    out.save("model", {k: v.cpu() for k, v in model.state_dict().items()})
    out.save_json("arch", arch)
    out.save_json("normalizer", data.normalizer.state_dict())
    out.metrics.update(result.summary())
    out.metrics["history"] = result.history


def produce_vae(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """The latent codec: the trajectory VAE (tokens (s, a, r, G), or (s, a) for the skill selection) with
    its inverse dynamics f, trained jointly or, with `vae.id_steps`, in the paper's separate loop.

    The separate loop runs *first*, and f is then frozen while the VAE trains: the decoded-action term
    f(s_hat_t, s_hat_t+1) ~ a_t then teaches the decoder to place its states where the f that planning
    executes reads the right action. (Fine-tuning f after the VAE, as before version 4, replaced the f the
    decoder had co-adapted with by one it never saw.)"""
    data = training_data(cfg, inputs)
    torch.manual_seed(cfg.seed)
    arch = _arch(cfg, data.obs_dim, data.act_dim)
    model = build_model(arch).to(inputs.device)
    vc = cfg.vae
    separate_id = vc.id_steps is not None
    if separate_id:
        with _own_checkpoints("inverse_dynamics"):
            id_result = train_inverse_dynamics(model.inverse_dynamics, data, cfg, inputs)
        out.metrics.update({f"inv_dyn_{k}": v for k, v in id_result.summary().items()})
        model.inverse_dynamics.requires_grad_(False)

    def loss_fn(step, rng, gen):
        batch = data.batch(rng.integers(0, data.n, vc.batch_size), inputs.device)
        return model.loss(batch, generator=gen, inverse_dynamics=not separate_id)

    with _own_checkpoints(NAME) if separate_id else contextlib.nullcontext():
        result = train_loop(model, loss_fn, steps=vc.steps, lr=vc.lr, seed=cfg.seed, desc=NAME,
                            log_every=cfg.train.log_every, progress=inputs.progress)
    model.inverse_dynamics.requires_grad_(True)
    _save_codec(out, model, arch, data, result)


def produce_raw_dynamics(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """The raw selection's stand-in for the codec: no latent, only the inverse dynamics and the
    reward/return heads trained on raw windows."""
    data = training_data(cfg, inputs)
    torch.manual_seed(cfg.seed)
    vc = cfg.vae
    heads = {k: getattr(vc, k) for k in ("id_hidden", "id_layers", "value_hidden", "value_layers")}
    arch = {"obs_dim": data.obs_dim, "act_dim": data.act_dim, "horizon": cfg.horizon, "modeling": "raw",
            "vae": heads}
    model = build_model(arch).to(inputs.device)

    def loss_fn(step, rng, gen):
        return model.loss(data.batch(rng.integers(0, data.n, vc.batch_size), inputs.device))

    result = train_loop(model, loss_fn, steps=vc.steps, lr=vc.lr, seed=cfg.seed, desc=RAW_NAME,
                        log_every=cfg.train.log_every, progress=inputs.progress)
    _save_codec(out, model, arch, data, result)
