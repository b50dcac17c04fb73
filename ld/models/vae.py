"""Latent action representation: the trajectory VAE of LatentDiffuser (Sec. 4.1, App. E.2.1).

Tokens x_t = (s_t, a_t, r_t, G_t), already normalized by the caller. With `use_rewards=False` (the paper's
"skill space" modeling selection) the tokens are (s_t, a_t) only, so the latent carries no future-reward
information.

Encoder q_phi(z | tau): linear token embedding + learned positional embedding -> non-causal transformer
-> 1-D max pooling over time with kernel = stride = L -> linear to (mean, logvar) of N = T / L latents.

State decoder p_psi(s_{1:T} | s_1, z): each latent tiled L times back to T tokens, concatenated with s_1
(broadcast over time), linear projection, + positional embedding, non-causal transformer, linear to states.

Decoder heads, both reading the decoder's per-token features (so both are functions of (s_1, z)):
- `to_state`: a linear map to s_t;
- `value_decoder`: the reward and return decoder (paper: 3 x 1024, ReLU) -> (r_t, G_t). Its G output is the Q
  estimate of the energy E = -sum_t Q. It is trained by the same reconstruction loss as the states, so the
  gradient of the r and G errors reaches z and the encoder: the latent must carry the return information the
  paper credits for latent beating skill space (in skill space the encoder sees no r or G, so z can carry
  only what (s, a) of the window implies about them).
The action decoder is the inverse dynamics a_t = f(s_t, s_{t+1}) (the paper's modular design): the
reconstruction covers the *decoded* actions a_hat_t = f(s_hat_t, s_hat_{t+1}) too, as the paper's
x_hat_t = (s_hat_t, a_hat_t, r_hat_t, G_hat_t) says, so the decoder is trained to produce state sequences
whose actions are right -- which is what planning executes. f is also fitted on true consecutive states
(jointly here, or in its own loop with `vae.id_steps`). Without the decoded-action term the decoded next
state was accurate in state space but not in the few directions f is sensitive to: on built-in
halfcheetah-medium-expert, f's action error on (s_1, decoded s_2) was 10x its error on true pairs, and
the unguided prior scored 23-30 where BC scored 84-93 (`bench/RESULTS.md`).

Decisions the paper leaves open, settled here:
- masked steps (mask = 0, e.g. padding past an episode's end) are zeroed at the encoder input and
  excluded from every MSE, so their values cannot change the loss;
- r and G are reconstructed whenever the batch carries them, also in skill mode (the planner needs Q in
  every latent modeling selection; only the encoder's *tokens* drop r and G);
- the log-variance is clamped to [-10, 10] for numerical safety;
- the KL is summed over the N x latent_dim latent entries and averaged over the batch, then weighted
  by `cfg.kl_weight` (~1e-6 in the paper).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ld.config import VAEConfig
from ld.models.mlp import InverseDynamics, mlp
from ld.models.transformer import Transformer


class TrajectoryVAE(nn.Module):
    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        horizon: int,
        latent_step: int,
        cfg: VAEConfig,
        use_rewards: bool = True,
    ):
        super().__init__()
        if latent_step < 1 or horizon < 1:
            raise ValueError(f"horizon ({horizon}) and latent_step ({latent_step}) must be positive")
        if horizon % latent_step:
            raise ValueError(f"horizon T ({horizon}) must be a multiple of latent_step L ({latent_step})")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.horizon, self.latent_step = horizon, latent_step
        self.n_latents = horizon // latent_step
        self.latent_dim = cfg.latent_dim
        self.use_rewards = use_rewards
        self.kl_weight = cfg.kl_weight
        dim = cfg.embed_dim
        token_dim = obs_dim + act_dim + (2 if use_rewards else 0)

        # encoder q_phi
        self.enc_embed = nn.Linear(token_dim, dim)
        self.enc_pos = nn.Parameter(torch.randn(1, horizon, dim) * 0.02)
        self.enc_drop = nn.Dropout(cfg.dropout)
        self.encoder = Transformer(dim, cfg.n_layers, cfg.n_heads, cfg.dropout)
        self.to_latent = nn.Linear(dim, 2 * cfg.latent_dim)

        # state decoder p_psi
        self.dec_embed = nn.Linear(cfg.latent_dim + obs_dim, dim)
        self.dec_pos = nn.Parameter(torch.randn(1, horizon, dim) * 0.02)
        self.dec_drop = nn.Dropout(cfg.dropout)
        self.decoder = Transformer(dim, cfg.n_layers, cfg.n_heads, cfg.dropout)
        self.to_state = nn.Linear(dim, obs_dim)

        # reward/return decoder on the decoder's features, and the inverse dynamics
        self.value_decoder = mlp(dim, cfg.value_hidden, cfg.value_layers, 2, act="relu")
        self.inverse_dynamics = InverseDynamics(obs_dim, act_dim, cfg.id_hidden, cfg.id_layers)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(N, latent_dim) of one plan's latent sequence, N = horizon / latent_step."""
        return (self.n_latents, self.latent_dim)

    # ------------------------------------------------------------------------------------------------

    def _check_length(self, t: int) -> None:
        if t % self.latent_step:
            raise ValueError(
                f"window length T ({t}) must be a multiple of latent_step L ({self.latent_step})"
            )
        if t > self.horizon:
            raise ValueError(f"window length T ({t}) exceeds the model's horizon ({self.horizon})")

    def encode(
        self,
        states: Tensor,
        actions: Tensor,
        rewards: Optional[Tensor] = None,
        returns: Optional[Tensor] = None,
        mask: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor]:
        """states [B,T,obs], actions [B,T,act], rewards/returns [B,T] (ignored in skill mode), mask [B,T]
        optional (0 = padding, zeroed at the input) -> (mean, logvar), each [B, T/L, latent_dim]."""
        b, t, _ = states.shape
        self._check_length(t)
        parts = [states, actions]
        if self.use_rewards:
            if rewards is None or returns is None:
                raise ValueError("this VAE encodes rewards and returns (use_rewards=True); pass both")
            parts += [rewards.unsqueeze(-1), returns.unsqueeze(-1)]
        x = torch.cat(parts, dim=-1)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1) > 0, x, torch.zeros_like(x))
        h = self.enc_drop(self.enc_embed(x) + self.enc_pos[:, :t])
        h = self.encoder(h)  # [B, T, dim]
        h = F.max_pool1d(h.transpose(1, 2), kernel_size=self.latent_step, stride=self.latent_step)
        mean, logvar = self.to_latent(h.transpose(1, 2)).chunk(2, dim=-1)  # [B, N, d] each
        return mean, logvar.clamp(-10.0, 10.0)

    def _decoder_features(self, z: Tensor, s1: Tensor) -> Tensor:
        b, n, _ = z.shape
        t = n * self.latent_step
        self._check_length(t)
        tiled = z.repeat_interleave(self.latent_step, dim=1)  # [B, T, d]
        h = torch.cat([tiled, s1.unsqueeze(1).expand(b, t, s1.shape[-1])], dim=-1)
        h = self.dec_drop(self.dec_embed(h) + self.dec_pos[:, :t])
        return self.decoder(h)  # [B, T, dim]

    def reconstruct(self, z: Tensor, s1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z [B, N, d], s1 [B, obs] -> (states [B, T, obs], rewards [B, T], returns [B, T]), T = N * L."""
        h = self._decoder_features(z, s1)
        rg = self.value_decoder(h)
        return self.to_state(h), rg[..., 0], rg[..., 1]

    def decode_states(self, z: Tensor, s1: Tensor) -> Tensor:
        """z [B, N, d], s1 [B, obs] -> states [B, N * L, obs]."""
        return self.to_state(self._decoder_features(z, s1))

    def decode(self, z: Tensor, s1: Tensor) -> dict[str, Tensor]:
        """Latents -> full trajectory: states [B,T,obs], actions [B,T,act], rewards [B,T], q [B,T].

        Actions come from the inverse dynamics on consecutive decoded states (the last step reuses the
        previous action); rewards and q (= the decoded return G_t) from the reward/return decoder.
        Differentiable in z.
        """
        states, rewards, q = self.reconstruct(z, s1)
        if states.shape[1] > 1:
            actions = self.inverse_dynamics(states[:, :-1], states[:, 1:])
            actions = torch.cat([actions, actions[:, -1:]], dim=1)
        else:  # a single step has no successor: treat it as staying put
            actions = self.inverse_dynamics(states, states)
        return {"states": states, "actions": actions, "rewards": rewards, "q": q}

    # ------------------------------------------------------------------------------------------------

    def loss(
        self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None, inverse_dynamics: bool = True
    ) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction of (s, a, r, G) from (s_1, z) + inverse dynamics MSE on true pairs (masked) + kl_weight * KL.

        `recon` is the state MSE, `recon_actions` the MSE of the decoded actions f(s_hat_t, s_hat_{t+1}) and
        `value` the (r, G) MSE, all decoded from the same z; their sum is the reconstruction loss (a plain
        mean over all features would weight r and G by 2 / (obs + act + 2)).

        batch: states [B,T,obs], actions [B,T,act], rewards [B,T], returns [B,T], mask [B,T] (optional,
        1 = real step). Returns (total loss, metrics {recon, inv_dyn, value, kl, total}).
        """
        states, actions = batch["states"], batch["actions"]
        rewards, returns = batch.get("rewards"), batch.get("returns")
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=states.dtype, device=states.device)
        mask = mask.to(states.dtype)

        mean, logvar = self.encode(states, actions, rewards, returns, mask=mask)
        # noise is drawn on the generator's device (a CPU generator also serves a CUDA model)
        eps_device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=eps_device)
        eps = eps.to(mean.device)
        z = mean + torch.exp(0.5 * logvar) * eps
        recon_states, r_hat, g_hat = self.reconstruct(z, states[:, 0])
        pair_mask = mask[:, :-1] * mask[:, 1:]
        recon = _masked_mse(recon_states, states, mask)
        # the action decoder on the decoded states: a_hat_t = f(s_hat_t, s_hat_{t+1})
        recon_actions = _masked_mse(self.inverse_dynamics(recon_states[:, :-1], recon_states[:, 1:]),
                                    actions[:, :-1], pair_mask)

        if inverse_dynamics:  # False when the stage trains it in a loop of its own (vae.id_steps)
            pred_a = self.inverse_dynamics(states[:, :-1], states[:, 1:])
            inv_dyn = _masked_mse(pred_a, actions[:, :-1], pair_mask)
        else:
            inv_dyn = states.new_zeros(())

        if rewards is not None and returns is not None:
            pred = torch.stack([r_hat, g_hat], dim=-1)
            value = _masked_mse(pred, torch.stack([rewards, returns], dim=-1), mask)
        else:
            value = states.new_zeros(())

        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
        total = recon + recon_actions + inv_dyn + value + self.kl_weight * kl
        metrics = {
            "recon": recon.item(),
            "recon_actions": recon_actions.item(),
            "inv_dyn": inv_dyn.item(),
            "value": value.item(),
            "kl": kl.item(),
            "total": total.item(),
        }
        return total, metrics


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over feature dims, then a mask-weighted mean over (B, T); masked steps contribute nothing."""
    err = (pred - target).pow(2).mean(dim=-1)
    # where() rather than a product, so a NaN/inf in a masked target cannot leak in either
    err = torch.where(mask > 0, err, torch.zeros_like(err))
    return (err * mask).sum() / mask.sum().clamp_min(1.0)
