"""Energy model f_eta and its losses, checked against hand-computed and analytic answers (k = 0 only)."""

from __future__ import annotations

import math

import pytest
import torch

from ld.models.energy import (
    ENERGY_LOSSES,
    EnergyMLP,
    contrastive_loss,
    emse_loss,
    energy_grad,
    mse_loss,
)

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
    # E-MSE: exp(f) matches exp(-beta E) up to the per-s_1 shift by max_i(-beta E_i)
    shift = (-beta * energy).amax(-1, keepdim=True)
    assert emse_loss(-beta * energy - shift, energy, beta).item() == pytest.approx(0.0, abs=1e-12)
    assert emse_loss(beta * energy - (beta * energy).amax(-1, keepdim=True), energy, beta) > 1e-3
    # large energies do not overflow the target
    assert torch.isfinite(emse_loss(torch.zeros(2, 3), 1e4 * torch.randn(2, 3, generator=g), beta))
    assert set(ENERGY_LOSSES) == {"contrastive", "emse", "mse"}


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
