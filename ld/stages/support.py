"""Stage 3 (role `support`; stages `support` and `raw_support`, declared in `ld.stages.dag`): support
latents -- M samples from the trained prior for each of S dataset initial states.

They stand in for the behavior distribution mu(x | s_1) in the contrastive energy loss (QGPO's "support
actions"). They are drawn with the paper's DDPM over all K steps at temperature 1 (true prior samples, as
Theorem 1 needs mu itself) and the trial's classifier-free guidance w, so changing the *planning* sampler
never retrains this stage. `support_from: mu` draws them with w = 1 instead: the conditional prior without
CFG's sharpening, the behavior distribution mu(x | s_1) itself.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ld.config import Config
from ld.diffusion.guided import draw
from ld.stages import prior as prior_stage
from ld.stages.artifact import ArtifactWriter
from ld.stages.common import StageInputs
from ld.stages.data import training_data

CHUNK = 1024  # sequences per sampling call (memory only: the samples do not depend on it)


def produce(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """M prior samples for each of a random subset (or all) of the dataset's initial states."""
    data = training_data(cfg, inputs)
    prior = prior_stage.load(inputs.upstream["prior"]).to(inputs.device)
    rng = np.random.default_rng(cfg.seed)
    n_states = data.n if cfg.max_support_states is None else min(cfg.max_support_states, data.n)
    idx = np.sort(rng.choice(data.n, size=n_states, replace=False))
    s1 = data.batch(idx, inputs.device)["states"][:, 0]
    M = cfg.support_size
    cond = s1.repeat_interleave(M, dim=0)
    gen = torch.Generator(device=inputs.device).manual_seed(cfg.seed)
    w = cfg.guidance_scale if cfg.support_from == "cfg" else 1.0
    xs = []
    for start in tqdm(range(0, cond.shape[0], CHUNK), desc="support", leave=False, disable=not inputs.progress):
        c = cond[start:start + CHUNK]
        xs.append(draw(prior, prior.schedule, c, prior.x_shape, guidance_scale=w,
                       temperature=1.0, sampler="ddpm", generator=gen, clip=prior.standardizer.bounds()).cpu())
    x = torch.cat(xs).reshape(n_states, M, *prior.x_shape)
    out.save("support", {"states": s1.cpu(), "x": x, "window_index": torch.from_numpy(idx)})
    out.metrics.update(n_states=n_states, support_size=M, x_std=float(x.std()), guidance_scale=w)
