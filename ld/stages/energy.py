"""Stage 4 (role `energy`; stages `energy` and `raw_energy`, declared in `ld.stages.dag`): the intermediate
energy f_eta(x_k, s_1, k) that turns prior sampling into planning.

Each support sequence x0_i of an initial state s_1 is decoded to a trajectory and scored,
E_i = E(h(x0_i, s_1)) (`trajectory_energy`: -Q summed over the window, or -return for the Diffuser-style
ablation). f_eta is then trained on noised supports x_k = alpha_k x0 + sigma_k eps, one k ~ U{0..K-1}
per initial state shared by its M supports, with the loss chosen by `energy.loss`:
contrastive (eq. 8; its optimum is the exact intermediate energy, so guided sampling targets
mu(x | s_1) exp(-beta E)), E-MSE, or MSE (Diffuser's inexact regression).

Diagnostics in the manifest (and, through the pipeline, in every row of the trial): the effective sample size
of the contrastive target softmax(-beta E) over each support set, as a fraction of M (mean and 10th
percentile over support sets): near 1 the target is uniform and guidance has nothing to learn, near 1/M it is
one-hot. E-MSE is trained exactly as the paper defines it; if its loss or gradient stops being finite,
training stops there with the last finite weights and `nonfinite_step` records where.
"""

from __future__ import annotations

import torch

from ld.config import Config
from ld.models.energy import ENERGY_LOSSES, EnergyMLP, effective_sample_size
from ld.stages import prior as prior_stage
from ld.stages import vae as vae_stage
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.codec import trajectory_energy
from ld.stages.common import StageInputs
from ld.stages.training import train_loop

NAME = "energy"


def build_model(arch: dict) -> EnergyMLP:
    return EnergyMLP(arch["x_dim"], arch["cond_dim"], hidden=arch["hidden"], layers=arch["layers"],
                     diffusion_steps=arch["diffusion_steps"], x_shape=tuple(arch["x_shape"]))


def load(artifact: Artifact) -> EnergyMLP:
    model = build_model(artifact.load_json("arch"))
    model.load_state_dict(artifact.load("model"))
    return model.eval()


@torch.no_grad()
def support_energies(codec, standardizer, states: torch.Tensor, x: torch.Tensor, target: str,
                     chunk: int = 4096) -> torch.Tensor:
    """E [S, M] of every support sequence x [S, M, N, C] (prior space) given its s_1 states [S, obs]."""
    S, M = x.shape[:2]
    flat_x = x.reshape(S * M, *x.shape[2:])
    flat_s = states.repeat_interleave(M, dim=0)
    out = []
    for start in range(0, flat_x.shape[0], chunk):
        decoded = codec.decode(standardizer.back(flat_x[start:start + chunk]), flat_s[start:start + chunk])
        out.append(trajectory_energy(decoded, target))
    return torch.cat(out).reshape(S, M)


def produce(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """Score every support sequence with the trajectory energy, then fit f_eta on noised supports."""
    codec = vae_stage.load_codec(inputs.upstream["codec"])
    prior = prior_stage.load(inputs.upstream["prior"])
    schedule, standardizer = prior.schedule, prior.standardizer
    sup = inputs.upstream["support"].load("support")
    states, x = sup["states"], sup["x"]
    energies = support_energies(codec, standardizer, states, x, cfg.energy.target)
    torch.manual_seed(cfg.seed)
    ec = cfg.energy
    arch = {"x_dim": x.shape[2] * x.shape[3], "x_shape": [x.shape[2], x.shape[3]], "cond_dim": states.shape[1],
            "hidden": ec.hidden, "layers": ec.layers, "diffusion_steps": schedule.K}
    model = build_model(arch).to(inputs.device)
    loss_of = ENERGY_LOSSES[ec.loss]
    S = states.shape[0]
    dev = inputs.device

    def loss_fn(step, rng, gen):
        idx = torch.from_numpy(rng.integers(0, S, min(ec.batch_size, S)))
        x0, s1, e = x[idx].to(dev), states[idx].to(dev), energies[idx].to(dev)
        k = torch.randint(0, schedule.K, (len(idx),), generator=gen).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        alpha, sigma = schedule.alpha_sigma(k)
        xk = alpha.float()[:, None, None, None] * x0 + sigma.float()[:, None, None, None] * noise
        M = x0.shape[1]
        f = model(xk, s1[:, None].expand(-1, M, -1), k[:, None].expand(-1, M))
        return loss_of(f, e, cfg.beta), {}

    emse = ec.loss == "emse"
    result = train_loop(model, loss_fn, steps=ec.steps, lr=ec.lr, seed=cfg.seed, desc=NAME,
                        log_every=cfg.train.log_every, progress=inputs.progress,
                        grad_clip=None if emse else 1.0, nonfinite="stop" if emse else "raise")
    out.save("model", {k: v.cpu() for k, v in model.state_dict().items()})
    out.save_json("arch", arch)
    out.metrics.update(result.summary())
    out.metrics["history"] = result.history
    out.metrics.update(energy_diagnostics(energies, cfg.beta))


def energy_diagnostics(energies: torch.Tensor, beta: float) -> dict[str, float]:
    """Summary of the support energies E [S, M] and of the contrastive target they give at this beta."""
    ess = effective_sample_size(energies, beta)
    spread = energies.max(1).values - energies.min(1).values
    return {"energy_mean": float(energies.mean()), "energy_spread_mean": float(spread.mean()),
            "target_ess_mean": float(ess.mean()), "target_ess_p10": float(torch.quantile(ess, 0.1)),
            "support_size": int(energies.shape[1])}
