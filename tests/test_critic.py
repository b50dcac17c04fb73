"""The IQL critic (`ld.models.critic`, `ld.stages.critic`) and selection by it (`planning.selection=critic`).

- the expectile loss is minimized by the expectile (0.5: the mean; higher: towards the maximum);
- transitions bootstrap within an episode, stop at a terminal step and drop a time-limited last step;
- fitted on data where one action pays more, Q ranks that action first in every state, by about the reward gap;
- `decode_tail` with `critic` keeps, per observation, the candidate whose first action (the executed pair)
  the critic values most, whatever its decoded energy says; the planner and the fast path do the same on a
  tiny trained pipeline, and the critic stage enters the plan and the baseline-reuse key only when it selects.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from maze_helpers import tiny_trained_maze

from ld.config import resolve
from ld.data.types import DatasetInfo, Episode, EpisodeDataset
from ld.models.critic import IQLCritic, expectile_loss
from ld.planning.plan import decode_tail
from ld.stages import critic as critic_stage
from ld.stages import dag
from ld.stages.artifact import ArtifactStore
from ld.stages.common import StageInputs, build_stage


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_is_minimized_by_the_expectile(tau):
    x = torch.tensor([0.0, 1.0, 2.0, 10.0])
    c = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([c], lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        expectile_loss(x - c, tau).backward()
        opt.step()
    # the tau-expectile e solves sum_i |tau - 1(x_i < e)| (x_i - e) = 0
    w = torch.where(x > c.detach(), tau, 1 - tau)
    assert abs(float((w * (x - c.detach())).sum())) < 1e-3
    if tau == 0.5:
        assert float(c.detach()) == pytest.approx(float(x.mean()), abs=1e-3)
    else:
        assert float(x.mean()) < float(c.detach()) < float(x.max())


def _info(name="toy"):
    return DatasetInfo(name=name, env_id="Toy-v0", source=name)


def test_transitions_bootstrap_within_episodes_and_stop_at_terminals():
    obs = np.arange(8, dtype=np.float32).reshape(4, 2)
    acts = np.ones((4, 1), np.float32)
    rew = np.array([1, 2, 3, 4], np.float32)
    ds = EpisodeDataset([Episode(obs, acts, rew, terminal=True), Episode(obs + 100, acts, rew, terminal=False)],
                        _info())
    tr = critic_stage.transitions(ds)
    # the terminal episode keeps all 4 steps (the last with not_done = 0); the time-limited one drops its last
    assert len(tr["s"]) == 4 + 3
    np.testing.assert_array_equal(tr["not_done"], [1, 1, 1, 0, 1, 1, 1])
    np.testing.assert_array_equal(tr["s_next"][:3], obs[1:])
    np.testing.assert_array_equal(tr["s_next"][4:], obs[1:] + 100)
    np.testing.assert_array_equal(tr["r"], [1, 2, 3, 4, 1, 2, 3])
    assert critic_stage.reward_scale(ds) == 1.0  # both episodes return 10: no spread to scale by


def _bandit_dataset(n_episodes=40, length=20, seed=0):
    """s ~ N(0, 1)^3 (independent of the action), a in {-1, +1} uniformly, r = a: +1 is always better by 2."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n_episodes):
        a = rng.choice([-1.0, 1.0], size=(length, 1)).astype(np.float32)
        eps.append(Episode(rng.standard_normal((length, 3)).astype(np.float32), a, a[:, 0].copy(),
                           terminal=bool(rng.random() < 0.5)))
    return EpisodeDataset(eps, _info("bandit"), fingerprint=f"bandit-{seed}")


@pytest.fixture(scope="module")
def bandit_critic(tmp_path_factory):
    torch.set_num_threads(1)
    ds = _bandit_dataset()
    cfg = resolve(None, "smoke", ["critic.steps=1500", "critic.discount=0.9"])
    inputs = StageInputs(dataset=ds, store=ArtifactStore(tmp_path_factory.mktemp("critic")), progress=False)
    art = build_stage(dag.CRITIC, cfg, inputs)
    return ds, art


def test_critic_ranks_the_better_action_first_by_about_the_reward_gap(bandit_critic):
    ds, art = bandit_critic
    q = critic_stage.load(art)
    scale = art.load_json("reward_scale")["scale"]
    s = torch.as_tensor(np.random.default_rng(1).standard_normal((200, 3)), dtype=torch.float32)
    with torch.no_grad():
        gap = (q(s, torch.ones(200, 1)) - q(s, -torch.ones(200, 1))) / scale
    assert (gap > 0).all()
    # Q(s, +1) - Q(s, -1) = r(+1) - r(-1) = 2: the next state does not depend on the action
    assert float(gap.mean()) == pytest.approx(2.0, rel=0.3)
    assert art.manifest["metrics"]["transitions"] == sum(len(e) - (not e.terminal) for e in ds.episodes)


def test_critic_takes_environment_units():
    q = IQLCritic(2, 1, hidden=8, layers=1)
    q.set_standardization([10.0, -5.0], [2.0, 4.0], [1.0], [0.5])
    s, a = torch.tensor([[12.0, -1.0]]), torch.tensor([[1.5]])
    zs, za = q.inputs(s, a)
    torch.testing.assert_close(zs, torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(za, torch.tensor([[1.0]]))


# ----------------------------------------------------------------------------------------------------
# selection by the critic


class StubCodec:
    """x [B, T, obs] decodes to states = x and Q_t = x[..., 0]; the inverse dynamics returns s_next - s."""

    def __init__(self):
        self.calls = 0

    def decode(self, x, s1):
        return {"states": x, "q": x[..., 0]}

    def inverse_dynamics(self, s, s_next):
        self.calls += 1
        return s_next - s


def test_decode_tail_keeps_the_candidate_whose_first_action_the_critic_values_most():
    B, N, T, obs = 3, 4, 5, 2
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B * N, T, obs, generator=g)
    cond = torch.randn(B, obs, generator=g).repeat_interleave(N, 0)
    seen = {}

    def critic(s, a):  # values the first action's second coordinate, whatever the decoded energy says
        seen["s"], seen["a"] = s, a
        return a[:, 1]

    out = decode_tail(StubCodec(), x, cond, "q_sum", candidates=N, selection="critic", critic=critic)
    first = (x[:, 1] - cond).view(B, N, obs)  # real_to_plan at step 0: f(s_1, s^_2) = s^_2 - s_1 here
    best = first[..., 1].argmax(-1)
    torch.testing.assert_close(out["actions"], first[torch.arange(B), best], rtol=0, atol=0)
    torch.testing.assert_close(out["states"], x.view(B, N, T, obs)[torch.arange(B), best], rtol=0, atol=0)
    # the critic saw the real states and every candidate's executed first action
    torch.testing.assert_close(seen["s"], cond, rtol=0, atol=0)
    assert seen["a"].shape == (B * N, obs)
    e_best = (-x[..., 0].sum(-1)).view(B, N).argmin(-1)
    assert not torch.equal(best, e_best)  # the case tells critic selection from selection by E
    with pytest.raises(ValueError, match="critic"):
        decode_tail(StubCodec(), x, cond, "q_sum", candidates=N, selection="critic")


@pytest.fixture(scope="module")
def trained_with_critic(tmp_path_factory):
    return tiny_trained_maze(tmp_path_factory.mktemp("select-critic"),
                             ["critic.steps=100", "planning.candidates=5", "planning.selection=critic"])


@pytest.mark.parametrize("guided", [True, False])
def test_the_planner_executes_the_candidate_the_critic_values_most(trained_with_critic, guided):
    from ld.planning.planner import Planner

    cfg, artifacts, records, _, obs = trained_with_critic
    assert dag.CRITIC.name in [r.stage for r in records]
    N = cfg.planning.candidates
    planner = Planner(cfg, artifacts, guided=guided, seed=4)
    # every candidate's first action, from the same draw: N copies of each observation, one candidate each
    one = Planner(cfg.model_copy(update={"planning": cfg.planning.model_copy(update={"candidates": 1})}),
                  artifacts, guided=guided, seed=4)
    every = one.plan(np.repeat(obs, N, 0))
    plan = planner.plan(obs)
    q = critic_stage.load(artifacts[dag.CRITIC.name])
    with torch.no_grad():
        values = q(torch.as_tensor(np.repeat(obs, N, 0), dtype=torch.float32),
                   torch.as_tensor(every.actions, dtype=torch.float32)).view(len(obs), N)
    best = values.argmax(-1).numpy()
    chosen = every.actions.reshape(len(obs), N, -1)[np.arange(len(obs)), best]
    np.testing.assert_allclose(plan.actions, chosen, rtol=1e-5, atol=1e-5)
    # the fast path selects the same
    fast = Planner(cfg, artifacts, guided=guided, seed=4, fast=True).plan(obs)
    np.testing.assert_allclose(fast.actions, plan.actions, rtol=1e-5, atol=1e-5)


def test_the_critic_is_part_of_the_prior_baselines_reuse_key_only_when_it_selects(trained_with_critic):
    from ld.evaluation import reuse

    cfg, artifacts, _, _, _ = trained_with_critic
    assert dag.CRITIC.name in reuse.policy_stages(cfg, "prior+select")
    by_e = cfg.model_copy(update={"planning": cfg.planning.model_copy(update={"selection": "argmin"})})
    assert dag.CRITIC.name not in reuse.policy_stages(by_e, "prior+select")
