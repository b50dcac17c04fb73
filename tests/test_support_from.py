"""`support_from`: the contrastive supports come from the CFG-sharpened prior (w = the trial's guidance_scale,
the default) or from the behavior prior mu itself (w = 1); the choice is in the support stage's key."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ld.config import build
from ld.data import load_dataset
from ld.data.builtin import make
from ld.diffusion.guided import draw
from ld.pipeline import train_stages
from ld.stages import dag
from ld.stages import prior as prior_stage
from ld.stages.artifact import ArtifactStore
from ld.stages.common import StageInputs
from ld.stages.data import training_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    path = make("pointmaze-umaze", tmp_path_factory.mktemp("d") / "u.hdf5", episodes=4, progress=False)
    return load_dataset(str(path))


def _cfg(**over):
    layer = {"dataset": "unused", "guidance_scale": 1.8, "max_support_states": 8, "support_size": 3,
             "vae": {"steps": 20}, "prior": {"steps": 20}, "energy": {"steps": 5}, "eval": {"bc_baseline": False}}
    layer.update(over)
    return build(layer, "smoke")


@pytest.mark.parametrize("support_from,w", [("cfg", 1.8), ("mu", 1.0)])
def test_supports_are_drawn_with_the_named_guidance(tiny, tmp_path, support_from, w):
    cfg = _cfg(support_from=support_from)
    store = ArtifactStore(tmp_path)
    arts, _ = train_stages(cfg, tiny, store, torch.device("cpu"), progress=False)
    saved = arts["support"].load("support")
    assert arts["support"].manifest["metrics"]["guidance_scale"] == w
    # redraw them: the same states, generator and sampler, with guidance w
    prior = prior_stage.load(arts["prior"])
    data = training_data(cfg, StageInputs(dataset=tiny, store=store, progress=False))
    idx = saved["window_index"].numpy()
    s1 = data.batch(idx, torch.device("cpu"))["states"][:, 0]
    cond = s1.repeat_interleave(cfg.support_size, dim=0)
    x = draw(prior, prior.schedule, cond, prior.x_shape, guidance_scale=w, temperature=1.0, sampler="ddpm",
             generator=torch.Generator().manual_seed(cfg.seed), clip=prior.standardizer.bounds())
    np.testing.assert_allclose(saved["x"].reshape(x.shape).numpy(), x.numpy(), rtol=0, atol=1e-6)


def test_support_from_is_in_the_support_key():
    assert "support_from" in dag.SUPPORT.reads and "support_from" in dag.RAW_SUPPORT.reads
    assert _cfg().support_from == "cfg"  # the default is unchanged until measured
