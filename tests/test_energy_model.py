"""Energy model f_eta and its losses, checked against hand-computed and analytic answers (k = 0 only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ld.models.energy import (
    ENERGY_LOSSES,
    EnergyMLP,
    contrastive_loss,
    effective_sample_size,
    emse_loss,
    energy_grad,
    mse_loss,
)
from ld.stages.codec import trajectory_energy

torch.set_num_threads(1)


def test_contrastive_loss_hand_computed():
    beta = 2.0
    energy = [1.0, 0.5, -0.2]
    f = [0.3, -0.1, 0.4]
    # target weights p_i = exp(-beta E_i) / sum_j exp(-beta E_j)
    w = [math.exp(-2.0), math.exp(-1.0), math.exp(0.4)]
    p = [x / sum(w) for x in w]
    # log softmax of f: f_i - log sum_j exp(f_j)
    lse = math.log(math.exp(0.3) + math.exp(-0.1) + math.exp(0.4))
    expected = -sum(pi * (fi - lse) for pi, fi in zip(p, f))
    got = contrastive_loss(torch.tensor([f]), torch.tensor([energy]), beta)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # by hand: p = (0.0678, 0.1844, 0.7478), log softmax(f) = (-1.0208, -1.4208, -0.9208)
    assert expected == pytest.approx(1.0198, abs=1e-4)

    # the mean over the leading axes: two identical rows give the same value
    two = contrastive_loss(torch.tensor([f, f]), torch.tensor([energy, energy]), beta)
    assert two.item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_loss_is_minimized_at_minus_beta_energy_plus_constant():
    g = torch.Generator().manual_seed(0)
    beta = 3.0
    energy = torch.randn(4, 8, generator=g)
    best = -beta * energy + 7.5  # any per-row constant is as good
    loss_best = contrastive_loss(best, energy, beta)
    assert loss_best.item() == pytest.approx(contrastive_loss(-beta * energy, energy, beta).item(), rel=1e-6)
    # the minimum equals the entropy of the target softmax
    p = torch.softmax(-beta * energy, -1)
    assert loss_best.item() == pytest.approx(-(p * p.log()).sum(-1).mean().item(), rel=1e-5)
    for _ in range(20):
        perturbed = best + 0.3 * torch.randn(4, 8, generator=g)
        assert contrastive_loss(perturbed, energy, beta) > loss_best
    # and it is a stationary point
    f = best.clone().requires_grad_(True)
    contrastive_loss(f, energy, beta).backward()
    assert f.grad.abs().max() < 1e-6


def test_emse_and_mse_optima_and_sign_convention():
    g = torch.Generator().manual_seed(0)
    beta = 3.0
    energy = torch.randn(5, 6, generator=g)
    # MSE regresses f on -beta E
    assert mse_loss(-beta * energy, energy, beta).item() == pytest.approx(0.0, abs=1e-12)
    assert mse_loss(beta * energy, energy, beta) > 0.1
    # E-MSE's optimum is exp(f) = exp(-beta E) exactly: no per-state shift (the paper's formula)
    assert emse_loss(-beta * energy, energy, beta).item() == pytest.approx(0.0, abs=1e-6)
    shift = (-beta * energy).amax(-1, keepdim=True)
    assert emse_loss(-beta * energy - shift, energy, beta) > 1e-3
    assert set(ENERGY_LOSSES) == {"contrastive", "emse", "mse"}


def test_emse_equals_the_papers_formula_on_a_hand_computed_case():
    # one s_1, M = 2: f = (0, ln 2), E = (0, -ln(3)/beta) -> targets exp(-beta E) = (1, 3)
    beta = 2.0
    f = torch.tensor([[0.0, math.log(2.0)]])
    energy = torch.tensor([[0.0, -math.log(3.0) / beta]])
    # ((1 - 1)^2 + (2 - 3)^2) / 2 = 0.5
    assert emse_loss(f, energy, beta).item() == pytest.approx(0.5, rel=1e-6)
    # large energies are NOT tamed: the target overflows float32, as the paper's E-MSE does
    assert not torch.isfinite(emse_loss(torch.zeros(1, 2), torch.tensor([[0.0, -100.0]]), beta))


def test_contrastive_target_uses_the_papers_energy_scale_on_a_hand_computed_case():
    # a decoded window of T = 3 steps per support, M = 2 supports; E = -sum_t Q (not the mean)
    q = torch.tensor([[[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]]])  # [1, M=2, T=3]
    energy = trajectory_energy({"q": q}, "q_sum")
    assert energy.tolist()[0] == pytest.approx([-0.6, 0.0])
    beta = 3.0
    # target weights softmax(-beta E) = softmax(1.8, 0) -> 1 / (1 + e^-1.8) = 0.858149...
    w0 = 1.0 / (1.0 + math.exp(-1.8))
    assert w0 == pytest.approx(0.8581489, rel=1e-6)
    # the loss at f = 0 is the cross-entropy of that target against a uniform guess: ln 2
    assert contrastive_loss(torch.zeros(1, 2), energy, beta).item() == pytest.approx(math.log(2.0), rel=1e-6)
    # and its gradient w.r.t. f is (uniform - target) / 1: tells the hand-computed target apart from a
    # mean-over-T energy (softmax(0.6, 0) = 0.6457) or a 0.75 x beta one (softmax(1.35, 0) = 0.7941)
    f = torch.zeros(1, 2, requires_grad=True)
    contrastive_loss(f, energy, beta).backward()
    assert f.grad[0, 0].item() == pytest.approx(0.5 - w0, abs=1e-6)
    # effective sample size as a fraction of M: 1 / (w0^2 + w1^2) / 2
    ess = effective_sample_size(energy, beta)
    assert ess.item() == pytest.approx(1.0 / (w0 ** 2 + (1 - w0) ** 2) / 2, rel=1e-5)
    assert effective_sample_size(torch.zeros(3, 4), beta).tolist() == pytest.approx([1.0] * 3)
    assert effective_sample_size(torch.tensor([[0.0, 1e3, 1e3, 1e3]]), beta).item() == pytest.approx(0.25)


def test_return_energy_is_the_discounted_reward_to_go_to_the_episodes_end():
    # a hand-made episode of 6 steps; a window of T = 3 starting at t = 2 must score -G_2, where
    # G_2 = r_2 + g r_3 + g^2 r_4 + g^3 r_5 sums rewards *past the window's end*
    from ld.data.types import DatasetInfo, Episode, EpisodeDataset
    from ld.data.windows import WindowIndex

    gamma = 0.9
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=np.float32)
    ep = Episode(np.zeros((6, 2), np.float32), np.zeros((6, 1), np.float32), rewards, terminal=True)
    index = WindowIndex(EpisodeDataset([ep], DatasetInfo(name="hand", source="test")), horizon=3, gamma=gamma)
    window = index.batch([2], as_torch=True)
    expected = 3.0 + gamma * 4.0 + gamma ** 2 * 5.0 + gamma ** 3 * 6.0
    decoded = {"q": window["returns"], "rewards": window["rewards"]}
    assert trajectory_energy(decoded, "return").item() == pytest.approx(-expected, rel=1e-6)
    # not the rewards inside the window only (3 + 4 + 5), nor their mean
    assert trajectory_energy(decoded, "return").item() != pytest.approx(-12.0, rel=1e-3)


def test_energy_mlp_shapes_and_time_conventions():
    torch.manual_seed(0)
    n, d, obs = 4, 3, 5
    model = EnergyMLP(n * d, obs, hidden=32, layers=2, time_embed=16, diffusion_steps=10)
    x = torch.randn(2, 7, n, d)
    s1 = torch.randn(2, obs)
    assert model(x, s1, torch.randint(0, 11, (2,))).shape == (2, 7)  # k per s_1, broadcast over M
    assert model(x.flatten(-2), s1.unsqueeze(1).expand(2, 7, obs), torch.zeros(2, 7)).shape == (2, 7)
    # integer k is divided by K: k = 5 of K = 10 is the same as float t = 0.5
    a = model(x, s1, torch.full((2,), 5))
    b = model(x, s1, torch.full((2,), 0.5))
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="diffusion_steps"):
        EnergyMLP(n * d, obs, hidden=8, layers=1)(x, s1, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(2, 7, 5), s1, 0.0)


def test_energy_grad_under_no_grad_matches_autograd():
    torch.manual_seed(0)
    model = EnergyMLP(6, 2, hidden=16, layers=2, time_embed=8)
    x = torch.randn(3, 4, 2, 3)
    s1 = torch.randn(3, 2)
    k = torch.full((3,), 0.25)
    with torch.no_grad():
        g = energy_grad(model, x, s1, k)
    assert g.shape == x.shape and not g.requires_grad
    xr = x.clone().requires_grad_(True)
    model(xr, s1, k).sum().backward()
    assert torch.allclose(g, xr.grad)
    # finite difference on one coordinate
    eps = 1e-3
    xp, xm = x.clone(), x.clone()
    xp[0, 0, 1, 2] += eps
    xm[0, 0, 1, 2] -= eps
    with torch.no_grad():
        fd = (model(xp, s1, k)[0, 0] - model(xm, s1, k)[0, 0]) / (2 * eps)
    assert fd.item() == pytest.approx(g[0, 0, 1, 2].item(), rel=1e-2, abs=1e-4)


def test_energy_grad_leaves_parameter_grads_alone():
    model = EnergyMLP(3, 1, hidden=8, layers=1, time_embed=4)
    energy_grad(model, torch.randn(5, 3), torch.randn(5, 1), 0.0)
    assert all(p.grad is None for p in model.parameters())


def test_contrastive_training_recovers_an_analytic_energy():
    """x0 ~ N(0, 1), E(x) = c x: the optimal f(x, k=0) is -beta c x + const(s_1)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    beta, c = 1.0, 1.5
    batch, m = 64, 16
    model = EnergyMLP(1, 1, hidden=64, layers=2, time_embed=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        x0 = torch.randn(batch, m, 1, generator=g)  # support set of M samples per "s_1"
        s1 = torch.randn(batch, 1, generator=g)  # an irrelevant condition
        loss = contrastive_loss(model(x0, s1, 0.0), c * x0.squeeze(-1), beta)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with torch.no_grad():
        xs = torch.linspace(-1.5, 1.5, 31).view(-1, 1)
        for cond in (-1.0, 0.0, 1.0):
            f = model(xs, torch.full((31, 1), cond), 0.0)
            df = f - f[15]  # f(x) - f(0)
            exact = -beta * c * xs.squeeze(-1)
            assert (df - exact).abs().max() < 0.2, (df, exact)
            slope = ((df * xs.squeeze(-1)).sum() / (xs**2).sum()).item()
            assert slope == pytest.approx(-beta * c, rel=0.05)
