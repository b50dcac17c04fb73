"""Critic stage: IQL's Q(s, a) fitted on the data's transitions, for `planning.selection=critic`.

It reads only the data and its own `critic.*` fields (no codec, no prior), so one critic serves every trial
of a suite that shares the dataset and seed, as BC does. Transitions are (s_t, a_t, r_t, s_t+1) within each
episode; an episode's last step bootstraps nothing when it ended in a terminal state (a fall) and is dropped
when it was cut by a time limit or the end of the data (there is no s_t+1 to bootstrap from, and a time limit
is not part of the task). Rewards are scaled as IQL does on D4RL locomotion, by 1000 / (the spread of the
episodes' returns), so that one set of hyperparameters fits datasets whose returns differ by 100x.
"""

from __future__ import annotations

import numpy as np
import torch

from ld.config import Config
from ld.models.critic import IQLCritic
from ld.stages.artifact import Artifact, ArtifactWriter
from ld.stages.common import StageInputs
from ld.stages.training import train_loop

NAME = "critic"


def transitions(dataset) -> dict[str, np.ndarray]:
    """The bootstrappable transitions of every episode (see the module doc), float32."""
    s, a, r, s2, nd = [], [], [], [], []
    for e in dataset.episodes:
        n = len(e)
        keep = n if e.terminal else n - 1
        if keep <= 0:
            continue
        obs = e.observations
        nxt = np.concatenate([obs[1:], obs[-1:]])  # the terminal step's s' is never read (not_done = 0)
        s.append(obs[:keep])
        a.append(e.actions[:keep])
        r.append(e.rewards[:keep])
        s2.append(nxt[:keep])
        done = np.zeros(keep, dtype=np.float32)
        if e.terminal:
            done[-1] = 1.0
        nd.append(1.0 - done)
    if not s:
        raise ValueError("the critic needs at least one transition with a next state; every episode has length 1")
    cat = lambda xs: np.concatenate(xs).astype(np.float32)  # noqa: E731
    return {"s": cat(s), "a": cat(a), "r": cat(r), "s_next": cat(s2), "not_done": cat(nd)}


def reward_scale(dataset) -> float:
    """IQL's D4RL locomotion scale, 1000 / (max - min episode return); 1 when every episode returns the same."""
    returns = np.array([float(e.rewards.sum()) for e in dataset.episodes])
    spread = float(returns.max() - returns.min()) if len(returns) else 0.0
    return 1000.0 / spread if spread > 1e-6 else 1.0


def produce(cfg: Config, inputs: StageInputs, out: ArtifactWriter) -> None:
    """Fit IQL's twin Q and V for `critic.steps` Adam steps (targets Polyak-averaged after every step)."""
    ds, c, dev = inputs.dataset, cfg.critic, inputs.device
    tr = transitions(ds)
    scale = reward_scale(ds)
    s_mean, s_std = tr["s"].mean(0), np.maximum(tr["s"].std(0), 1e-3)
    a_mean, a_std = tr["a"].mean(0), np.maximum(tr["a"].std(0), 1e-3)
    torch.manual_seed(cfg.seed)
    arch = {"obs_dim": ds.obs_dim, "act_dim": ds.act_dim, "hidden": c.hidden, "layers": c.layers}
    critic = IQLCritic(**arch).to(dev)
    critic.set_standardization(s_mean, s_std, a_mean, a_std)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32, device=dev)

    s, s2 = t((tr["s"] - s_mean) / s_std), t((tr["s_next"] - s_mean) / s_std)
    a, r, nd = t((tr["a"] - a_mean) / a_std), t(tr["r"] * scale), t(tr["not_done"])
    n = s.shape[0]

    def loss_fn(step, rng, gen):
        if step > 0:  # the previous step's update is in: move the targets towards it
            critic.update_targets(c.target_update)
        idx = torch.from_numpy(rng.integers(0, n, c.batch_size)).to(dev)
        return critic.loss(s[idx], a[idx], r[idx], s2[idx], nd[idx], c.discount, c.expectile)

    result = train_loop(critic, loss_fn, steps=c.steps, lr=c.lr, seed=cfg.seed, desc=NAME,
                        log_every=max(1, c.steps // 50), progress=inputs.progress, grad_clip=None)
    critic.update_targets(c.target_update)
    out.save("model", {k: v.cpu() for k, v in critic.state_dict().items()})
    out.save_json("arch", arch)
    out.save_json("reward_scale", {"scale": scale})
    out.metrics.update(result.summary())
    out.metrics["history"] = result.history
    out.metrics["transitions"] = int(n)
    out.metrics["reward_scale"] = scale


def load(artifact: Artifact) -> IQLCritic:
    critic = IQLCritic(**artifact.load_json("arch"))
    critic.load_state_dict(artifact.load("model"))
    return critic.eval()
