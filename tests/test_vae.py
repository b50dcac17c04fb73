"""TrajectoryVAE: non-causal encoder/decoder, pooling/tiling shapes, masking, decode, and that it learns."""

from __future__ import annotations

import math

import pytest
import torch

from ld.config import VAEConfig
from ld.models.mlp import InverseDynamics, ValueHead, mlp
from ld.models.transformer import Transformer
from ld.models.vae import TrajectoryVAE

torch.set_num_threads(1)

OBS, ACT = 4, 2


def tiny_cfg(**kw) -> VAEConfig:
    base = dict(embed_dim=32, n_layers=2, n_heads=2, latent_dim=4, dropout=0.0, id_hidden=64, value_hidden=64)
    base.update(kw)
    return VAEConfig(**base)


def random_batch(b: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "states": torch.randn(b, t, OBS, generator=g),
        "actions": torch.randn(b, t, ACT, generator=g),
        "rewards": torch.randn(b, t, generator=g),
        "returns": torch.randn(b, t, generator=g),
        "mask": torch.ones(b, t),
    }


def point_mass_dataset(n: int = 64, t: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Smooth 2-D point-mass trajectories: s = (x, y, vx, vy), a = smooth force, r = -|pos - goal|."""
    g = torch.Generator().manual_seed(seed)
    dt, gamma = 0.1, 0.99
    freq = 0.5 + torch.rand(n, 1, 2, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, 2, generator=g)
    amp = torch.randn(n, 1, 2, generator=g)
    time = torch.arange(t, dtype=torch.float32).view(1, t, 1)
    actions = amp * torch.sin(freq * time * dt * 2 * math.pi + phase)
    pos = torch.randn(n, 2, generator=g) * 0.5
    vel = torch.randn(n, 2, generator=g) * 0.3
    states = []
    for i in range(t):
        states.append(torch.cat([pos, vel], dim=-1))
        vel = vel + dt * actions[:, i]
        pos = pos + dt * vel
    states = torch.stack(states, dim=1)
    rewards = -states[..., :2].norm(dim=-1)
    returns = torch.zeros_like(rewards)
    acc = torch.zeros(n)
    for i in reversed(range(t)):
        acc = rewards[:, i] + gamma * acc
        returns[:, i] = acc

    def norm(x: torch.Tensor) -> torch.Tensor:  # the caller's job in the real pipeline
        dims = tuple(range(x.dim() - 1)) if x.dim() == 3 else (0, 1)
        return (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True)

    return {
        "states": norm(states),
        "actions": norm(actions),
        "rewards": norm(rewards),
        "returns": norm(returns),
        "mask": torch.ones(n, t),
    }


# ----------------------------------------------------------------------------------------------------


def test_mlp_and_heads_shapes():
    net = mlp(5, 16, 2, 3, act="mish")
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3  # 2 hidden layers + output
    assert net(torch.randn(7, 5)).shape == (7, 3)
    with pytest.raises(ValueError, match="activation"):
        mlp(5, 16, 2, 3, act="tanh")
    inv = InverseDynamics(OBS, ACT, hidden=32)
    assert inv(torch.randn(2, 9, OBS), torch.randn(2, 9, OBS)).shape == (2, 9, ACT)
    r, g = ValueHead(OBS, ACT, hidden=32)(torch.randn(2, 9, OBS), torch.randn(2, 9, ACT))
    assert r.shape == g.shape == (2, 9)


def test_transformer_is_bidirectional():
    torch.manual_seed(0)
    net = Transformer(16, 2, 4, 0.0).eval()
    x = torch.randn(1, 6, 16, requires_grad=True)
    (net(x)[0, 0] * torch.randn(16)).sum().backward()  # the first output token ... (a plain sum of a
    # LayerNorm output is constant, hence the random projection)
    assert x.grad[0, -1].abs().sum() > 0  # ... depends on the last input token


def test_encoder_and_decoder_are_non_causal():
    torch.manual_seed(0)
    vae = TrajectoryVAE(OBS, ACT, horizon=12, latent_step=3, cfg=tiny_cfg()).eval()
    batch = random_batch(2, 12)
    mean, logvar = vae.encode(batch["states"], batch["actions"], batch["rewards"], batch["returns"])
    late = {k: v.clone() for k, v in batch.items()}
    late["returns"][:, -1] += 5.0  # last time step only
    mean2, logvar2 = vae.encode(late["states"], late["actions"], late["rewards"], late["returns"])
    assert (mean2[:, 0] - mean[:, 0]).abs().max() > 1e-5
    assert (logvar2[:, 0] - logvar[:, 0]).abs().max() > 1e-5

    z = torch.randn(2, 4, 4)
    s1 = batch["states"][:, 0]
    z2 = z.clone()
    z2[:, -1] += 1.0  # last latent only
    diff = (vae.decode_states(z2, s1)[:, 0] - vae.decode_states(z, s1)[:, 0]).abs().max()
    assert diff > 1e-5


@pytest.mark.parametrize("latent_step,horizon", [(1, 5), (2, 8), (3, 12), (3, 9), (4, 16)])
def test_pooling_and_tiling_shapes(latent_step, horizon):
    vae = TrajectoryVAE(OBS, ACT, horizon=horizon, latent_step=latent_step, cfg=tiny_cfg()).eval()
    n = horizon // latent_step
    assert vae.latent_shape == (n, 4)
    batch = random_batch(3, horizon)
    mean, logvar = vae.encode(batch["states"], batch["actions"], batch["rewards"], batch["returns"])
    assert mean.shape == logvar.shape == (3, n, 4)
    assert vae.decode_states(mean, batch["states"][:, 0]).shape == (3, horizon, OBS)
    # a shorter window (a multiple of L) is accepted too
    if n > 1:
        short = random_batch(3, horizon - latent_step)
        m2, _ = vae.encode(short["states"], short["actions"], short["rewards"], short["returns"])
        assert m2.shape == (3, n - 1, 4)


def test_window_not_multiple_of_latent_step_raises():
    with pytest.raises(ValueError, match=r"\(10\).*\(3\)"):
        TrajectoryVAE(OBS, ACT, horizon=10, latent_step=3, cfg=tiny_cfg())
    vae = TrajectoryVAE(OBS, ACT, horizon=12, latent_step=3, cfg=tiny_cfg())
    b = random_batch(2, 11)
    with pytest.raises(ValueError, match=r"\(11\).*\(3\)"):
        vae.encode(b["states"], b["actions"], b["rewards"], b["returns"])
    with pytest.raises(ValueError, match=r"\(10\).*\(4\)"):
        TrajectoryVAE(OBS, ACT, horizon=10, latent_step=4, cfg=tiny_cfg())


def test_masked_steps_do_not_affect_the_loss():
    torch.manual_seed(0)
    vae = TrajectoryVAE(OBS, ACT, horizon=12, latent_step=3, cfg=tiny_cfg()).eval()
    batch = random_batch(3, 12)
    batch["mask"][0, 8:] = 0.0
    batch["mask"][2, 5:] = 0.0
    loss_a, m_a = vae.loss(batch, generator=torch.Generator().manual_seed(1))

    changed = {k: v.clone() for k, v in batch.items()}
    pad = changed["mask"] == 0
    for key in ("states", "actions"):
        changed[key][pad] = 100.0 * torch.randn_like(changed[key][pad])
    changed["rewards"][pad] = 1e3
    changed["returns"][pad] = float("nan")
    loss_b, m_b = vae.loss(changed, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(loss_b)
    assert torch.allclose(loss_a, loss_b, atol=1e-6, rtol=1e-6)
    for key in m_a:
        assert m_a[key] == pytest.approx(m_b[key], rel=1e-5, abs=1e-7)

    # a real step does matter (the check above is not vacuous)
    real = {k: v.clone() for k, v in batch.items()}
    real["states"][0, 3] += 1.0
    loss_c, _ = vae.loss(real, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(loss_a, loss_c)


def test_loss_metrics_and_skill_mode_without_rewards():
    vae = TrajectoryVAE(OBS, ACT, horizon=6, latent_step=2, cfg=tiny_cfg(), use_rewards=False)
    batch = random_batch(2, 6)
    loss, metrics = vae.loss(batch)
    assert set(metrics) == {"recon", "recon_actions", "inv_dyn", "value", "kl", "total"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["total"] == pytest.approx(loss.item())
    # skill tokens are (s, a) only: rewards and returns are not needed to encode
    mean, _ = vae.encode(batch["states"], batch["actions"])
    assert mean.shape == (2, 3, 4)
    no_r = {k: batch[k] for k in ("states", "actions", "mask")}
    _, metrics = vae.loss(no_r)
    assert metrics["value"] == 0.0


def test_reconstruction_covers_the_decoded_actions():
    """The paper's x_hat_t includes a_hat_t: the action decoder (inverse dynamics) applied to the *decoded*
    states. Its error is in the loss, and its gradient reaches the state decoder."""
    torch.manual_seed(0)
    vae = TrajectoryVAE(OBS, ACT, horizon=6, latent_step=2, cfg=tiny_cfg())
    batch = random_batch(3, 6)
    _, m = vae.loss(batch, generator=torch.Generator().manual_seed(0))
    # the same z (same generator) by hand: f(s_hat_t, s_hat_t+1) against a_t
    mean, logvar = vae.encode(batch["states"], batch["actions"], batch["rewards"], batch["returns"],
                              mask=batch["mask"])
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    s_hat, _, _ = vae.reconstruct(mean + torch.exp(0.5 * logvar) * eps, batch["states"][:, 0])
    pair = batch["mask"][:, :-1] * batch["mask"][:, 1:]
    err = ((vae.inverse_dynamics(s_hat[:, :-1], s_hat[:, 1:]) - batch["actions"][:, :-1]) ** 2).mean(-1)
    term = (err * pair).sum() / pair.sum()
    assert m["recon_actions"] == pytest.approx(term.detach().item(), rel=1e-5) and m["recon_actions"] > 0
    term.backward()  # the decoded-action error alone trains the state decoder (and the encoder)
    assert vae.to_state.weight.grad.abs().sum() > 0 and vae.to_latent.weight.grad.abs().sum() > 0


def test_decode_shapes_and_differentiable_in_z():
    torch.manual_seed(0)
    vae = TrajectoryVAE(OBS, ACT, horizon=12, latent_step=3, cfg=tiny_cfg()).eval()
    z = torch.randn(5, *vae.latent_shape, requires_grad=True)
    out = vae.decode(z, torch.randn(5, OBS))
    assert out["states"].shape == (5, 12, OBS)
    assert out["actions"].shape == (5, 12, ACT)
    assert out["rewards"].shape == out["q"].shape == (5, 12)
    # the last step reuses the previous action
    assert torch.equal(out["actions"][:, -1], out["actions"][:, -2])
    out["q"].sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def _train(vae: TrajectoryVAE, data: dict[str, torch.Tensor], steps: int, lr: float = 2e-3) -> None:
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    vae.train()
    for _ in range(steps):
        loss, _ = vae.loss(data, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()


@pytest.mark.parametrize("use_rewards", [True, False])
def test_vae_reconstructs_a_tiny_dataset(use_rewards):
    torch.manual_seed(0)
    data = point_mass_dataset(64, 12)
    vae = TrajectoryVAE(OBS, ACT, horizon=12, latent_step=3, cfg=tiny_cfg(), use_rewards=use_rewards)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        _, before = vae.eval().loss(data, generator=gen)
    _train(vae, data, steps=300)
    with torch.no_grad():
        _, after = vae.loss(data, generator=gen)
    assert after["recon"] < before["recon"] / 10, (before, after)
    assert after["recon"] < 0.05, after  # normalized scale: states have unit variance
    assert after["inv_dyn"] < before["inv_dyn"] / 5, (before, after)
    if use_rewards:
        assert after["value"] < before["value"] / 3, (before, after)


@pytest.mark.parametrize("use_rewards", [True, False])
def test_reward_and_return_reconstruction_trains_the_encoder(use_rewards):
    # the paper's decoder reconstructs (s, a, r, G) from (s_1, z): a loss on r and G alone must send a
    # gradient through z into the encoder (in skill space too: there z may carry what (s, a) imply about r, G)
    torch.manual_seed(0)
    vae = TrajectoryVAE(OBS, ACT, 6, 3, tiny_cfg(), use_rewards=use_rewards)
    b = random_batch(3, 6)
    mean, _ = vae.encode(b["states"], b["actions"], b["rewards"], b["returns"])
    _, r_hat, g_hat = vae.reconstruct(mean, b["states"][:, 0])
    ((r_hat - b["rewards"]) ** 2 + (g_hat - b["returns"]) ** 2).mean().backward()
    assert vae.enc_embed.weight.grad is not None and vae.enc_embed.weight.grad.abs().sum() > 0
    assert vae.to_latent.weight.grad.abs().sum() > 0
    # and decode() reads q and rewards from z: different latents, different Q at the same s_1
    z = torch.randn(2, 2, 4)
    d1, d2 = vae.decode(z, b["states"][:2, 0]), vae.decode(z + 1.0, b["states"][:2, 0])
    assert not torch.allclose(d1["q"], d2["q"])
