"""Selection among candidate plans and the pair the inverse dynamics executes (issue 24).

- `select`: argmin picks the lowest decoded energy; resample draws candidate i with probability
  softmax(-beta E)_i (frequencies checked on a controlled case);
- `decode_tail` with a stub codec: the selected candidate's states, Q and energy come out, and the inverse
  dynamics sees exactly the pair `planning.execution` names;
- on a tiny trained pipeline: N = 1 is the single-sample planner's numbers bit for bit (recomputed here the way
  the planner computed them before selection existed), N > 1 keeps the candidate the rule names, the fast path
  agrees, and the receding-horizon policy executes the named pair at decisions and between replans;
- rows: N > 1 is labelled `latentdiffuser+select` / `prior+select` and kept out of the paper's bars; the rows'
  `predicted_return` and `energy` are means over the episode's decisions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from maze_helpers import tiny_trained_maze

from ld.diffusion.guided import draw
from ld.planning.plan import decode_tail, pair, select
from ld.stages.codec import trajectory_energy

# ----------------------------------------------------------------------------------------------------
# the selection rule


def test_argmin_picks_the_lowest_energy_of_each_row():
    energy = torch.tensor([[3.0, -1.0, 2.0, 0.5], [0.0, 1.0, -2.0, -1.9], [5.0, 4.0, 3.0, 2.0]])
    assert select(energy, "argmin").tolist() == [1, 2, 3]


def test_resample_frequencies_follow_softmax_of_minus_beta_e():
    beta = 2.0
    # exp(-beta E) proportional to 4 : 2 : 1 : 1
    e = torch.tensor([0.0, math.log(2) / beta, math.log(4) / beta, math.log(4) / beta])
    p = np.array([4, 2, 1, 1]) / 8
    n = 40000
    u = torch.rand(n, generator=torch.Generator().manual_seed(0))
    idx = select(e.expand(n, 4), "resample", beta, u)
    freq = np.bincount(idx.numpy(), minlength=4) / n
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq - p) < 5 * se), (freq, p)
    # a wrong sign (softmax(+beta E)) or a missing beta would give 1:2:4:4 or 1 : 2^(1/2) : ... -- far outside
    assert freq[0] > 0.45 and freq[2] < 0.15


def test_resample_edges_and_limits():
    e = torch.tensor([[1.0, 0.0, 2.0]])
    assert select(e, "resample", 1.0, torch.tensor([0.0])).item() == 0  # u = 0: the first candidate
    assert select(e, "resample", 1.0, torch.tensor([1.0])).item() == 2  # u = 1: the last, never out of range
    # beta -> infinity is argmin; beta = 0 is uniform
    us = torch.linspace(0.001, 0.999, 999)
    assert (select(e.expand(999, 3), "resample", 1e4, us) == 1).all()
    counts = np.bincount(select(e.expand(999, 3), "resample", 0.0, us).numpy(), minlength=3)
    assert np.all(np.abs(counts - 333) <= 1)
    with pytest.raises(ValueError, match="uniform"):
        select(e, "resample", 1.0, None)
    with pytest.raises(ValueError, match="argmin, resample"):
        select(e, "best")


# ----------------------------------------------------------------------------------------------------
# decode_tail with a stub codec


class StubCodec:
    """x [B, T, obs] decodes to states = x and Q_t = x[..., 0] (so E = -sum_t x_t0); the inverse dynamics
    records every (s, s_next) it is given and returns s_next - s."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def decode(self, x, s1):
        return {"states": x, "q": x[..., 0]}

    def inverse_dynamics(self, s, s_next):
        self.calls.append((s.clone(), s_next.clone()))
        return s_next - s


def _candidates(B=2, N=3, T=4, obs=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B * N, T, obs, generator=g)
    s1 = torch.randn(B, obs, generator=g)
    return x, s1, s1.repeat_interleave(N, 0)


def test_decode_tail_keeps_the_min_energy_candidate_of_each_observation():
    B, N = 3, 4
    x, s1, cond = _candidates(B, N)
    codec = StubCodec()
    out = decode_tail(codec, x, cond, "q_sum", candidates=N, selection="argmin")
    e = -x[..., 0].sum(-1).view(B, N)
    best = e.argmin(-1)
    chosen = x.view(B, N, *x.shape[1:])[torch.arange(B), best]
    torch.testing.assert_close(out["states"], chosen, rtol=0, atol=0)
    torch.testing.assert_close(out["energy"], e.min(-1).values, rtol=0, atol=0)
    torch.testing.assert_close(out["q0"], chosen[:, 0, 0], rtol=0, atol=0)
    # the action is computed once, for the selected plans only, from the real s_1 of each observation
    (s, s_next), = codec.calls
    torch.testing.assert_close(s, s1, rtol=0, atol=0)
    torch.testing.assert_close(s_next, chosen[:, 1], rtol=0, atol=0)


def test_decode_tail_resample_uses_the_uniforms():
    B, N = 2, 3
    x, _, cond = _candidates(B, N, seed=1)
    e = -x[..., 0].sum(-1).view(B, N)
    cdf = torch.softmax(-0.7 * e, -1).cumsum(-1)
    # a u just above the first candidate's mass picks the second; u = 0 picks the first
    u = torch.stack([torch.tensor(0.0), cdf[1, 0] + 1e-4])
    out = decode_tail(StubCodec(), x, cond, "q_sum", candidates=N, selection="resample", beta=0.7, u=u)
    torch.testing.assert_close(out["energy"], torch.stack([e[0, 0], e[1, 1]]), rtol=0, atol=0)


@pytest.mark.parametrize("execution", ["real_to_plan", "plan_pair", "real_plus_delta"])
def test_the_executed_pair_at_a_decision(execution):
    x, s1, cond = _candidates(B=2, N=1)
    codec = StubCodec()
    decode_tail(codec, x, cond, "q_sum", execution=execution)
    (s, s_next), = codec.calls
    plan0, plan1 = x[:, 0], x[:, 1]
    expected = {"real_to_plan": (s1, plan1), "plan_pair": (plan0, plan1),
                "real_plus_delta": (s1, s1 + (plan1 - plan0))}[execution]
    torch.testing.assert_close(s, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(s_next, expected[1], rtol=0, atol=0)


def test_pair_at_per_row_plan_steps_and_at_the_plans_end():
    plans = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # row 0: 0..3, row 1: 4..7
    s = torch.tensor([[10.0], [20.0]])
    a, b = pair(s, plans, torch.tensor([1, 2]), "plan_pair")
    assert a.flatten().tolist() == [1.0, 6.0] and b.flatten().tolist() == [2.0, 7.0]
    a, b = pair(s, plans, torch.tensor([1, 2]), "real_plus_delta")
    assert a.flatten().tolist() == [10.0, 20.0] and b.flatten().tolist() == [11.0, 21.0]
    a, b = pair(s, plans[:, :1], 0, "real_to_plan")  # a one-step plan targets its only state
    assert b.flatten().tolist() == [0.0, 4.0]
    with pytest.raises(ValueError, match="planning.execution"):
        pair(s, plans, 0, "inpaint")


# ----------------------------------------------------------------------------------------------------
# the planner on a tiny trained pipeline


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_trained_maze(tmp_path_factory.mktemp("select"), [])


def _with(cfg, **planning):
    return cfg.model_copy(update={"planning": cfg.planning.model_copy(update=planning)})


def _reference_draw(planner, obs, n, seed):
    """x0 of every candidate, drawn as the planner draws them (s_1 repeated observation-major)."""
    s1 = planner.normalize_obs(obs)
    cond = s1.repeat_interleave(n, 0)
    gen = torch.Generator().manual_seed(seed)
    cfg = planner.cfg
    x0 = draw(planner.prior, planner.prior.schedule, cond, planner.x_shape, guidance_scale=cfg.guidance_scale,
              temperature=cfg.temperature, sampler=cfg.sampler.name, steps=cfg.sampling_steps,
              energy=planner.energy, energy_scale=cfg.energy.scale if planner.guided else 0.0, generator=gen,
              clip=planner.prior.standardizer.bounds())
    return s1, cond, planner.prior.standardizer.back(x0), gen


@pytest.mark.parametrize("guided", [True, False])
def test_one_candidate_is_the_single_sample_planner_bit_for_bit(trained, guided):
    from ld.planning.planner import Planner

    cfg, artifacts, _, _, obs = trained
    planner = Planner(cfg, artifacts, guided=guided, seed=3)
    plan = planner.plan(obs)
    # the planner as it was before selection: decode, E, f(real s_1, planned s_2)
    s1, _, x0, _ = _reference_draw(planner, obs, 1, 3)
    with torch.no_grad():
        decoded = planner.codec.decode(x0, s1)
        energy = trajectory_energy(decoded, cfg.energy.target)
        actions = planner.codec.inverse_dynamics(s1, decoded["states"][:, 1])
    assert torch.equal(plan.states, decoded["states"])
    np.testing.assert_array_equal(plan.energy, energy.numpy().astype(float))
    np.testing.assert_array_equal(plan.actions, planner.normalizer.unnormalize("actions", actions.numpy()))
    q0 = planner.normalizer.unnormalize("returns", decoded["q"][:, 0].numpy())
    np.testing.assert_array_equal(plan.predicted_return, np.asarray(q0, dtype=float))


@pytest.mark.parametrize("guided", [True, False])
def test_many_candidates_keep_the_lowest_decoded_energy(trained, guided):
    from ld.planning.planner import Planner

    cfg, artifacts, _, _, obs = trained
    N = 5
    planner = Planner(_with(cfg, candidates=N), artifacts, guided=guided, seed=4)
    plan = planner.plan(obs)
    s1, cond, x0, _ = _reference_draw(planner, obs, N, 4)
    with torch.no_grad():
        decoded = planner.codec.decode(x0, cond)
        e = trajectory_energy(decoded, cfg.energy.target).view(len(obs), N)
    best = e.argmin(-1)
    assert len(set(best.tolist())) > 1 or N == 1  # the case is not trivially "always candidate 0"
    np.testing.assert_allclose(plan.energy, e.min(-1).values.numpy(), rtol=0, atol=1e-6)
    chosen = decoded["states"].view(len(obs), N, *decoded["states"].shape[1:])[torch.arange(len(obs)), best]
    torch.testing.assert_close(plan.states, chosen, rtol=0, atol=1e-6)
    # and it is not what a single sample would have given
    single = Planner(cfg, artifacts, guided=guided, seed=4).plan(obs)
    assert np.all(plan.energy <= e[:, 0].numpy() + 1e-6) and not np.allclose(plan.energy, single.energy)


def test_resample_draws_its_uniforms_after_the_noise_with_the_trials_beta(trained):
    from ld.planning.planner import Planner

    cfg, artifacts, _, _, obs = trained
    N = 6
    for selection_beta in (None, 0.05):
        planner = Planner(_with(cfg, candidates=N, selection="resample", selection_beta=selection_beta),
                          artifacts, seed=5)
        beta = cfg.beta if selection_beta is None else selection_beta
        assert planner.selection_beta == beta
        plan = planner.plan(obs)
        _, cond, x0, gen = _reference_draw(planner, obs, N, 5)
        u = torch.rand(len(obs), generator=gen)
        with torch.no_grad():
            e = trajectory_energy(planner.codec.decode(x0, cond), cfg.energy.target).view(len(obs), N)
        idx = (torch.softmax(-beta * e, -1).cumsum(-1) < u[:, None]).sum(-1).clamp_max(N - 1)
        np.testing.assert_allclose(plan.energy, e[torch.arange(len(obs)), idx].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("planning", [dict(candidates=4), dict(candidates=3, selection="resample"),
                                      dict(candidates=2, execution="real_plus_delta"),
                                      dict(execution="plan_pair")])
def test_fast_path_agrees_with_candidates_and_executions(trained, planning):
    from ld.planning.planner import Planner

    cfg, artifacts, _, _, obs = trained
    c = _with(cfg, **planning)
    slow, fast = Planner(c, artifacts, seed=6), Planner(c, artifacts, seed=6, fast=True)
    for rows in (obs, obs[:2], obs):
        a, b = slow.plan(rows), fast.plan(rows)
        np.testing.assert_allclose(b.actions, a.actions, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(b.energy, a.energy, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b.states, a.states, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
@pytest.mark.parametrize("planning", [dict(candidates=4), dict(candidates=4, selection="resample",
                                                               execution="real_plus_delta")])
def test_cuda_graph_selects_what_the_reference_path_selects(trained, planning):
    """Selection inside the captured graph (argmin, or resampling from uniforms copied in before each replay)."""
    from ld.planning.planner import Planner

    cfg, artifacts, _, _, obs = trained
    c = _with(cfg, **planning)
    slow = Planner(c, artifacts, seed=6, device="cuda")
    graph = Planner(c, artifacts, seed=6, device="cuda", fast="graph")
    for rows in (obs, obs[:3], obs):
        a, b = slow.plan(rows), graph.plan(rows)
        np.testing.assert_allclose(b.energy, a.energy, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(b.actions, a.actions, atol=1e-4, rtol=1e-4)


class RecordingCodec(torch.nn.Module):
    """The trained codec, with its inverse dynamics' arguments recorded."""

    def __init__(self, codec):
        super().__init__()
        self.codec = codec
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def decode(self, x, s1):
        return self.codec.decode(x, s1)

    def inverse_dynamics(self, s, s_next):
        self.calls.append((s.clone(), s_next.clone()))
        return self.codec.inverse_dynamics(s, s_next)


@pytest.mark.parametrize("execution", ["real_to_plan", "plan_pair", "real_plus_delta"])
def test_the_policy_executes_the_named_pair_at_decisions_and_between_replans(trained, execution):
    from ld.planning.planner import Planner, RecedingHorizonPolicy

    cfg, artifacts, _, _, obs = trained
    planner = Planner(_with(cfg, execution=execution), artifacts, seed=7)
    planner.codec = RecordingCodec(planner.codec)
    policy = RecedingHorizonPolicy(planner, replan_every=3)
    policy.reset(len(obs))
    ids = np.arange(len(obs))
    rng = np.random.default_rng(0)
    current = obs
    for t in range(5):  # decision at t = 0 and 3, tracking at 1, 2, 4
        planner.codec.calls.clear()
        policy.act(current, ids)
        (s, s_next), = planner.codec.calls
        i = t % 3
        plans = policy.plans
        real = planner.normalize_obs(current)
        cur, nxt = plans[:, i], plans[:, i + 1]
        expected = {"real_to_plan": (real, nxt), "plan_pair": (cur, nxt),
                    "real_plus_delta": (real, real + (nxt - cur))}[execution]
        torch.testing.assert_close(s, expected[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(s_next, expected[1], rtol=0, atol=1e-6)
        current = current + 0.01 * rng.standard_normal(current.shape)  # the real state moves off the plan


# ----------------------------------------------------------------------------------------------------
# rows


def test_rows_of_selection_are_apart_from_the_papers_planner(trained):
    from ld.analysis.rows import method_rows
    from ld.distributed.trial import trial_metrics
    from ld.pipeline import evaluate_trial

    cfg, artifacts, records, ds, _ = trained
    cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"episodes": 2, "max_steps": 8})})
    sel = _with(cfg, candidates=3, selection="resample")
    df = evaluate_trial(sel, ds, artifacts, records, torch.device("cpu"), progress=False)
    assert set(df["variant"]) == {"latentdiffuser+select", "prior+select"}
    assert (df["planning.candidates"] == 3).all() and (df["planning.selection"] == "resample").all()
    prior = df[df["variant"] == "prior+select"]
    # the prior's rows say beta = 0 (no guidance) and the beta its resampling used (the trial's)
    assert (prior["beta"] == 0.0).all() and (prior["planning.selection_beta"] == cfg.beta).all()
    assert df.loc[df["variant"] == "latentdiffuser+select", "planning.selection_beta"].isna().all()
    assert method_rows(df).empty  # never in the paper's bars
    assert trial_metrics(df)["normalized_score"] == pytest.approx(
        df.loc[df["variant"] == "latentdiffuser+select", "normalized_score"].mean())
    # the paper's planner keeps its labels
    one = evaluate_trial(cfg, ds, artifacts, records, torch.device("cpu"), progress=False)
    assert set(one["variant"]) == {"latentdiffuser", "prior"}
    assert set(method_rows(one)["variant"]) == {"latentdiffuser"}


def test_rows_hold_episode_means_of_the_plans_diagnostics(trained):
    from ld.evaluation.rollout import evaluate
    from ld.planning.planner import Planner, RecedingHorizonPolicy

    cfg, artifacts, _, ds, _ = trained
    policy = RecedingHorizonPolicy(Planner(cfg, artifacts, seed=8), replan_every=2)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    plan = policy.planner.plan

    def recording_plan(o):
        p = plan(o)
        seen.append((policy._live.copy(), p.predicted_return.copy(), p.energy.copy()))
        return p

    policy.planner.plan = recording_plan
    act = policy.act

    def recording_act(o, ids):
        policy._live = ids[(policy.age[ids] < 0) | (policy.age[ids] >= 2)]
        return act(o, ids)

    policy.act = recording_act
    results = evaluate(policy, ds.info, 2, cfg.seed, 9, progress=False)
    for r in results:
        mine = [(q[list(ids).index(r.episode)], e[list(ids).index(r.episode)]) for ids, q, e in seen
                if r.episode in ids]
        assert r.decisions == len(mine) == 5  # steps 0, 2, 4, 6, 8
        assert r.predicted_return == pytest.approx(np.mean([q for q, _ in mine]))
        assert r.energy == pytest.approx(np.mean([e for _, e in mine]))
        assert r.predicted_return_last == pytest.approx(mine[-1][0]) and r.energy_last == pytest.approx(mine[-1][1])
        assert r.energy != pytest.approx(r.energy_last)
