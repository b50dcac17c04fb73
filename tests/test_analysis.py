"""The figures' statistics against exact answers, and the figure tables against an independent pandas
computation on suite-shaped results (synthetic scores, the real results schema)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ld import analysis as A
from ld.analysis import stats
from results_fixtures import figure3_with_two_maze_tasks, rng_scores, write_suite_results

# ----------------------------------------------------------------------------------------------------
# statistics


def test_iqm_is_the_25_percent_trimmed_mean():
    assert A.iqm([1, 2, 3, 4, 5, 6, 100, 200]) == pytest.approx(4.5)  # middle 4 of 8
    assert A.iqm([7.0]) == 7.0
    x = np.random.default_rng(0).normal(size=(13, 5))
    scipy_stats = pytest.importorskip("scipy.stats")
    assert A.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=None))
    assert np.allclose(A.iqm(x, axis=1), scipy_stats.trim_mean(x, 0.25, axis=1))


def test_mean_ci_brackets_the_mean_and_is_nan_for_one_seed():
    m, lo, hi = A.mean_ci([10, 20, 30, 40], reps=4000)
    assert m == 25 and 10 <= lo < m < hi <= 40
    assert A.mean_ci([10, 20, 30, 40], reps=4000) == (m, lo, hi)  # seeded: reproducible
    assert A.mean_ci([5, 5, 5]) == (5, 5, 5)
    m1, lo1, hi1 = A.mean_ci([42.0])
    assert m1 == 42 and np.isnan(lo1) and np.isnan(hi1)


def test_bootstrap_ci_on_a_hand_made_case():
    # [0, 1]: a resample's mean is 0, 1/2 or 1 with probability 1/4, 1/2, 1/4, so the 2.5% and 97.5%
    # quantiles are the extremes and the 30% / 70% ones the middle
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([0.0, 1.0], alpha=0.6) == (0.5, 0.5)
    assert stats.bootstrap_ci([0.0, np.nan, 1.0, np.inf]) == (0.0, 1.0)  # non-finite values dropped
    assert stats.bootstrap_ci([5, 5, 5]) == (5.0, 5.0)
    assert stats.bootstrap_ci([42.0]) == (42.0, 42.0)  # one value: zero-width (what `latentdiffuser run` prints)
    assert all(np.isnan(stats.bootstrap_ci([np.nan])))
    # the draws `latentdiffuser run` and the benchmarks have always made: rng.choice of (reps, n), seed 0, 2000 reps
    x = np.array([3.0, 9.0, 4.0, 12.0, 7.0])
    means = np.random.default_rng(0).choice(x, size=(2000, len(x)), replace=True).mean(1)
    assert stats.bootstrap_ci(x) == (np.quantile(means, 0.025), np.quantile(means, 0.975))
    import ld.pipeline

    assert not hasattr(ld.pipeline, "bootstrap_ci")  # one bootstrap, for the CLI and the benchmarks


def test_the_figures_mean_ci_is_bootstrap_ci(monkeypatch):
    x = [10.0, 20.0, 35.0, 40.0]
    assert A.mean_ci(x, reps=3000, seed=7)[1:] == stats.bootstrap_ci(x, reps=3000, seed=7)
    calls = []

    def spy(x, reps=2000, seed=0, alpha=0.05):
        calls.append((len(x), reps, seed))
        return -1.0, 1.0

    monkeypatch.setattr(stats, "bootstrap_ci", spy)
    assert A.mean_ci(x, reps=123, seed=4) == (26.25, -1.0, 1.0) and calls == [(4, 123, 4)]
    # the figure tables go through it too (here: a reference line over 3 seeds)
    df = pd.DataFrame({"trial_id": "t", "variant": "bc", "dataset_name": "halfcheetah-medium-expert",
                       "env_id": "HalfCheetah-v5", "seed": [0, 1, 2], "normalized_score": [1.0, 2.0, 3.0]})
    row = A.reference_table(df, reps=50).iloc[0]
    assert (row["ci_low"], row["ci_high"]) == (-1.0, 1.0) and calls[-1] == (3, 50, 0)


def test_unpaired_difference_resamples_each_side():
    assert stats.unpaired_diff_ci([3.0, 3.0, 3.0], [1.0, 1.0]) == (2.0, 2.0, 2.0)
    diff, lo, hi = stats.unpaired_diff_ci([0.0, 10.0], [1.0, 1.0, 1.0], reps=2000)
    assert diff == 4.0 and (lo, hi) == (-1.0, 9.0)
    assert np.isnan(stats.unpaired_diff_ci([1.0], [0.0, 2.0])[1])


def test_stratified_bootstrap_resamples_runs_within_each_task():
    # Task a: every run 0; task b: every run 10. Resampling within tasks always keeps 3 runs of each, so
    # every replicate is the same matrix and the CI collapses; a pooled bootstrap would not.
    point, lo, hi = A.stratified_iqm_ci([[0, 0, 0], [10, 10, 10]], reps=2000)
    assert point == lo == hi == pytest.approx(5.0)  # IQM of [0,0,0,10,10,10] = mean(0,0,10,10)
    point, lo, hi = A.stratified_iqm_ci([[0, 1, 2, 3], [10, 11, 12, 13]], reps=2000)
    assert lo < point < hi
    assert np.isnan(A.stratified_iqm_ci([[1.0], [2.0]])[1])


# rliable 1.2.0's answers on one small case, recorded (it does not import beside this project's pandas 3:
# its arch < 8 pin breaks there). Computed with pandas 2.3.3, arch 7.2.0, numpy 2.4.6:
#   scores = np.array([[10, 0], [20, 5], [30, 5], [40, 60], [90, 70]])   # runs x tasks
#   rly.get_interval_estimates({"x": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=50000)
RLIABLE_CASE = [[10.0, 20.0, 30.0, 40.0, 90.0], [0.0, 5.0, 5.0, 60.0, 70.0]]  # per task: its runs
RLIABLE_ANSWERS = {"iqm": (27.5, 10.0, 55.0), "mean": (33.0, 16.0, 52.0), "iqm of task 0": (30.0, 13.333, 73.333)}


def test_stratified_iqm_matches_rliable_on_a_recorded_case():
    """Same point estimates to the digit; the same percentile CIs up to the bootstrap's Monte Carlo error
    (the resampled IQMs take few distinct values here, so a quantile lands on one of two neighbours)."""
    got = {"iqm": A.stratified_iqm_ci(RLIABLE_CASE, reps=50000),
           "mean": A.stratified_iqm_ci(RLIABLE_CASE, reps=50000, stat=lambda x, axis=None: np.mean(x, axis=axis)),
           "iqm of task 0": A.stratified_iqm_ci(RLIABLE_CASE[:1], reps=50000)}
    for name, (point, lo, hi) in RLIABLE_ANSWERS.items():
        assert got[name][0] == pytest.approx(point), name
        assert got[name][1] == pytest.approx(lo, abs=1.0) and got[name][2] == pytest.approx(hi, abs=1.0), name
    # by hand: the 10 runs sorted are 0 5 5 10 20 30 40 60 70 90; the IQM drops int(2.5) = 2 at each end
    assert A.iqm(np.concatenate(RLIABLE_CASE)) == pytest.approx(np.mean([5, 10, 20, 30, 40, 60]))


def _rows(**cols) -> pd.DataFrame:
    return pd.DataFrame(cols)


def test_method_rows_takes_latentdiffuser_and_the_beta0_trials_prior_rows():
    df = _rows(trial_id=["t3", "t3", "t3", "t0", "t0", "tb"],
               variant=["latentdiffuser", "prior", "bc", "prior", "prior", "latentdiffuser"],
               beta=[3.0, 0.0, 3.0, 0.0, 0.0, 0.0], normalized_score=[1, 2, 3, 4, 5, 6])
    got = A.method_rows(df)
    # t3: only its guided rows; t0 (beta = 0, no guided rows): its prior rows; tb: beta-0 trial written
    # as latentdiffuser rows
    assert got["normalized_score"].tolist() == [1, 4, 5, 6]


@pytest.mark.parametrize("row,label", [
    ({"modeling": "latent", "energy.target": "q_sum", "energy.loss": "contrastive"}, "latent actions"),
    ({"modeling": "raw", "energy.target": "q_sum", "energy.loss": "contrastive"}, "raw action space"),
    ({"modeling": "skill", "energy.target": "q_sum", "energy.loss": "contrastive"}, "skill space"),
    ({"modeling": "latent", "energy.target": "return", "energy.loss": "contrastive"}, "return as energy"),
    ({"modeling": "latent", "energy.target": "q_sum", "energy.loss": "emse"}, "E-MSE"),
    ({"modeling": "latent", "energy.target": "q_sum", "energy.loss": "mse"}, "MSE"),
])
def test_selection_labels(row, label):
    assert A.selection_label(row) == label


def test_task_families():
    assert A.task_family("halfcheetah-medium-replay", "HalfCheetah-v5") == "locomotion"
    assert A.task_family("pointmaze-umaze", "PointMaze_UMaze-v3") == "maze"
    assert A.task_family("antmaze-large-play-v0", "AntMaze_Large-v5") == "maze"
    assert A.task_family("hopper-medium-expert-v2", "Hopper-v5") == "locomotion"
    assert A.task_family("pen-human-v0", "AdroitHandPen-v1") == "adroit"


# ----------------------------------------------------------------------------------------------------
# figure tables vs an independent computation


@pytest.fixture(scope="module")
def fig5(tmp_path_factory):
    storage = tmp_path_factory.mktemp("fig5")
    suite, trials, _ = write_suite_results(storage, "figure5", "small", score=rng_scores(1))
    return suite, trials, A.load_results(storage, "figure5")


@pytest.fixture(scope="module")
def fig3(tmp_path_factory):
    storage = tmp_path_factory.mktemp("fig3")
    suite, trials, _ = write_suite_results(storage, figure3_with_two_maze_tasks(storage), "small", score=rng_scores(2))
    return suite, trials, A.load_results(storage, "figure3")


def expected_figure5(df: pd.DataFrame, base: dict) -> dict:
    """{(panel, value): (mean over seeds, n_seeds)} computed directly from the rows."""
    guided = df[df["variant"] == "latentdiffuser"]
    beta0 = df[(df["sweep.axis"] == "beta") & (pd.to_numeric(df["sweep.value"], errors="coerce") == 0)]
    rows = pd.concat([guided, beta0])
    per_seed = rows.groupby(["sweep.axis", "sweep.value", "seed"])["normalized_score"].mean().reset_index()
    out = {}
    for (axis, value), g in per_seed.groupby(["sweep.axis", "sweep.value"]):
        panels = [a for a in base] if axis == "default" else [axis]
        for p in panels:
            v = float(base[p]) if axis == "default" else float(value)
            out[(p, v)] = (g["normalized_score"].mean(), g["seed"].nunique())
    return out


def test_figure5_table_matches_an_independent_computation(fig5):
    suite, trials, df = fig5
    t = A.figure5_table(df, reps=500)
    assert list(dict.fromkeys(t["panel"])) == ["latent_step", "horizon", "beta", "diffusion_steps"]
    base = suite.base_values("small")
    for panel, g in t.groupby("panel"):
        values = sorted({float(v) for v in suite.axes("small")[panel]} | {float(base[panel])})
        assert g["value"].tolist() == values  # every axis value plus the default, sorted
        assert g["is_default"].sum() == 1 and float(g.loc[g["is_default"], "value"].iloc[0]) == float(base[panel])
    exp = expected_figure5(df, base)
    assert len(t) == len(exp)
    for _, r in t.iterrows():
        mean, n = exp[(r["panel"], r["value"])]
        assert r["mean"] == pytest.approx(mean) and r["n_seeds"] == n == 3
        assert r["n_episodes"] == 30 and r["ci_low"] <= r["mean"] <= r["ci_high"]
    h = t[t["panel"] == "horizon"]
    assert h["setting"].tolist() == ["H=4\nT=12", "H=8\nT=24", "H=16\nT=48"]  # L = 3


def test_figure3_table_matches_an_independent_computation(fig3):
    _, _, df = fig3
    t = A.figure3_table(df, reps=500)
    assert list(dict.fromkeys(t["panel"])) == ["locomotion", "maze"]
    for _, g in t.groupby("panel"):
        assert g["setting"].tolist() == list(A.SELECTIONS)
    guided = df[df["variant"] == "latentdiffuser"]
    per_seed = guided.groupby(["dataset_name", "modeling", "energy.target", "energy.loss", "seed"])[
        "normalized_score"].mean().reset_index()
    per_seed["setting"] = per_seed.apply(A.selection_label, axis=1)
    scipy_stats = pytest.importorskip("scipy.stats")
    for _, r in t.iterrows():
        tasks = ["halfcheetah-medium-replay"] if r["panel"] == "locomotion" else ["pointmaze-medium", "pointmaze-umaze"]
        g = per_seed[per_seed["dataset_name"].isin(tasks) & (per_seed["setting"] == r["setting"])]
        if r["panel"] == "locomotion":
            assert r["aggregate"] == "mean" and r["mean"] == pytest.approx(g["normalized_score"].mean())
        else:
            matrix = g.pivot(index="seed", columns="dataset_name", values="normalized_score").to_numpy()
            assert matrix.shape == (3, 2)
            assert r["aggregate"] == "IQM"
            assert r["mean"] == pytest.approx(scipy_stats.trim_mean(matrix, 0.25, axis=None))
            assert r["n_tasks"] == 2 and r["n_runs"] == 6
        assert r["n_seeds"] == 3 and r["ci_low"] <= r["mean"] <= r["ci_high"]
    per_task = A.figure3_task_table(df, reps=200)
    assert len(per_task) == 3 * 6


# ----------------------------------------------------------------------------------------------------
# reading


def test_load_results_errors_are_one_clear_message(tmp_path, fig5):
    with pytest.raises(A.ResultsError, match="not found"):
        A.load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(A.ResultsError, match="no results"):
        A.load_results(tmp_path / "empty")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(A.ResultsError, match="missing columns: schema_version"):
        A.load_results(tmp_path / "bad.parquet")
    _, _, df = fig5
    df.iloc[:0].to_parquet(tmp_path / "zero.parquet")
    with pytest.raises(A.ResultsError, match="no rows"):
        A.load_results(tmp_path / "zero.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(A.ResultsError, match="not a readable Parquet"):
        A.load_results(tmp_path / "junk.parquet")
    with pytest.raises(A.ResultsError, match="sweep columns"):
        A.figure5_table(df.drop(columns=["sweep.axis", "sweep.value"]))


# ----------------------------------------------------------------------------------------------------
# the paper's findings


@pytest.mark.parametrize("expect,lo,hi,margin,verdict", [
    ("lower", -5, -1, 0, "agrees"), ("lower", -5, 2, 0, "inconclusive"), ("lower", 1, 4, 0, "contradicts"),
    ("higher", 1, 4, 0, "agrees"), ("higher", -4, -1, 0, "contradicts"), ("higher", -1, 1, 0, "inconclusive"),
    ("same", -1, 1, 0, "inconclusive"), ("same", -1, 1, 2, "agrees"), ("same", 2.5, 4, 2, "contradicts"),
    ("same", 1, 3, 2, "inconclusive"),
    ("not higher", -5, -3, 2, "agrees"), ("not higher", -3, -1, 2, "inconclusive"),
    ("not higher", 0.2, 0.5, 2, "no difference"),
    ("not higher", 3, 5, 2, "contradicts"), ("not higher", 1, 5, 2, "inconclusive"),
    # the paper's direction reversed, but by less than the margin: no practical difference, not a contradiction
    ("higher", -0.5, -0.2, 1, "no difference"), ("higher", -3, -2, 1, "contradicts"),
    # "agrees" needs the whole CI beyond the margin: a CI that excludes 0 but reaches into it is a difference
    # that may not matter (Figure 5's beta = 0 at -1.2 [-1.7, -0.7] against a 2.7 margin: no difference)
    ("lower", -5, -3, 2, "agrees"), ("lower", -5, -1, 2, "inconclusive"), ("lower", -1.7, -0.7, 2.7, "no difference"),
    ("higher", 0.5, 3, 1, "inconclusive"), ("higher", 1.5, 3, 1, "agrees"), ("lower", 1.5, 3, 1, "contradicts"),
    ("lower", 0.5, 3, 1, "inconclusive"),
    ("lower", float("nan"), float("nan"), 1, "inconclusive"),
])
def test_verdict_reads_the_ci_and_the_margin_not_the_point(expect, lo, hi, margin, verdict):
    assert A.verdict(expect, lo, hi, margin) == verdict


def test_practical_margin_is_ten_percent_with_a_one_point_floor():
    assert A.practical_margin(40.0) == pytest.approx(4.0)
    assert A.practical_margin(-40.0) == pytest.approx(4.0)
    assert A.practical_margin(5.0) == 1.0 and A.practical_margin(float("nan")) == 1.0


def test_paired_diff_pairs_by_seed_and_ignores_unpaired_seeds():
    a = pd.Series({0: 10.0, 1: 20.0, 2: 30.0, 3: 99.0})
    b = pd.Series({0: 8.0, 1: 18.0, 2: 28.0})
    m, lo, hi, n = A.paired_diff(a, b, reps=200)
    assert (m, lo, hi, n) == (pytest.approx(2.0), pytest.approx(2.0), pytest.approx(2.0), 3)


def test_seeds_to_decide_reads_the_distance_to_the_nearest_boundary():
    # diff -2 +- sd 3 against a 1-point margin: the nearest boundary (-1) is 1 away -> (1.96 * 3 / 1)^2 = 34.6
    assert A.seeds_to_decide(-2.0, 3.0, 1.0) == 35
    # far from both boundaries with little spread: two seeds would do
    assert A.seeds_to_decide(-10.0, 0.5, 1.0) == 2
    assert A.seeds_to_decide(1.0, 2.0, 1.0) == float("inf")  # sits on the boundary: no number of seeds decides it
    assert np.isnan(A.seeds_to_decide(1.0, float("nan"), 1.0))


def test_findings_say_how_many_seeds_would_decide_an_inconclusive_one(tmp_path):
    def noisy_l1(t, variant, e):  # L = 1 eight points lower, but by 4, 8, 12 over the seeds: inconclusive
        drop = (4.0 + 4.0 * t.config.seed) if t.axis == "latent_step" and float(t.value) == 1 else 0.0
        return 50.0 + t.config.seed - drop
    write_suite_results(tmp_path, "figure5", "small", score=noisy_l1)
    f = A.figure5_findings(A.load_results(tmp_path, "figure5"), reps=300).set_index("finding")
    row = f.loc["L = 1 degrades a lot"]
    assert row["verdict"] == "inconclusive" and row["diff"] == pytest.approx(-8.0)
    # sd 4, margin 5.1 (10% of 51): the nearest boundary is 2.9 away -> (1.96 * 4 / 2.9)^2 = 7.3 -> 8 seeds
    assert row["margin"] == pytest.approx(5.1) and row["seeds_to_decide"] == 8
    decided = f[f["verdict"] != "inconclusive"]
    assert len(decided) and (decided["seeds_to_decide"] == decided["n_seeds"]).all()


def _paper_like(t, variant, e):
    """Scores shaped like the paper's Figure 5: L = 1 and beta = 0 much worse, H and K flat, beta = 100
    slightly worse; per-seed noise identical across settings so paired differences are exact."""
    ax, v = t.axis, float(t.value) if t.axis not in ("default", "product") else None
    base = 60.0 + 5.0 * t.config.seed + (e % 3)
    if ax == "latent_step" and v == 1:
        base -= 30
    if ax == "beta" and v == 0:
        base -= 25
    if ax == "beta" and v == 100:
        base -= 8  # "slightly": beyond the 6.6-point margin (10% of ~66), far less than beta = 0's drop
    return base - (10.0 if variant == "prior" else 0.0)


def test_figure5_findings_on_paper_shaped_scores(tmp_path):
    write_suite_results(tmp_path, "figure5", "small", score=_paper_like)
    f = A.figure5_findings(A.load_results(tmp_path, "figure5"), reps=300)
    by = {(r.finding, r.comparison.split(" ")[0]): r for r in f.itertuples()}
    assert by[("L = 1 degrades a lot", "latent_step=1")].diff == pytest.approx(-30)
    # the beta = 0 trial plans without guidance: its method rows are its `prior` rows (-10 here)
    assert by[("low beta degrades", "beta=0")].diff == pytest.approx(-35)
    assert by[("very high beta slightly worse", "beta=100")].diff == pytest.approx(-8)
    assert {r.comparison.split(" ")[0] for r in f.itertuples() if r.finding == "H insensitive"} == {
        "horizon=12", "horizon=48"}
    assert {r.comparison.split(" ")[0] for r in f.itertuples() if r.finding == "K insensitive"} == {
        "diffusion_steps=10", "diffusion_steps=50"}
    assert (f["verdict"] == "agrees").all() and (f["n_seeds"] == 3).all()


def test_figure5_findings_contradicted_when_l1_is_better(tmp_path):
    def l1_better(t, variant, e):
        return 50.0 + t.config.seed + (20.0 if t.axis == "latent_step" and float(t.value) == 1 else 0.0)
    write_suite_results(tmp_path, "figure5", "small", score=l1_better)
    f = A.figure5_findings(A.load_results(tmp_path, "figure5"), reps=300)
    row = f[f["finding"] == "L = 1 degrades a lot"].iloc[0]
    assert row["diff"] == pytest.approx(20) and row["verdict"] == "contradicts"


def test_figure3_findings_per_family_and_the_horizon_gap(tmp_path):
    # gaps large enough that every paper finding lies beyond its practical margin (10% of the ~57 reference)
    gap = {"pointmaze-umaze": 60.0, "pointmaze-medium": 60.0, "halfcheetah-medium-replay": 30.0}
    order = {"latent actions": 0.0, "skill space": -0.5, "raw action space": -1.0, "return as energy": -0.3,
             "E-MSE": -0.4, "MSE": -0.6}

    def score(t, variant, e):
        c = t.config
        name = c.dataset.split(":")[-1]
        sel = A.selection_label({"modeling": c.modeling, "energy.target": c.energy.target,
                                 "energy.loss": c.energy.loss})
        return 50.0 + 3 * c.seed + e + gap[name] * order[sel]

    write_suite_results(tmp_path, figure3_with_two_maze_tasks(tmp_path), "small", score=score)
    f = A.figure3_findings(A.load_results(tmp_path, "figure3"), reps=300)
    loco = f[f["panel"] == "locomotion"].set_index("finding")
    assert loco.loc["latent > raw", "diff"] == pytest.approx(30.0)
    assert loco.loc["skill > raw", "diff"] == pytest.approx(15.0)
    assert f.set_index("finding").loc["latent-raw gap widest on the long-horizon family", "diff"] == pytest.approx(30.0)
    assert set(f["panel"]) == {"locomotion", "maze", "maze vs locomotion"}
    assert (f["verdict"] == "agrees").all()


# ----------------------------------------------------------------------------------------------------
# reference levels: BC and the behavior data

ENV = {"halfcheetah-medium-expert": "HalfCheetah-v5", "pointmaze-umaze": "PointMaze_UMaze-v3",
       "pointmaze-medium": "PointMaze_Medium-v3"}


def _reference_rows(bc: dict, behavior: dict, trials=("t1", "t2")) -> pd.DataFrame:
    """Episode rows of `trials`, each holding the method's rows and the same bc rows for every (dataset, seed)
    of `bc` ({dataset: {seed: [episode scores]}}), with `behavior_score` per dataset."""
    rows = []
    for tid in trials:
        for ds, seeds in bc.items():
            for s, scores in seeds.items():
                for e, v in enumerate(scores):
                    for variant, score in (("latentdiffuser", 99.0 + e), ("bc", v)):
                        rows.append({"trial_id": f"{tid}-{ds}", "variant": variant, "dataset_name": ds,
                                     "env_id": ENV[ds], "seed": s, "episode": e, "normalized_score": score,
                                     "behavior_score": behavior[ds]})
    return pd.DataFrame(rows)


def test_bc_reference_is_deduplicated_across_trials():
    # the same bc rows in two trials: one score per seed (15, 30, 45), not one per trial
    df = _reference_rows({"halfcheetah-medium-expert": {0: [10, 20], 1: [30, 30], 2: [44, 46]}},
                         {"halfcheetah-medium-expert": 55.0})
    runs = A.bc_runs(df)
    assert runs["score"].tolist() == [15, 30, 45] and (runs["n_trials"] == 2).all()
    t = A.reference_table(df, reps=1000).set_index("reference")
    assert list(t.index) == ["bc", "behavior data"]
    bc = t.loc["bc"]
    assert bc["n_seeds"] == 3 and bc["aggregate"] == "mean" and bc["dataset"] == "halfcheetah-medium-expert"
    assert (bc["mean"], bc["ci_low"], bc["ci_high"]) == A.mean_ci([15, 30, 45], reps=1000)
    assert bc["mean"] == 30 and 15 <= bc["ci_low"] < 30 < bc["ci_high"] <= 45
    # counting each trial's copy would narrow the CI (6 "runs")
    assert (bc["ci_low"], bc["ci_high"]) != A.mean_ci([15, 15, 30, 30, 45, 45], reps=1000)[1:]
    beh = t.loc["behavior data"]
    assert beh["mean"] == 55 and np.isnan(beh["ci_low"]) and np.isnan(beh["ci_high"]) and np.isnan(beh["n_seeds"])


def test_references_per_dataset_and_per_family():
    bc = {"halfcheetah-medium-expert": {0: [40], 1: [50], 2: [60]},
          "pointmaze-umaze": {0: [10], 1: [20], 2: [30]},
          "pointmaze-medium": {0: [40], 1: [50], 2: [60]}}
    behavior = {"halfcheetah-medium-expert": 55.0, "pointmaze-umaze": 30.0, "pointmaze-medium": 20.0}
    df = _reference_rows(bc, behavior)
    per_ds = A.reference_table(df, by="dataset", reps=500)
    assert list(per_ds.columns) == list(A.REFERENCE_COLUMNS)
    beh = per_ds[per_ds["reference"] == "behavior data"].set_index("dataset")["mean"].to_dict()
    assert beh == behavior
    assert per_ds[per_ds["reference"] == "bc"].set_index("dataset")["mean"].to_dict() == {
        "halfcheetah-medium-expert": 50, "pointmaze-umaze": 20, "pointmaze-medium": 50}
    fam = A.reference_table(df, by="family", reps=500).set_index(["family", "reference"])
    assert list(fam.index) == [("locomotion", "bc"), ("locomotion", "behavior data"), ("maze", "bc"),
                               ("maze", "behavior data")]
    assert fam.loc[("maze", "behavior data"), "mean"] == 25  # mean over the family's datasets
    assert fam.loc[("locomotion", "behavior data"), "mean"] == 55
    maze = fam.loc[("maze", "bc")]
    # as the family's bars: IQM of the 3 seeds x 2 tasks runs (middle 4 of 10..60), stratified bootstrap
    assert maze["aggregate"] == "IQM" and maze["mean"] == pytest.approx(35.0)
    assert (maze["mean"], maze["ci_low"], maze["ci_high"]) == A.stratified_iqm_ci([[40, 50, 60], [10, 20, 30]],
                                                                                  reps=500)
    assert maze["n_seeds"] == 3 and maze["n_tasks"] == 2 and maze["dataset"] == "pointmaze-medium;pointmaze-umaze"


def test_prior_reference_is_the_latent_trials_unguided_prior_deduplicated():
    # two latent-action trials (different energy models, one shared prior: identical prior rows) and a raw
    # trial whose own prior scores differently and must not enter the line
    rows = []
    for tid, modeling in (("lat-q", "latent"), ("lat-mse", "latent"), ("raw", "raw")):
        for s, scores in {0: [10, 20], 1: [30, 30], 2: [44, 46]}.items():
            for e, v in enumerate(scores):
                for variant, score in (("latentdiffuser", 1.0), ("bc", 5.0),
                                       ("prior", v if modeling == "latent" else 90.0)):
                    rows.append({"trial_id": f"{tid}-{s}", "variant": variant, "modeling": modeling,
                                 "dataset_name": "pointmaze-umaze", "env_id": ENV["pointmaze-umaze"], "seed": s,
                                 "episode": e, "normalized_score": score, "behavior_score": 30.0})
    df = pd.DataFrame(rows)
    runs = A.prior_runs(df)
    assert runs["score"].tolist() == [15, 30, 45] and (runs["n_trials"] == 2).all()
    t = A.reference_table(df, by="family", reps=1000, prior=True).set_index("reference")
    assert list(t.index) == ["bc", "behavior data", "prior"]
    pr = t.loc["prior"]
    assert (pr["mean"], pr["ci_low"], pr["ci_high"]) == A.mean_ci([15, 30, 45], reps=1000)
    assert pr["n_seeds"] == 3 and pr["family"] == "maze"
    # off by default (Figure 5 reads the prior as its beta = 0 bar), and absent where rows lack `modeling`
    assert "prior" not in set(A.reference_table(df, reps=100)["reference"])
    assert "prior" not in set(A.reference_table(df.drop(columns=["modeling"]), reps=100, prior=True)["reference"])
    assert A.prior_runs(df[df["modeling"] == "raw"]).empty


def test_no_references_without_bc_rows_or_behavior_score():
    df = _reference_rows({"halfcheetah-medium-expert": {0: [10], 1: [20]}}, {"halfcheetah-medium-expert": 55.0})
    old = df[df["variant"] != "bc"].drop(columns=["behavior_score"])
    for by in ("dataset", "family"):
        t = A.reference_table(old, by=by)
        assert t.empty and list(t.columns) == list(A.REFERENCE_COLUMNS)
    # only one of the two: only that line
    assert A.reference_table(df.drop(columns=["behavior_score"]))["reference"].tolist() == ["bc"]
    assert A.reference_table(df[df["variant"] != "bc"])["reference"].tolist() == ["behavior data"]
    # behavior_score NaN (a dataset without reference scores): no behavior line
    assert A.reference_table(df.assign(behavior_score=float("nan")))["reference"].tolist() == ["bc"]
    with pytest.raises(ValueError, match="by must be"):
        A.reference_table(df, by="panel")


def test_committed_results_references_follow_their_data():
    """Both figures' committed Parquet (today's D4RL-faithful data) carries bc rows and behavior_score, so they
    draw both lines; Figure 3's latent trials also carry the unguided prior's rows, its third line."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "analysis" / "figures"
    refs = {}
    for suite, by in (("figure5", "dataset"), ("figure3", "family")):
        results = root / suite / "results"
        if not list(results.glob("*.parquet")):
            pytest.skip(f"no committed results under {results}")
        refs[suite] = A.reference_table(A.load_results(results, suite), by=by, reps=100, prior=suite == "figure3")
    f5 = refs["figure5"].set_index("reference")
    assert set(f5.index) == {"bc", "behavior data"} and f5.loc["bc", "n_seeds"] == 3
    assert f5.loc["bc", "mean"] < f5.loc["behavior data", "mean"]
    f3 = refs["figure3"].set_index(["family", "reference"])
    assert list(f3.index) == [(f, r) for f in ("locomotion", "maze") for r in ("bc", "behavior data", "prior")]
    assert (f3["n_tasks"] == 2).all() and (f3["n_seeds"].dropna() == 3).all()


def _hlines(ax) -> list[float]:
    """y of every horizontal Line2D spanning the panel (axhline), except the zero line (error-bar caps are
    markers without a line)."""
    ys = []
    for line in ax.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        if line.get_linestyle() in ("None", "", " "):
            continue
        if len(y) == 2 and y[0] == y[1] and y[0] != 0:
            ys.append(float(y[0]))
    return sorted(ys)


def _fig5_bars() -> pd.DataFrame:
    return pd.DataFrame({"panel": ["latent_step", "latent_step", "beta"], "panel_title": ["L", "L", "beta"],
                         "setting": ["1", "3", "3"], "is_default": [False, True, True],
                         "mean": [40.0, 52.0, 52.0], "ci_low": [35.0, 50.0, 50.0], "ci_high": [45.0, 54.0, 54.0],
                         "n_seeds": [3, 3, 3]})


def _fig3_bars() -> pd.DataFrame:
    rows = []
    for fam, tasks in (("locomotion", "halfcheetah-medium-expert"), ("maze", "pointmaze-medium;pointmaze-umaze")):
        for i, sel in enumerate(A.SELECTIONS[:2]):
            rows.append({"panel": fam, "panel_title": A.FAMILY_TITLES[fam], "setting": sel, "aggregate": "mean",
                         "mean": 40.0 + i, "ci_low": 38.0 + i, "ci_high": 42.0 + i, "n_seeds": 3,
                         "n_tasks": len(tasks.split(";")), "tasks": tasks})
    return pd.DataFrame(rows)


def test_plots_draw_the_reference_lines_in_every_relevant_panel():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bc = {"halfcheetah-medium-expert": {0: [40], 1: [50], 2: [60]},
          "pointmaze-umaze": {0: [10], 1: [20], 2: [30]}, "pointmaze-medium": {0: [40], 1: [50], 2: [60]}}
    df = _reference_rows(bc, {"halfcheetah-medium-expert": 55.0, "pointmaze-umaze": 30.0, "pointmaze-medium": 20.0})

    refs5 = A.reference_table(df[df["dataset_name"] == "halfcheetah-medium-expert"], reps=200)
    fig = A.plot_figure5(_fig5_bars(), title="t", references=refs5)
    assert len(fig.axes) == 2
    for ax in fig.axes:  # one dataset: the same two lines in every panel
        assert _hlines(ax) == [50.0, 55.0]
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert sum("behavior cloning" in s for s in legend) == 1 and sum("behavior data" in s for s in legend) == 1
    plt.close(fig)

    refs3 = A.reference_table(df, by="family", reps=200)
    fig = A.plot_figure3(_fig3_bars(), title="t", references=refs3)
    loco, maze = fig.axes
    assert _hlines(loco) == [50.0, 55.0] and _hlines(maze) == [25.0, 35.0]  # each family its own levels
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert len(legend) == 2
    plt.close(fig)
    # the unguided prior's line, where the references carry it: a third line and legend entry
    prior_refs = pd.concat([refs3, refs3[refs3["reference"] == "bc"].assign(reference="prior", mean=7.0)])
    fig = A.plot_figure3(_fig3_bars(), title="t", references=prior_refs)
    assert all(7.0 in _hlines(ax) for ax in fig.axes)
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert len(legend) == 3 and sum("unguided latent prior" in s for s in legend) == 1
    plt.close(fig)

    # without references (old results): no lines, no extra legend entries
    for fig in (A.plot_figure5(_fig5_bars()), A.plot_figure5(_fig5_bars(), references=refs5.iloc[:0])):
        assert all(_hlines(ax) == [] for ax in fig.axes)
        assert len([t for leg in fig.legends for t in leg.get_texts()]) == 2
        plt.close(fig)
    for fig in (A.plot_figure3(_fig3_bars()), A.plot_figure3(_fig3_bars(), references=refs3.iloc[:0])):
        assert all(_hlines(ax) == [] for ax in fig.axes) and not fig.legends
        plt.close(fig)


def test_task_mean_ci_weighs_every_task_the_same_and_resamples_within_tasks():
    from ld.analysis.stats import task_mean_ci

    # a task with 2 values and one with 6: the average of the two task means, not of the 8 values
    m, lo, hi = task_mean_ci([[0.0, 0.0], [10.0, 10.0, 10.0, 10.0, 10.0, 10.0]])
    assert m == pytest.approx(5.0) and lo == pytest.approx(5.0) and hi == pytest.approx(5.0)
    m, lo, hi = task_mean_ci([[0.0, 2.0], [10.0, 12.0, 14.0]], reps=4000)
    assert m == pytest.approx((1.0 + 12.0) / 2) and lo < m < hi
    # within-task resampling only: the CI's extremes are the tasks' own extremes averaged
    assert lo >= (0.0 + 10.0) / 2 and hi <= (2.0 + 14.0) / 2
    assert all(math.isnan(v) for v in task_mean_ci([[3.0], [4.0]])[1:])
    assert all(math.isnan(v) for v in task_mean_ci([]))
