"""The fast planning path (ld.planning.fast) computes what `draw` computes, on CPU, for every sampler.

The static sampler replays `draw`'s operations on preallocated buffers with precomputed coefficients and
(for energy guidance) a hand-written backward through the SiLU energy MLP; with the same generator the
outputs must match `draw` to 1e-6 (in practice bit for bit). The whole-planner path is checked through
`Planner(fast="eager")` against the eager planner on a tiny trained pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ld.diffusion import NoiseSchedule
from ld.diffusion.guided import draw
from ld.models.energy import EnergyMLP, energy_grad
from ld.models.unet import TemporalUNet
from ld.planning.fast import AnalyticEnergyGrad, StaticSampler, bucket, resolve_mode

K, N, C, OBS, B = 20, 4, 3, 5, 6


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    prior = TemporalUNet(C, OBS, dim=8, dim_mults=(1, 2), embed_dim=16, embed_hidden=32).eval()
    energy = EnergyMLP(N * C, OBS, hidden=32, layers=3, time_embed=16, diffusion_steps=K, x_shape=(N, C)).eval()
    for p in list(prior.parameters()) + list(energy.parameters()):  # non-trivial weights
        p.data.add_(0.05 * torch.randn_like(p))
    cond = torch.randn(B, OBS)
    clip = (torch.full((C,), -2.5), torch.full((C,), 2.5))
    return prior, energy, NoiseSchedule(K), cond, clip


def test_analytic_energy_gradient_equals_autograd(models):
    _, energy, _, cond, _ = models
    x = torch.randn(B, N, C)
    k = torch.randint(0, K, (B,))
    ref = energy_grad(energy, x, cond, k)
    from ld.models.energy import sinusoidal_embedding

    temb = sinusoidal_embedding(energy._time(k, x), energy.time_embed)
    got = AnalyticEnergyGrad(energy)(x, cond, temb)
    assert got.shape == x.shape
    torch.testing.assert_close(got, ref, atol=1e-7, rtol=1e-6)


def test_analytic_energy_rejects_other_structures():
    e = EnergyMLP(4, 2, hidden=8, layers=2, time_embed=4, diffusion_steps=K)
    assert AnalyticEnergyGrad.supported(e)
    e.net[1] = torch.nn.ReLU()
    assert not AnalyticEnergyGrad.supported(e)
    assert not AnalyticEnergyGrad.supported(None)


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddpm", 7), ("ddim", 10), ("dpm_solver", 10),
                                           ("dpm_solver", 20)])
@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("w", [1.2, 1.0])
def test_static_sampler_matches_draw(models, sampler, steps, guided, w):
    prior, energy, schedule, cond, clip = models
    kw = dict(guidance_scale=w, temperature=0.5, sampler=sampler, steps=steps,
              energy=energy if guided else None, energy_scale=0.7)
    ref = draw(prior, schedule, cond, (N, C), generator=torch.Generator().manual_seed(3), clip=clip, **kw)
    fast = StaticSampler(prior, schedule, (N, C), OBS, B, clip=clip, **kw)
    got = fast(cond, torch.Generator().manual_seed(3))
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    # a second call with a fresh generator state reuses the buffers and still matches
    ref2 = draw(prior, schedule, cond, (N, C), generator=torch.Generator().manual_seed(4), clip=clip, **kw)
    torch.testing.assert_close(fast(cond, torch.Generator().manual_seed(4)), ref2, atol=1e-6, rtol=1e-6)


def test_autograd_fallback_matches_draw(models):
    prior, energy, schedule, cond, clip = models
    kw = dict(guidance_scale=1.2, temperature=0.5, sampler="dpm_solver", steps=10, energy=energy, energy_scale=1.0)
    ref = draw(prior, schedule, cond, (N, C), generator=torch.Generator().manual_seed(5), clip=clip, **kw)
    fast = StaticSampler(prior, schedule, (N, C), OBS, B, clip=clip, analytic_energy=False, **kw)
    assert not fast.capturable
    torch.testing.assert_close(fast(cond, torch.Generator().manual_seed(5)), ref, atol=1e-6, rtol=1e-6)


def test_padded_rows_do_not_touch_the_first_rows(models):
    """Graph buckets run b rows inside a static batch B > b: the first b rows equal an exact-b draw up to
    float32 rounding (rows never mix, but BLAS picks a different kernel blocking for another batch size)."""
    prior, energy, schedule, cond, clip = models
    kw = dict(guidance_scale=1.2, temperature=0.5, sampler="ddpm", steps=10, energy=energy, energy_scale=1.0)
    b = 3
    ref = draw(prior, schedule, cond[:b], (N, C), generator=torch.Generator().manual_seed(6), clip=clip, **kw)
    fast = StaticSampler(prior, schedule, (N, C), OBS, bucket(b + 1) * 2, clip=clip, **kw)
    fast.load(cond[:b], torch.Generator().manual_seed(6), b)
    with torch.no_grad():
        got = fast.body()[:b]
    torch.testing.assert_close(got, ref, atol=2e-4, rtol=2e-4)


def test_modes():
    assert resolve_mode(True, torch.device("cpu")) == "eager"
    assert resolve_mode("auto", torch.device("cuda")) == "graph"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_mode("graph", torch.device("cpu"))
    with pytest.raises(ValueError):
        resolve_mode("turbo", torch.device("cpu"))
    assert [bucket(b) for b in (1, 3, 20, 64)] == [1, 4, 32, 64]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
def test_cuda_graph_matches_eager_on_gpu(models):
    prior, energy, schedule, cond, clip = models
    dev = torch.device("cuda")
    prior_d, energy_d = prior.to(dev), energy.to(dev)
    kw = dict(guidance_scale=1.2, temperature=0.5, sampler="dpm_solver", steps=10, energy=energy_d,
              energy_scale=1.0)
    clip_d = (clip[0].to(dev), clip[1].to(dev))
    ref = draw(prior_d, schedule, cond.to(dev), (N, C), generator=torch.Generator(dev).manual_seed(7),
               clip=clip_d, **kw)
    fast = StaticSampler(prior_d, schedule, (N, C), OBS, B, clip=clip_d, device=dev, **kw)
    fast.load(cond.to(dev), torch.Generator(dev).manual_seed(7))
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        fast.body()
    torch.cuda.current_stream().wait_stream(s)
    with torch.no_grad(), torch.cuda.graph(g):
        out = fast.body()
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    prior.cpu(), energy.cpu()


# ----------------------------------------------------------------------------------------------------
# the whole planner


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from ld.config import resolve
    from ld.data import load_dataset
    from ld.data.builtin import make
    from ld.pipeline import setup_torch, train_stages
    from ld.stages.artifact import ArtifactStore

    tmp = tmp_path_factory.mktemp("fastplan")
    path = make("pointmaze-umaze", tmp / "umaze.hdf5", episodes=6, progress=False)
    cfg = resolve(None, "smoke", [f"dataset={path}", "vae.steps=20", "prior.steps=20", "energy.steps=20"])
    device = setup_torch(cfg)
    ds = load_dataset(cfg.dataset)
    artifacts, _ = train_stages(cfg, ds, ArtifactStore(tmp / "artifacts"), device, progress=False)
    return cfg, artifacts, ds


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 5), ("dpm_solver", 5)])
@pytest.mark.parametrize("guided", [True, False])
def test_fast_planner_matches_planner(trained, sampler, steps, guided):
    from ld.planning.planner import Planner

    cfg, artifacts, ds = trained
    cfg = cfg.model_copy(update={"sampler": cfg.sampler.model_copy(update={"name": sampler, "steps": steps})})
    obs = np.stack([ep.observations[0] for ep in ds.episodes[:4]])
    slow = Planner(cfg, artifacts, guided=guided, seed=1)
    fast = Planner(cfg, artifacts, guided=guided, seed=1, fast=True)
    for rows in (obs, obs[:2], obs):  # changing batch sizes, generator state carried across calls
        a, b = slow.plan(rows), fast.plan(rows)
        np.testing.assert_allclose(b.actions, a.actions, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.states, a.states, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(b.energy, a.energy, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(b.predicted_return, a.predicted_return, atol=1e-4, rtol=1e-5)


def test_eval_fast_reaches_the_planner_and_scores_the_same(trained):
    """`eval.fast` is how a user turns the static path on; on CPU it gives the same episodes."""
    from ld.pipeline import evaluate_trial

    cfg, artifacts, ds = trained
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"episodes": 2, "max_steps": 8,
                                                                     "bc_baseline": False})})
    fast_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"fast": "eager"})})
    a = evaluate_trial(cfg, ds, artifacts, [], torch.device("cpu"), progress=False)
    b = evaluate_trial(fast_cfg, ds, artifacts, [], torch.device("cpu"), progress=False)
    assert (b["eval.fast"] == "eager").all()
    np.testing.assert_allclose(b["episode_return"], a["episode_return"], atol=1e-3)
