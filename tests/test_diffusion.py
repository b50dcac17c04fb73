"""The diffusion math against exact answers: samplers driven by the analytic eps of a Gaussian mixture
(whose noised marginals are known in closed form), guidance on analytic cases, and the eps loss."""

from __future__ import annotations

import math

import pytest
import torch

from ld.diffusion import NoiseSchedule, cfg_eps, energy_guided, eps_loss, sample, timesteps

torch.set_num_threads(1)

K = 100


class Mixture:
    """Isotropic Gaussian mixture in D dims: weights pi_j, means mu_j [J, D], stds s_j [J].

    p_k(x) = sum_j pi_j N(x; alpha_k mu_j, (alpha_k^2 s_j^2 + sigma_k^2) I), so the exact
    eps(x_k, k) = -sigma_k grad log p_k(x_k)."""

    def __init__(self, weights, means, stds):
        self.w = torch.tensor(weights, dtype=torch.float64)
        self.mu = torch.tensor(means, dtype=torch.float64).reshape(len(weights), -1)
        self.s = torch.tensor(stds, dtype=torch.float64)
        self.D = self.mu.shape[1]

    def mean(self):
        return (self.w[:, None] * self.mu).sum(0)

    def var(self):  # per-dimension variance
        second = (self.w[:, None] * (self.s[:, None] ** 2 + self.mu**2)).sum(0)
        return second - self.mean() ** 2

    def eps_fn(self, schedule: NoiseSchedule):
        def eps(x, k):
            a, s = schedule.alpha_sigma(k)                   # [B] float64
            xf = x.double().reshape(x.shape[0], -1)          # [B, D]
            v = a[:, None] ** 2 * self.s[None] ** 2 + s[:, None] ** 2                      # [B, J]
            diff = xf[:, None, :] - a[:, None, None] * self.mu[None]                        # [B, J, D]
            logp = self.w.log()[None] - 0.5 * (diff**2).sum(-1) / v - 0.5 * self.D * v.log()
            r = torch.softmax(logp, dim=1)                                                  # [B, J]
            score = -(r[..., None] * diff / v[..., None]).sum(1)                            # [B, D]
            return (-s[:, None] * score).reshape(x.shape).to(x.dtype)

        return eps


MIX1 = Mixture([0.3, 0.7], [[-2.0], [1.5]], [0.4, 0.6])
MIX2 = Mixture([0.5, 0.25, 0.25], [[0.0, 2.0], [-1.5, -1.0], [2.0, -1.0]], [0.5, 0.3, 0.4])


def _check_mixture(x, mix, mean_tol, var_rtol, weight_tol):
    x = x.double().reshape(x.shape[0], -1)
    assert torch.isfinite(x).all()
    assert torch.allclose(x.mean(0), mix.mean(), atol=mean_tol), (x.mean(0), mix.mean())
    assert torch.allclose(x.var(0), mix.var(), rtol=var_rtol), (x.var(0), mix.var())
    # mixture weights: assign each sample to its nearest mode
    nearest = torch.cdist(x, mix.mu).argmin(1)
    frac = torch.bincount(nearest, minlength=len(mix.w)).double() / x.shape[0]
    assert torch.allclose(frac, mix.w, atol=weight_tol), (frac, mix.w)


# var_rtol carries each sampler's known discretisation bias (all *under*-estimate the variance): DDPM at
# K = 100 ~ -2%, respaced DDPM at 25 steps and DDIM at 20 steps ~ -7%, DDIM at 50 ~ -3%, DPM-Solver++ < 1%.
@pytest.mark.parametrize(
    "name,steps,mix,n,var_rtol",
    [
        ("ddpm", None, MIX1, 10000, 0.05),
        ("ddpm", None, MIX2, 6000, 0.05),
        ("ddpm", 25, MIX1, 10000, 0.10),
        ("ddim", 20, MIX1, 10000, 0.10),
        ("ddim", 50, MIX2, 6000, 0.06),
        ("dpm_solver", 10, MIX1, 10000, 0.05),
        ("dpm_solver", 20, MIX2, 6000, 0.04),
    ],
)
def test_samplers_recover_mixture(name, steps, mix, n, var_rtol):
    sched = NoiseSchedule(K)
    g = torch.Generator().manual_seed(0)
    x = sample(mix.eps_fn(sched), (n, 1, mix.D), sched, name=name, steps=steps, generator=g)
    assert x.shape == (n, 1, mix.D) and x.dtype == torch.float32
    _check_mixture(x, mix, mean_tol=0.06, var_rtol=var_rtol, weight_tol=0.025)


def test_dpm_solver_converges_faster_than_ddim():
    """Both integrate the same probability-flow ODE from the same x_T; DPM-Solver++(2M) is second order."""
    sched = NoiseSchedule(K)
    eps = MIX2.eps_fn(sched)
    xT = torch.randn(2000, 1, 2, generator=torch.Generator().manual_seed(1))
    ref = sample(eps, xT.shape, sched, name="dpm_solver", steps=K, x_T=xT)
    err = {}
    for name in ("ddim", "dpm_solver"):
        for S in (10, 20):
            err[name, S] = (sample(eps, xT.shape, sched, name=name, steps=S, x_T=xT) - ref).abs().mean().item()
    assert err["dpm_solver", 10] < 0.6 * err["ddim", 10], err
    assert err["dpm_solver", 20] < 0.6 * err["ddim", 20], err
    assert err["dpm_solver", 20] < 0.5 * err["dpm_solver", 10], err
    # and DDIM with all K steps agrees with the reference ODE solution
    assert (sample(eps, xT.shape, sched, name="ddim", x_T=xT) - ref).abs().mean() < 0.02


def _ddpm_gaussian_moments(sched, m, s, temperature, steps=None):
    """For data N(m, s^2) and the exact eps, the DDPM chain is linear-Gaussian: x_prev = c_x0 x0_hat + c_xt x
    + std z with x0_hat = m + a s^2 / v (x - a m). Its output mean and variance follow by recursion
    (written here independently of the sampler, from the respaced abar's)."""
    ts = timesteps(sched.K, steps)
    M, V = 0.0, 1.0
    for i, t in enumerate(ts):
        abt = sched.alpha_bars[t].item()
        abp = sched.alpha_bars[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
        beta = 1 - abt / abp
        a, sig2 = math.sqrt(abt), 1 - abt
        v = a * a * s * s + sig2
        c_x0, c_xt = beta * math.sqrt(abp) / sig2, (1 - abp) * math.sqrt(1 - beta) / sig2
        gain = c_x0 * a * s * s / v + c_xt
        M = c_x0 * (m - a * s * s / v * a * m) + gain * M
        V = gain**2 * V + temperature * beta * (1 - abp) / sig2
    return M, V


@pytest.mark.parametrize("temperature,steps", [(1.0, None), (0.5, None), (1.0, 20)])
def test_ddpm_matches_exact_chain(temperature, steps):
    """A sharp check of the DDPM update itself: on a Gaussian its output law is known exactly (including
    DDPM's own variance shrinkage at finite K, ~-8% for s = 0.4 at K = 100, and the temperature)."""
    sched = NoiseSchedule(K)
    m, s = 1.0, 0.4
    M, V = _ddpm_gaussian_moments(sched, m, s, temperature, steps)
    x = sample(Mixture([1.0], [[m]], [s]).eps_fn(sched), (20000, 1, 1), sched, steps=steps,
               temperature=temperature, generator=torch.Generator().manual_seed(0)).double()
    assert abs(x.mean().item() - M) < 0.01
    assert abs(x.var().item() / V - 1) < 0.03, (x.var().item(), V)


def test_low_temperature_lowers_variance():
    sched = NoiseSchedule(K)
    gauss = Mixture([1.0], [[0.5]], [1.0])
    var = {}
    for t in (1.0, 0.5, 0.0):
        x = sample(gauss.eps_fn(sched), (8000, 1, 1), sched, temperature=t, generator=torch.Generator().manual_seed(0))
        var[t] = x.var().item()
        assert abs(x.mean().item() - 0.5) < 0.05
    assert abs(var[1.0] - 1.0) < 0.06
    assert var[0.0] < var[0.5] < 0.85 * var[1.0], var


def test_schedule_tables():
    for kind in ("cosine", "linear"):
        s = NoiseSchedule(K, kind)
        assert s.betas.shape == (K,) and s.betas.dtype == torch.float64
        assert (s.betas > 0).all() and (s.betas <= 0.999).all()
        assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()
        assert s.alpha_bars[0] > 0.99 and s.alpha_bars[-1] < 1e-3
        k = torch.arange(K)
        a, sig = s.alpha_sigma(k)
        assert torch.allclose(a**2 + sig**2, torch.ones(K, dtype=torch.float64))
        x0, noise = torch.randn(K, 3, 2), torch.randn(K, 3, 2)
        xk = s.q_sample(x0, k, noise)
        assert xk.dtype == x0.dtype
        assert torch.allclose(xk, a.float()[:, None, None] * x0 + sig.float()[:, None, None] * noise)
    with pytest.raises(ValueError):
        NoiseSchedule(10, "sigmoid")


def test_timesteps_and_validation():
    assert timesteps(100) == list(range(99, -1, -1))
    ts = timesteps(100, 10)
    assert ts[0] == 99 and ts[-1] == 0 and len(set(ts)) == 10 and ts == sorted(ts, reverse=True)
    assert timesteps(100, 1) == [99]
    sched = NoiseSchedule(10)
    eps = MIX1.eps_fn(sched)
    with pytest.raises(ValueError, match="allowed"):
        sample(eps, (4, 1, 1), sched, name="euler")
    with pytest.raises(ValueError, match="1..10"):
        sample(eps, (4, 1, 1), sched, steps=11)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm_solver"])
def test_deterministic_and_trajectory(name):
    sched = NoiseSchedule(20)
    eps = MIX1.eps_fn(sched)
    a = sample(eps, (64, 3, 1), sched, name=name, steps=8, temperature=0.5, generator=torch.Generator().manual_seed(3))
    b, traj = sample(eps, (64, 3, 1), sched, name=name, steps=8, temperature=0.5,
                     generator=torch.Generator().manual_seed(3), return_trajectory=True)
    assert torch.equal(a, b)
    assert traj.shape == (9, 64, 3, 1) and torch.equal(traj[-1], b)
    c = sample(eps, (64, 3, 1), sched, name=name, steps=8, x_T=traj[0], temperature=0.5,
               generator=torch.Generator().manual_seed(4))
    if name != "ddpm":  # deterministic given x_T
        assert torch.equal(c, b)
    clipped = sample(eps, (64, 3, 1), sched, name=name, steps=8, clip_x0=0.5,
                     generator=torch.Generator().manual_seed(3))
    assert clipped.abs().max() <= 0.5 + 1e-6


# ----------------------------------------------------------------------------------------------------
# classifier-free guidance


class TinyCond(torch.nn.Module):
    """A conditional eps-model honouring the interface; the condition enters through cond * cond_mask."""

    def __init__(self, C=2, cond_dim=3):
        super().__init__()
        self.lin = torch.nn.Linear(C + cond_dim + 1, C)
        self.calls = 0

    def forward(self, x, k, cond, cond_mask):
        self.calls += 1
        B, N, _ = x.shape
        c = torch.zeros(B, self.lin.in_features - x.shape[-1] - 1) if cond is None else cond * cond_mask[:, None]
        h = torch.cat([x, c[:, None].expand(B, N, -1), k.float()[:, None, None].expand(B, N, 1) / 10], -1)
        return torch.tanh(self.lin(h)) + 0.3 * x


def test_cfg_endpoints_exact_on_a_model():
    torch.manual_seed(0)
    model = TinyCond()
    x, k, cond = torch.randn(5, 4, 2), torch.randint(0, 10, (5,)), torch.randn(5, 3)
    eps_u = model(x, k, cond, torch.zeros(5))
    eps_c = model(x, k, cond, torch.ones(5))
    assert not torch.allclose(eps_u, eps_c)
    assert torch.equal(cfg_eps(model, cond, 0.0)(x, k), eps_u)
    assert torch.equal(cfg_eps(model, cond, 1.0)(x, k), eps_c)
    model.calls = 0
    g = cfg_eps(model, cond, 1.5)(x, k)
    assert model.calls == 1  # one doubled batch
    assert torch.allclose(g, eps_u + 1.5 * (eps_c - eps_u), atol=1e-6)


def test_cfg_with_exact_scores():
    """cond selects mixture component j (exact conditional eps); the null condition is the whole mixture.
    w = 1 samples the component, w = 0 the mixture."""
    sched = NoiseSchedule(K)
    eps_mix = MIX1.eps_fn(sched)
    comps = [Mixture([1.0], [MIX1.mu[j].tolist()], [MIX1.s[j].item()]) for j in range(2)]
    eps_comp = [c.eps_fn(sched) for c in comps]

    def model(x, k, cond, cond_mask):  # cond [B, 1] holds the component index
        j = cond[:, 0].long().view(-1, 1, 1)
        e_c = torch.where(j == 0, eps_comp[0](x, k), eps_comp[1](x, k))
        m = cond_mask.view(-1, 1, 1)
        return m * e_c + (1 - m) * eps_mix(x, k)

    n = 6000
    cond = torch.zeros(n, 1)
    cond[n // 2:] = 1
    # (DPM-Solver++ with 50 steps: at 20 uniform steps it overshoots a narrow (s = 0.4) Gaussian's std by ~6%)
    for w, name in ((1.0, "ddpm"), (1.0, "dpm_solver"), (0.0, "dpm_solver")):
        x = sample(cfg_eps(model, cond, w), (n, 1, 1), sched, name=name, steps=None if name == "ddpm" else 50,
                   generator=torch.Generator().manual_seed(0)).double()
        if w == 1.0:
            for j, half in enumerate((x[: n // 2], x[n // 2:])):
                assert abs(half.mean() - comps[j].mu.item()) < 0.04
                # DDPM at K = 100 shrinks a narrow component's std by ~4% (see test_ddpm_matches_exact_chain)
                assert abs(half.std() / comps[j].s.item() - 1) < (0.07 if name == "ddpm" else 0.03)
        else:
            _check_mixture(x, MIX1, mean_tol=0.08, var_rtol=0.05, weight_tol=0.03)


# ----------------------------------------------------------------------------------------------------
# energy guidance


@pytest.mark.parametrize("name,steps", [("ddpm", None), ("dpm_solver", 20), ("ddim", 50)])
def test_energy_guidance_exact_on_gaussian(name, steps):
    """prior N(m, s^2 I), E(x) = c.x: the tilted prior * exp(-beta E) is N(m - beta s^2 c, s^2 I). With
    x0 | x_k ~ N(m + a s^2 / v (x_k - a m), s^2 sigma^2 / v), v = a^2 s^2 + sigma^2, the intermediate energy
    f_k(x_k) = log E[exp(-beta c.x0) | x_k] has grad -beta a s^2 / v c, and score + grad f is exact."""
    sched = NoiseSchedule(K)
    m, s, beta = torch.tensor([0.5, -1.0]), 0.7, 2.0
    c = torch.tensor([1.0, -0.5])
    prior = Mixture([1.0], [m.tolist()], [s])

    def grad_fn(x, k):
        # the real planner differentiates f with autograd: do the same on the analytic f
        a, sig = (t.float().view(-1, 1, 1) for t in sched.alpha_sigma(k))
        x = x.requires_grad_(True)
        v = a**2 * s**2 + sig**2
        post_mean = m + a * s**2 / v * (x - a * m)
        post_var = s**2 * sig**2 / v
        f = (-beta * (c * post_mean).sum(-1) + 0.5 * beta**2 * (c**2).sum() * post_var[..., 0]).sum()
        return torch.autograd.grad(f, x)[0]

    n = 8000
    eps = energy_guided(prior.eps_fn(sched), grad_fn, sched, scale=1.0)
    x = sample(eps, (n, 1, 2), sched, name=name, steps=steps, generator=torch.Generator().manual_seed(0))
    x = x.double().reshape(n, 2)
    target = (m - beta * s**2 * c).double()
    assert torch.allclose(x.mean(0), target, atol=0.03), (x.mean(0), target)
    # absolute std within the samplers' own discretisation error on a Gaussian (DDPM ~ -2.5%, DPM-Solver++
    # at 20 uniform steps ~ +3% for s = 0.7)
    assert ((x.std(0) / s > 0.95) & (x.std(0) / s < 1.05)).all(), x.std(0) / s
    # relative to the unguided prior from the same noise, a linear energy is a pure shift by -beta s^2 c
    x0 = sample(energy_guided(prior.eps_fn(sched), grad_fn, sched, 0.0), (n, 1, 2), sched, name=name, steps=steps,
                generator=torch.Generator().manual_seed(0)).double().reshape(n, 2)
    assert torch.allclose(x0.mean(0), m.double(), atol=0.03)
    assert torch.allclose(x.mean(0) - x0.mean(0), -beta * s**2 * c.double(), atol=0.01)
    assert torch.allclose(x.std(0) / x0.std(0), torch.ones(2, dtype=torch.float64), atol=0.01)


# ----------------------------------------------------------------------------------------------------
# the eps loss


class TinyMLP(torch.nn.Module):
    def __init__(self, C=1, K=K, hidden=64):
        super().__init__()
        self.K = K
        self.net = torch.nn.Sequential(torch.nn.Linear(C + 2, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.SiLU(), torch.nn.Linear(hidden, C))

    def forward(self, x, k, cond, cond_mask):
        t = (k.float() / self.K).view(-1, 1, 1).expand(*x.shape[:2], 1)
        return self.net(torch.cat([x, torch.sin(3 * t), torch.cos(3 * t)], -1))


def test_eps_loss_trains_a_tiny_model():
    torch.manual_seed(0)
    sched = NoiseSchedule(K)
    model = TinyMLP()
    data_g = torch.Generator().manual_seed(1)
    comp = (torch.rand(4096, generator=data_g) < 0.7).long()
    data = (MIX1.mu[comp, 0] + MIX1.s[comp] * torch.randn(4096, generator=data_g, dtype=torch.float64)).float()
    data = data.view(-1, 1, 1)

    def eval_loss():
        with torch.no_grad():
            g = torch.Generator().manual_seed(123)
            total = sum(eps_loss(model, data[i * 512:(i + 1) * 512], None, sched, 0.0, generator=g) for i in range(8))
            return total.item() / 8

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(2)
    for step in range(300):
        idx = torch.randint(0, 4096, (128,), generator=g)
        loss = eps_loss(model, data[idx], None, sched, 0.0, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.75 * before, (before, after)


def test_eps_loss_dropout_rate_and_mask():
    sched = NoiseSchedule(10)
    seen = {}

    def spy(x, k, cond, cond_mask):
        seen.update(k=k, cond_mask=cond_mask, x=x)
        return torch.zeros_like(x)

    x0, cond = torch.randn(20000, 2, 1), torch.randn(20000, 3)
    loss = eps_loss(spy, x0, cond, sched, 0.25, generator=torch.Generator().manual_seed(0))
    m = seen["cond_mask"]
    assert m.shape == (20000,) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs((m == 0).float().mean().item() - 0.25) < 0.015
    assert seen["k"].min() == 0 and seen["k"].max() == 9 and seen["k"].dtype == torch.long
    assert abs(loss.item() - 1.0) < 0.03  # zero prediction: E[eps^2] = 1
    eps_loss(spy, x0[:100], cond[:100], sched, 0.0)
    assert (seen["cond_mask"] == 1).all()
    eps_loss(spy, x0[:100], cond[:100], sched, 1.0)
    assert (seen["cond_mask"] == 0).all()
    eps_loss(spy, x0[:100], None, sched, 0.25)
    assert seen["cond_mask"] is None
    # a loss mask restricts the average to the kept elements
    def pred(x, k, c, cm):
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] + 100.0], 1)

    mask = torch.tensor([1.0, 0.0]).view(1, 2, 1)
    masked = eps_loss(pred, x0[:5000], None, sched, 0.0, generator=torch.Generator().manual_seed(0), mask=mask)
    assert abs(masked.item() - 1.0) < 0.06
