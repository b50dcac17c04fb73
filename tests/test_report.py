"""`latentdiffuser report` end to end on suite-shaped results: the notebooks run headless, the figures' content is
checked from the tidy CSV, missing trials and failures are listed, bad results are one error (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from ld.analysis import SELECTIONS
from ld.results import write_parquet
from results_fixtures import figure3_with_two_maze_tasks, rng_scores, write_suite_results

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LD_BOOTSTRAP_REPS": "1000"}


def ld_report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ld.cli", "report", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


BEHAVIOR = {"halfcheetah-medium-expert": 55.0, "halfcheetah-medium-replay": 27.0, "pointmaze-umaze": 30.0,
            "pointmaze-medium": 20.0}


def bc_score(dataset: str, seed: int, episode: int) -> float:
    return 30.0 + 5.0 * seed + episode + (10.0 if "maze" in dataset else 0.0)


def add_reference_rows(folder) -> None:
    """What a trial with `eval.bc_baseline` writes on top: `bc` rows (the same in every trial of a dataset
    and seed: one BC policy, the same env seeds) and `behavior_score` (constant per dataset) in every row."""
    for f in sorted(folder.glob("trial=*.parquet")):
        df = pd.read_parquet(f)
        first = df[df["variant"] == df["variant"].iloc[0]]
        ds, seed = first["dataset_name"].iloc[0], int(first["seed"].iloc[0])
        bc = first.assign(variant="bc", normalized_score=[bc_score(ds, seed, e) for e in first["episode"]])
        write_parquet(pd.concat([df, bc], ignore_index=True).assign(behavior_score=BEHAVIOR[ds]), f)


def _is(value):
    return lambda t: t.axis == "latent_step" and t.value == value and t.config.seed == 1


@pytest.fixture(scope="module")
def fig5_report(tmp_path_factory):
    """figure5 at small scale with the L = 2, seed 1 trial missing and a failure record for it."""
    storage = tmp_path_factory.mktemp("storage5")
    suite, trials, folder = write_suite_results(storage, "figure5", "small", score=rng_scores(5), skip=_is(2))
    add_reference_rows(folder)
    write_parquet(pd.DataFrame([{"suite": "figure5", "trial_id": "abc", "seed": 1, "status": "failed",
                                 "sweep.axis": "latent_step", "sweep.value": "2", "rows": 0,
                                 "error": "RuntimeError: CUDA out of memory"}]),
                  folder / "_status" / "trial=abc-seed=1.parquet")
    out = tmp_path_factory.mktemp("report5") / "figure5"
    p = ld_report("figure5", "--results", storage, "--out", out)
    assert p.returncode == 0, p.stdout + p.stderr
    return suite, storage, out, p


@pytest.fixture(scope="module")
def fig3_report(tmp_path_factory):
    storage = tmp_path_factory.mktemp("storage3")
    suite_file = figure3_with_two_maze_tasks(storage)  # a suite given as a file, not a name
    suite, trials, folder = write_suite_results(storage, suite_file, "small", score=rng_scores(3))
    add_reference_rows(folder)
    out = tmp_path_factory.mktemp("report3") / "figure3"
    p = ld_report(suite_file, "--results", folder, "--out", out)  # the results/<suite>/ folder itself
    assert p.returncode == 0, p.stdout + p.stderr
    return suite, storage, out, p


def test_figure5_report_writes_every_artifact(fig5_report):
    _, _, out, _ = fig5_report
    for name in ("figure5.png", "figure5.svg", "figure5.csv", "figure5.ipynb", "index.html", "suite.yaml",
                 "report.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "figure5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nb = nbformat.read(out / "figure5.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)  # executed, every cell
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    assert not list(out.parent.glob(".figure5.tmp-*"))


def test_figure5_content_from_the_tidy_csv(fig5_report):
    suite, storage, out, _ = fig5_report
    t = pd.read_csv(out / "figure5.csv")
    for col in ("panel", "setting", "mean", "ci_low", "ci_high", "n_seeds", "n_episodes", "is_default"):
        assert col in t.columns
    assert list(dict.fromkeys(t["panel"])) == ["latent_step", "horizon", "beta", "diffusion_steps"]
    base = suite.base_values("small")
    axes = suite.axes("small")
    bars = t.groupby("panel", sort=False).size().to_dict()
    assert bars == {a: len({float(v) for v in axes[a]} | {float(base[a])}) for a in bars}
    assert t.groupby("panel")["is_default"].sum().eq(1).all()
    assert t[t.panel == "latent_step"]["setting"].astype(str).tolist() == ["1", "2", "3", "4"]
    assert t[t.panel == "beta"]["setting"].astype(str).tolist() == ["0", "0.03", "0.1", "0.3", "3", "100"]
    assert t[t.panel == "horizon"]["setting"].tolist() == ["H=4\nT=12", "H=8\nT=24", "H=16\nT=48"]
    # values: an independent computation from the Parquet
    df = pd.concat(pd.read_parquet(f) for f in (storage / "results" / "figure5").glob("trial=*.parquet"))
    guided = df[df.variant == "latentdiffuser"]
    for _, r in t[t.panel == "latent_step"].iterrows():
        rows = guided[guided.latent_step == int(r["setting"])]
        rows = rows[rows["sweep.axis"].isin(["latent_step", "default"])]
        per_seed = rows.groupby("seed")["normalized_score"].mean()
        assert r["mean"] == pytest.approx(per_seed.mean())
        assert r["n_seeds"] == per_seed.size == (2 if r["setting"] == "2" else 3)  # L = 2 seed 1 is missing
    beta0 = df[(df["sweep.axis"] == "beta") & (df["sweep.value"] == "0") & (df.variant != "bc")]
    assert set(beta0.variant) == {"prior"}
    r0 = t[(t.panel == "beta") & (t.setting.astype(str) == "0")].iloc[0]
    assert r0["mean"] == pytest.approx(beta0.groupby("seed")["normalized_score"].mean().mean())


def test_figure5_references_are_written_and_shown(fig5_report):
    _, storage, out, _ = fig5_report
    refs = pd.read_csv(out / "figure5_references.csv").set_index("reference")
    assert list(refs.index) == ["bc", "behavior data"]
    assert set(refs["dataset"]) == {"halfcheetah-medium-expert"}
    # bc: one score per seed although every trial repeats the rows (and L = 2 seed 1 is missing)
    df = pd.concat(pd.read_parquet(f) for f in (storage / "results" / "figure5").glob("trial=*.parquet"))
    bc = df[df.variant == "bc"]
    assert bc["trial_id"].nunique() > 3 and refs.loc["bc", "n_seeds"] == 3
    assert refs.loc["bc", "mean"] == pytest.approx(bc.groupby("seed")["normalized_score"].mean().mean())
    assert refs.loc["bc", "ci_low"] < refs.loc["bc", "mean"] < refs.loc["bc", "ci_high"]
    assert refs.loc["behavior data", "mean"] == 55.0
    assert "figure5_references" in (out / "index.html").read_text()


def test_missing_trial_is_plotted_around_and_listed(fig5_report):
    _, _, out, p = fig5_report
    rep = json.loads((out / "report.json").read_text())
    assert rep["scale"] == "small" and rep["expected_trials"] == rep["found_trials"] + 1
    assert [(m["axis"], m["value"], m["seed"]) for m in rep["missing"]] == [("latent_step", "2", 1)]
    assert rep["missing"][0]["failure"] == "RuntimeError: CUDA out of memory"
    assert "missing: latent_step=2 seed=1 (failed: RuntimeError: CUDA out of memory)" in p.stdout
    page = (out / "index.html").read_text()
    assert "1 of the" in page and "have no results" in page and "CUDA out of memory" in page
    assert "<svg" in page and "git commit" in page and "hardware" in page and "latent_step: [1, 2, 3, 4]" in page


def test_figure3_content_from_the_tidy_csv(fig3_report):
    _, storage, out, p = fig3_report
    assert "0 missing" in p.stdout
    t = pd.read_csv(out / "figure3.csv")
    assert list(dict.fromkeys(t["panel"])) == ["locomotion", "maze"]
    for fam, g in t.groupby("panel"):
        assert g["setting"].tolist() == list(SELECTIONS)
        assert set(g["aggregate"]) == ({"mean"} if fam == "locomotion" else {"IQM"})
        assert (g["n_seeds"] == 3).all() and (g["ci_low"] <= g["mean"]).all() and (g["mean"] <= g["ci_high"]).all()
    df = pd.concat(pd.read_parquet(f) for f in (storage / "results" / "figure3").glob("trial=*.parquet"))
    loco = df[(df.variant == "latentdiffuser") & (df.dataset_name == "halfcheetah-medium-replay")]
    raw = loco[loco.modeling == "raw"].groupby("seed")["normalized_score"].mean().mean()
    got = t[(t.panel == "locomotion") & (t.setting == "raw action space")]["mean"].iloc[0]
    assert got == pytest.approx(raw, abs=1e-4)
    refs = pd.read_csv(out / "figure3_references.csv").set_index(["family", "reference"])
    assert list(refs.index) == [("locomotion", "bc"), ("locomotion", "behavior data"), ("locomotion", "prior"),
                                ("maze", "bc"), ("maze", "behavior data"), ("maze", "prior")]
    # the unguided prior's line: the latent trials' prior rows, one score per (task, seed), as prior_runs has it
    from ld.analysis import prior_runs

    loco_prior = prior_runs(df[df.dataset_name == "halfcheetah-medium-replay"])
    assert refs.loc[("locomotion", "prior"), "mean"] == pytest.approx(loco_prior["score"].mean(), abs=1e-4)
    task_refs = pd.read_csv(out / "figure3_task_references.csv")
    assert set(task_refs["dataset"]) == {"halfcheetah-medium-replay", "pointmaze-medium", "pointmaze-umaze"}
    assert set(task_refs["reference"]) == {"bc", "behavior data", "prior"}
    assert refs.loc[("maze", "behavior data"), "mean"] == pytest.approx(25.0)  # mean of the two maze datasets
    assert refs.loc[("maze", "bc"), "aggregate"] == "IQM" and refs.loc[("maze", "bc"), "n_seeds"] == 3
    tasks = pd.read_csv(out / "figure3_tasks.csv")
    assert sorted(tasks["task"].unique()) == ["halfcheetah-medium-replay", "pointmaze-medium", "pointmaze-umaze"]
    assert (out / "figure3.svg").is_file() and (out / "figure3.png").is_file()


def ld_report_inproc(capsys, *args) -> subprocess.CompletedProcess:
    """The same command in this process (no kernel is started on these paths): faster than a subprocess."""
    from ld.report import main

    capsys.readouterr()
    rc = main(["report", *map(str, args)])
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, cap.out, cap.err)


def test_empty_or_wrong_schema_results_are_one_error_and_write_nothing(tmp_path, fig5_report, capsys):
    _, storage, _, _ = fig5_report
    one = next((storage / "results" / "figure5").glob("trial=*.parquet"))
    cases = {
        "empty": pd.read_parquet(one).iloc[:0],
        "wrong": pd.DataFrame({"episode": [0, 1], "score": [1.0, 2.0]}),
    }
    for name, frame in cases.items():
        folder = tmp_path / name / "results" / "figure5"
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "trial=x-seed=0.parquet")
        out = tmp_path / f"out_{name}"
        p = ld_report_inproc(capsys, "figure5", "--results", tmp_path / name, "--out", out)
        assert p.returncode == 2, p.stdout + p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("latentdiffuser report: error:") and "Traceback" not in p.stderr
        assert ("no rows" in lines[0]) if name == "empty" else ("missing columns" in lines[0])
        assert not out.exists() and not list(tmp_path.glob(".out_*"))
    p = ld_report_inproc(capsys, "figure5", "--results", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert p.returncode == 2 and "results not found" in p.stderr
    p = ld_report_inproc(capsys, "no_such_suite", "--results", storage)
    assert p.returncode == 2 and "unknown suite" in p.stderr


def test_failures_are_the_failed_status_rows_the_sink_writes(tmp_path):
    """`_status/trial=*.parquet`, one row per trial as `latentdiffuser sweep` writes them: only `failed` rows are
    listed, with the last line of the error; other files in the folder are not status rows."""
    from ld.analysis import load_status
    from ld.distributed import sink
    from ld.report import failed_trials

    folder = tmp_path / "results" / "figure5"
    folder.mkdir(parents=True)
    pd.DataFrame({"a": [1]}).to_parquet(folder / "trial=aaa-seed=0.parquet")
    assert load_status(tmp_path, "figure5").empty and failed_trials(load_status(tmp_path, "figure5")) == []
    sink.write_status(tmp_path, "figure5", "aaa", 0, status="ok", axis="beta", value=3, rows=10)
    sink.write_status(tmp_path, "figure5", "bbb", 1, status="failed", axis="latent_step", value=2,
                      error=RuntimeError("while training the prior\nCUDA out of memory"))
    (folder / "_status" / "notes.json").write_text('{"status": "failed"}')
    (folder / "_status" / ".trial=ccc-seed=2.parquet.7.tmp").write_text("half written")
    expected = [{"file": "trial=bbb-seed=1.parquet", "status": "failed", "axis": "latent_step", "value": "2",
                 "seed": "1", "error": "CUDA out of memory"}]
    assert failed_trials(load_status(tmp_path, "figure5")) == expected  # a storage root
    assert failed_trials(load_status(folder)) == expected  # the results folder itself
    assert len(load_status(folder)) == 2


def test_cost_sums_the_finished_trials_wall_time_and_counts_stage_runs(tmp_path):
    """report.json's `cost`: trial-minutes from the status rows `latentdiffuser sweep` writes (each trial's
    wall time once, its last ok row), with the stage runs trained and reused; failed trials cost nothing here."""
    from ld.analysis import load_status
    from ld.distributed import sink
    from ld.report import trial_cost

    assert trial_cost(pd.DataFrame()) == {}  # results without status rows
    folder = tmp_path / "results" / "figure5"
    folder.mkdir(parents=True)
    pd.DataFrame({"a": [1]}).to_parquet(folder / "trial=aaa-seed=0.parquet")  # load_status looks beside results
    sink.write_status(tmp_path, "figure5", "aaa", 0, status="ok", axis="default", rows=30,
                      extra={"wall_s": 540.0, "trained": "vae,prior,support,energy", "reused": "bc"})
    sink.write_status(tmp_path, "figure5", "bbb", 0, status="ok", axis="beta", value=0.1, rows=30,
                      extra={"wall_s": 120.0, "trained": "energy", "reused": "vae,prior,support,bc"})
    sink.write_status(tmp_path, "figure5", "ccc", 0, status="failed", axis="beta", value=1, error="boom")
    cost = trial_cost(load_status(tmp_path, "figure5"))
    assert cost["trials timed"] == 2 and cost["trial-minutes"] == 11.0
    assert (cost["stage runs trained"], cost["stage runs reused"]) == (5, 5)


def test_report_states_its_cost(fig5_report, tmp_path):
    from ld.distributed import sink

    _, storage, _, _ = fig5_report
    sink.write_status(storage, "figure5", "zzz", 9, status="ok", axis="beta", value=0, rows=0,
                      extra={"wall_s": 90.0, "trained": "energy", "reused": ""})
    try:
        out = tmp_path / "figure5"
        p = ld_report("figure5", "--results", storage, "--out", out)
        assert p.returncode == 0, p.stdout + p.stderr
        cost = json.loads((out / "report.json").read_text())["cost"]
        assert cost["trial-minutes"] == 1.5 and cost["trials timed"] == 1
        assert "cost: 1.5 trial-minutes over 1 finished trials" in p.stdout
        assert "<h3>Cost</h3>" in (out / "index.html").read_text()
    finally:
        (storage / "results" / "figure5" / "_status" / "trial=zzz-seed=9.parquet").unlink()


def test_stale_trials_are_those_trained_by_another_stage_version(fig5_report):
    from ld.report import stale_stages, stale_text
    from ld.stages import dag

    now = dag.VAE.version
    df = pd.DataFrame({"trial_id": ["a", "a", "b", "c", "d"], "seed": [0, 0, 0, 0, 0],
                       "stage.vae.key": ["k1", "k1", "k2", "k3", None],
                       "stage.vae.version": [now, now, now - 1, float("nan"), float("nan")]})
    got = stale_stages(df)
    # a: current; b: an older version; c: written before versions were recorded; d: used no VAE
    assert got == {"trials": 2, "of": 4, "stages": {"vae": f"not recorded, v{now - 1} (now v{now}; 2 trials)"}}
    assert "2 of 4 trials" in stale_text(got) and stale_text({}) == ""
    assert stale_stages(df[df["trial_id"] == "a"]) == {}
    # trials on built-in data a retired generator made (HalfCheetah before v3, or not recorded) are stale too;
    # the maze family's recipe did not change, and a user's file is never "retired"
    data = pd.DataFrame({"trial_id": ["e", "f", "g", "h", "i"], "seed": 0,
                         "dataset": ["builtin:halfcheetah-medium-expert", "builtin:halfcheetah-medium-expert",
                                     "builtin:pointmaze-umaze", "/d/halfcheetah-medium-expert-v2.hdf5",
                                     "builtin:hopper-medium"],
                         "dataset_name": ["halfcheetah-medium-expert", "halfcheetah-medium-expert", "pointmaze-umaze",
                                          "halfcheetah-medium-expert-v2", "hopper-medium"],
                         "dataset_generator_version": [None, "3", None, None, "2"]})
    got = stale_stages(data)
    assert got["trials"] == 2 and got["of"] == 5
    assert got["stages"] == {"data": "halfcheetah-medium-expert, hopper-medium made by a retired built-in generator "
                                     "(2 trials)"}
    assert "retired built-in data" in stale_text(got)
    # the fixture's results record no stage keys: nothing to call stale, and the page says nothing
    _, _, out, p = fig5_report
    assert json.loads((out / "report.json").read_text())["stale"] == {}
    assert "Stale" not in (out / "index.html").read_text() and "Stale" not in p.stdout
