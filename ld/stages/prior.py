"""Stage 2 (role `prior`; stages `prior` and `raw_prior`, declared in `ld.stages.dag`): the score-based
prior p_theta(x | s_1) over the codec's sequences (latents, or raw windows).

A temporal U-Net trained with the epsilon-prediction loss over K diffusion steps; s_1 is dropped with
probability `prior.cond_dropout` so one network gives both the conditional and unconditional scores that
classifier-free guidance mixes. The training targets are the encoder means of every window, computed once.

With `prior.ema_decay` > 0 the stage keeps an exponential moving average of the U-Net's weights, as Diffuser
and Decision Diffuser do, and saves it as `model`: the weights every later stage and the planner sample from.
The last optimizer weights are saved beside it as `model_online`. The average lives in the trained module
(`EMATrainee`), so it is in the loop's mid-stage checkpoints and a resumed build continues it bit for bit.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ld.config import Config
from ld.diffusion import NoiseSchedule, eps_loss
from ld.models.unet import TemporalUNet
from ld.stages import vae as vae_stage
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.common import StageInputs
from ld.stages.data import training_data
from ld.stages.training import train_loop

NAME = "prior"


def build_model(arch: dict) -> TemporalUNet:
    p = arch["prior"]
    return TemporalUNet(arch["transition_dim"], arch["cond_dim"], dim=p["dim"], dim_mults=tuple(p["dim_mults"]),
                        embed_dim=p["embed_dim"], embed_hidden=p["embed_hidden"])


class Standardizer(nn.Module):
    """Per-channel standardization of x_0 before diffusion: the VAE's latents are not unit-scale (its KL
    weight is ~1e-6), while the noise schedule assumes data of roughly unit variance. It also keeps the
    per-channel range of the standardized training data, which samplers clip x0 predictions to. Its
    statistics are buffers, so they move with the prior."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-4))
        self.register_buffer("lo", lo.float())
        self.register_buffer("hi", hi.float())

    @classmethod
    def fit(cls, x0: torch.Tensor) -> "Standardizer":
        flat = x0.reshape(-1, x0.shape[-1])
        mean, std = flat.mean(0), flat.std(0).clamp_min(1e-4)
        z = (flat - mean) / std
        return cls(mean, std, z.min(0).values, z.max(0).values)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lo, self.hi

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def back(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def stats(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std, "lo": self.lo, "hi": self.hi}


class DiffusionPrior(nn.Module):
    """The trained prior as one module (as Diffuser's GaussianDiffusion): the eps network, its K-step noise
    schedule and the standardizer of x_0, so one `.to(device)` moves all of it. Called like the network
    (`prior(x_k, k, cond, cond_mask) -> eps`), so every sampler takes it as is."""

    def __init__(self, net: TemporalUNet, schedule: NoiseSchedule, standardizer: Standardizer,
                 x_shape: tuple[int, int]):
        super().__init__()
        self.net, self.schedule, self.standardizer = net, schedule, standardizer
        self.x_shape = tuple(x_shape)

    def forward(self, x, k, cond=None, cond_mask=None):
        return self.net(x, k, cond, cond_mask)


class EMATrainee(nn.Module):
    """The U-Net being trained (`net`, the only parameters the optimizer sees) and the moving average of its
    weights (`ema`, a frozen copy). `fold(step)` is called by the loss at the start of every step with the
    weights after `step` optimizer updates, and once after the loop (`fold(steps)`): update n >= 1 sets
    ema <- d ema + (1 - d) net with d = min(decay, (1 + n) / (10 + n)) (the warm-up of TensorFlow's
    ExponentialMovingAverage, so a short run is not dominated by its initial weights); buffers are copied."""

    def __init__(self, net: TemporalUNet, decay: float):
        super().__init__()
        self.net, self.decay = net, float(decay)
        self.ema = copy.deepcopy(net).requires_grad_(False)
        self.folded = -1

    @torch.no_grad()
    def fold(self, step: int) -> None:
        if step <= 0 or step == self.folded:
            return
        self.folded = step
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema, net = list(self.ema.parameters()), list(self.net.parameters())
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, net, alpha=1.0 - d)
        for b_ema, b_net in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b_net)


def load(artifact: Artifact) -> DiffusionPrior:
    arch = artifact.load_json("arch")
    net = build_model(arch)
    net.load_state_dict(artifact.load("model"))
    stats = artifact.load("standardizer")
    standardizer = Standardizer(stats["mean"], stats["std"], stats["lo"], stats["hi"])
    return DiffusionPrior(net, NoiseSchedule(arch["diffusion_steps"]), standardizer,
                          (arch["horizon"], arch["transition_dim"])).eval()


@torch.no_grad()
def encode_all(codec, data, device, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """x_0 and s_1 of every window, in normalized units."""
    xs, conds = [], []
    for start in range(0, data.n, chunk):
        idx = torch.arange(start, min(start + chunk, data.n)).numpy()
        batch = data.batch(idx, device)
        xs.append(codec.encode(batch).cpu())
        conds.append(batch["states"][:, 0].cpu())
    return torch.cat(xs), torch.cat(conds)


def produce(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """Encode every window with the upstream codec, standardize, and fit the eps-prediction U-Net."""
    data = training_data(cfg, inputs)
    codec = vae_stage.load_codec(inputs.upstream["codec"])
    x0, s1 = encode_all(codec, data, inputs.device)
    standardizer = Standardizer.fit(x0)
    x0 = standardizer.standardize(x0)
    torch.manual_seed(cfg.seed)
    arch = {"transition_dim": x0.shape[-1], "cond_dim": s1.shape[-1], "horizon": x0.shape[1],
            "diffusion_steps": cfg.diffusion_steps, "prior": cfg.prior.model_dump()}
    model = build_model(arch).to(inputs.device)
    schedule = NoiseSchedule(cfg.diffusion_steps)
    pc = cfg.prior
    trainee = EMATrainee(model, pc.ema_decay) if pc.ema_decay > 0 else None

    def loss_fn(step, rng, gen):
        if trainee is not None:
            trainee.fold(step)
        idx = torch.from_numpy(rng.integers(0, x0.shape[0], pc.batch_size))
        loss = eps_loss(model, x0[idx].to(inputs.device), s1[idx].to(inputs.device), schedule,
                        pc.cond_dropout, generator=gen)
        return loss, {}

    result = train_loop(model if trainee is None else trainee, loss_fn, steps=pc.steps, lr=pc.lr, seed=cfg.seed,
                        desc=NAME, log_every=cfg.train.log_every, progress=inputs.progress)
    if trainee is not None:
        trainee.fold(result.steps)
        out.save("model_online", {k: v.cpu() for k, v in model.state_dict().items()})
        model = trainee.ema
    out.save("model", {k: v.cpu() for k, v in model.state_dict().items()})
    out.save("standardizer", standardizer.stats())
    out.save_json("arch", arch)
    out.metrics.update(result.summary())
    out.metrics["history"] = result.history
    out.metrics["latent_std_mean"] = float(standardizer.std.mean())
