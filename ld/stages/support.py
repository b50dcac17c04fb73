"""Stage 3: support latents -- M samples from the trained prior for each of S dataset initial states.

They stand in for the behavior distribution mu(x | s_1) in the contrastive energy loss (QGPO's "support
actions"). They are drawn with the paper's DDPM over all K steps at temperature 1 (true prior samples, as
Theorem 1 needs mu itself) and the trial's classifier-free guidance w, so changing the *planning* sampler
never retrains this stage.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ld.config import Config
from ld.planning.sampling import draw
from ld.stages import prior as prior_stage
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.common import StageInputs, publish
from ld.stages.data import training_data

NAME = "support"
READS = ["support_size", "max_support_states", "guidance_scale"]


def stage_name(cfg: Config) -> str:
    return "raw_support" if cfg.modeling == "raw" else NAME


def run(cfg: Config, inputs: StageInputs, chunk: int = 1024) -> Artifact:
    data = training_data(cfg, inputs)
    up = prior_stage.stage_name(cfg)

    def produce(out: ArtifactWriter) -> None:
        prior, schedule, standardizer = prior_stage.load(inputs.upstream[up])
        prior.to(inputs.device)
        arch = inputs.upstream[up].load_json("arch")
        x_shape = (arch["horizon"], arch["transition_dim"])
        rng = np.random.default_rng(cfg.seed)
        n_states = data.n if cfg.max_support_states is None else min(cfg.max_support_states, data.n)
        idx = np.sort(rng.choice(data.n, size=n_states, replace=False))
        s1 = data.batch(idx, inputs.device)["states"][:, 0]
        M = cfg.support_size
        cond = s1.repeat_interleave(M, dim=0)
        gen = torch.Generator(device=inputs.device).manual_seed(cfg.seed)
        xs = []
        for start in tqdm(range(0, cond.shape[0], chunk), desc=stage_name(cfg), leave=False,
                          disable=not inputs.progress):
            c = cond[start:start + chunk]
            xs.append(draw(prior, schedule, c, x_shape, guidance_scale=cfg.guidance_scale, temperature=1.0,
                           sampler="ddpm", generator=gen, clip=standardizer.bounds(inputs.device)).cpu())
        x = torch.cat(xs).reshape(n_states, M, *x_shape)
        out.save("support", {"states": s1.cpu(), "x": x, "window_index": torch.from_numpy(idx)})
        out.metrics.update(n_states=n_states, support_size=M, x_std=float(x.std()))

    return publish(stage_name(cfg), READS, cfg, inputs, [up], produce)
