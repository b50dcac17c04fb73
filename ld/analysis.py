"""Aggregation and plotting for the paper's figures, from the results Parquet only.

    load_results(uri, suite=None)          every results table under `uri`, schema-checked (ResultsError)
    method_rows(df)                        the rows of the method itself (LatentDiffuser; the beta = 0 trial's
                                           unguided planner counts as the method at beta = 0)
    per_seed(df, keys)                     one score per run: mean normalized score over its episodes
    mean_ci(x) / iqm(x) / stratified_iqm_ci(tasks)   the statistics (pure numpy, no rliable needed)
    figure5_table(df) / figure3_table(df)  tidy tables: one row per plotted bar
    reference_table(df, by)                the levels a bar is read against: BC (deduplicated across trials)
                                           and the behavior data, per dataset or task family; empty for
                                           results without bc rows / behavior_score
    figure5_findings(df) / figure3_findings(df)   each finding of the paper as a paired difference over
                                           seeds with a bootstrap CI and a verdict (agrees/contradicts/...)
    plot_figure5(table, references=None) / plot_figure3(table, references=None), save_figure(fig, out_dir, stem)

Statistics follow Agarwal et al. (2021, `rliable`): a setting's score on one task is the mean over seeds of
the per-seed mean over evaluation episodes, with a 95% percentile bootstrap CI over seeds; a family of
several tasks is summarized by the interquartile mean (IQM, the 25%-trimmed mean) of the runs x tasks score
matrix, with a stratified bootstrap CI (runs resampled with replacement within each task).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from ld.results import REQUIRED_COLUMNS

SWEEP_AXIS, SWEEP_VALUE = "sweep.axis", "sweep.value"
METHOD = "latentdiffuser"

FIGURE5_AXES = ("latent_step", "horizon", "beta", "diffusion_steps")
FIGURE5_TITLES = {
    "latent_step": "Latent steps L",
    "horizon": "Planning horizon H = T / L",
    "beta": "Inverse temperature \N{GREEK SMALL LETTER BETA}",
    "diffusion_steps": "Diffusion steps K",
}
# Figure 3: (label, predicate on one row's config) in the order the bars are drawn.
SELECTIONS = ("latent actions", "raw action space", "skill space", "return as energy", "E-MSE", "MSE")
SHORT_LABELS = {"latent actions": "latent\nactions", "raw action space": "raw\nactions", "skill space": "skill\nspace",
                "return as energy": "return\nenergy", "E-MSE": "E-MSE", "MSE": "MSE"}
FAMILY_TITLES = {
    "locomotion": "Locomotion (dense reward)",
    "maze": "Maze (long horizon, sparse reward)",
    "adroit": "Adroit",
    "kitchen": "Kitchen",
    "other": "Other tasks",
}
TIDY_COLUMNS = ("panel", "setting", "mean", "ci_low", "ci_high", "n_seeds", "n_episodes")


class ResultsError(ValueError):
    """A results set that cannot be analyzed (none, empty, wrong schema), phrased for the user."""


# ----------------------------------------------------------------------------------------------------
# reading


def _fs_and_path(uri: str | Path):
    import pyarrow.fs as pafs

    s = str(uri)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s) and not s.startswith("file://"):
        fs, path = pafs.FileSystem.from_uri(s)
        return fs, path
    if s.startswith("file://"):
        s = s[len("file://"):]
    return pafs.LocalFileSystem(), str(Path(s).expanduser().resolve())


def find_parquet_files(uri: str | Path, suite: Optional[str] = None) -> list[str]:
    """Parquet files of a results set. `uri` may be a sweep storage root (its `results/<suite>/` is used),
    a `results/<suite>/` folder, an `ld run --out` folder (its `results/`), or one Parquet file."""
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ResultsError(f"results not found: {uri}")
    if info.type == pafs.FileType.File:
        return [path]
    candidates = []
    if suite:
        candidates.append(f"{path}/results/{suite}")
    candidates += [path, f"{path}/results"]
    for folder in candidates:
        if fs.get_file_info(folder).type != pafs.FileType.Directory:
            continue
        files = sorted(
            f.path for f in fs.get_file_info(pafs.FileSelector(folder, recursive=False))
            if f.type == pafs.FileType.File and f.base_name.endswith(".parquet") and not f.base_name.startswith(".")
        )
        if files:
            return files
    where = f"{path}/results/{suite}/, " if suite else ""
    raise ResultsError(f"no results (*.parquet) under {uri} (looked in {where}{path}/ and {path}/results/)")


def results_dir(uri: str | Path, suite: Optional[str] = None) -> str:
    """The folder that holds the results files (where `_status/` lives, if anywhere)."""
    files = find_parquet_files(uri, suite)
    return files[0].rsplit("/", 1)[0]


def load_results(uri: str | Path, suite: Optional[str] = None) -> pd.DataFrame:
    """All results rows under `uri`, checked against the results schema; rows of other suites dropped.
    Raises ResultsError (one message) when there is nothing usable."""
    import pyarrow.parquet as pq

    fs, _ = _fs_and_path(uri)
    frames = []
    for f in find_parquet_files(uri, suite):
        try:
            table = pq.read_table(f, filesystem=fs)
        except Exception as e:  # pyarrow raises several types for a corrupt or non-Parquet file
            raise ResultsError(f"{f}: not a readable Parquet file ({type(e).__name__}: {e})") from None
        df = table.to_pandas()
        missing = [c for c in (*REQUIRED_COLUMNS, "seed") if c not in df.columns]
        if missing:
            raise ResultsError(f"{f}: not an ld results table (missing columns: {', '.join(missing)})")
        if len(df) == 0:
            continue
        frames.append(df)
    if not frames:
        raise ResultsError(f"results under {uri} hold no rows")
    df = pd.concat(frames, ignore_index=True, sort=False)
    if suite and "suite" in df.columns and (df["suite"] == suite).any():
        df = df[df["suite"] == suite].reset_index(drop=True)
    elif suite and "suite" in df.columns and SWEEP_AXIS in df.columns:
        found = ", ".join(sorted(map(str, df["suite"].unique())))
        raise ResultsError(f"results under {uri} are for suite(s) {found}, not {suite}")
    if df["normalized_score"].isna().all():
        raise ResultsError(f"results under {uri}: normalized_score is empty in every row")
    return df


# ----------------------------------------------------------------------------------------------------
# selecting rows


def method_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The method's rows: `variant == latentdiffuser`; a trial with no such rows whose rows all have
    beta = 0 (the beta = 0 point: planning without energy guidance) contributes its `prior` rows."""
    keep = df["variant"] == METHOD
    has_method = df.loc[keep, "trial_id"].unique()
    rest = df[~df["trial_id"].isin(has_method) & (df["variant"] == "prior")]
    if len(rest):
        zero_beta = rest.groupby("trial_id")["beta"].apply(lambda b: bool((b == 0).all()))
        keep |= df["trial_id"].isin(zero_beta[zero_beta].index) & (df["variant"] == "prior")
    return df[keep]


def per_seed(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per (keys..., seed): the mean normalized score over that run's episodes and their count."""
    g = df.groupby([*keys, "seed"], dropna=False, sort=False)["normalized_score"]
    return g.agg(score="mean", n_episodes="count").reset_index()


# ----------------------------------------------------------------------------------------------------
# statistics


def mean_ci(x: Iterable[float], reps: int = 10000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float, float]:
    """Mean and its percentile bootstrap CI; the CI is NaN with fewer than 2 values (nothing to resample)."""
    x = np.asarray(list(x), dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (float("nan"),) * 3
    m = float(x.mean())
    if len(x) < 2:
        return m, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(reps, len(x)))].mean(1)
    return m, float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def iqm(x: Iterable[float], axis: Optional[int] = None) -> Any:
    """Interquartile mean: the mean of the middle 50% (scipy.stats.trim_mean(x, 0.25), as rliable)."""
    a = np.asarray(x, dtype=float)
    if axis is None:
        a, axis = a.ravel(), 0
    a = np.sort(a, axis=axis)
    n = a.shape[axis]
    cut = int(0.25 * n)
    return np.take(a, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_iqm_ci(tasks: Sequence[Iterable[float]], reps: int = 10000, seed: int = 0, alpha: float = 0.05,
                      stat: Callable = iqm) -> tuple[float, float, float]:
    """`stat` (IQM) over the runs of all tasks, with a stratified bootstrap CI: each replicate resamples
    every task's runs with replacement within that task (rliable's StratifiedBootstrap; tasks may have
    different numbers of runs). CI is NaN when no task has 2 runs."""
    cols = [np.asarray(list(t), dtype=float) for t in tasks]
    cols = [c[np.isfinite(c)] for c in cols]
    cols = [c for c in cols if len(c)]
    if not cols:
        return (float("nan"),) * 3
    point = float(stat(np.concatenate(cols)))
    if max(len(c) for c in cols) < 2:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    samples = np.concatenate([c[rng.integers(0, len(c), size=(reps, len(c)))] for c in cols], axis=1)
    boots = stat(samples, axis=1)
    return point, float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))


# ----------------------------------------------------------------------------------------------------
# Figure 5: one factor at a time


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v: float) -> str:
    return f"{v:g}"


def figure5_table(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """One row per bar: for each axis panel (L, H, beta, K, in that order, then any other axis), the
    axis's own trials plus the shared default point (`is_default`), sorted by value."""
    if SWEEP_AXIS not in df.columns:
        raise ResultsError(f"Figure 5 needs the sweep columns ({SWEEP_AXIS}, {SWEEP_VALUE}) that `ld sweep` writes")
    rows = method_rows(df)
    if rows.empty:
        raise ResultsError("no rows of the method (variant latentdiffuser, or the beta = 0 trial) in the results")
    axes = [a for a in rows[SWEEP_AXIS].astype(str).unique() if a not in ("default", "product")]
    axes = [a for a in FIGURE5_AXES if a in axes] + sorted(a for a in axes if a not in FIGURE5_AXES)
    if not axes:
        raise ResultsError("the results hold only the default point: no one-at-a-time axis to plot")
    out = []
    for axis in axes:
        if axis not in rows.columns:
            raise ResultsError(f"sweep axis {axis!r} has no column of that name in the results")
        panel = rows[rows[SWEEP_AXIS].isin([axis, "default"])]
        keys = list(dict.fromkeys([axis, "_default", "latent_step", "horizon"]))
        runs = per_seed(panel.assign(_default=panel[SWEEP_AXIS] == "default"), keys)
        for key, g in runs.groupby(keys, sort=False):
            k = dict(zip(keys, key))
            value, is_default, L, T = k[axis], k["_default"], k["latent_step"], k["horizon"]
            m, lo, hi = mean_ci(g["score"], reps=reps, seed=seed)
            v = _num(value)
            if axis == "horizon":
                label = f"H={_fmt(_num(T) / _num(L))}\nT={_fmt(_num(T))}"
            else:
                label = _fmt(v) if np.isfinite(v) else str(value)
            out.append({
                "panel": axis, "panel_title": FIGURE5_TITLES.get(axis, axis), "setting": label,
                "value": v, "is_default": bool(is_default), "latent_step": int(L), "horizon": int(T),
                "mean": m, "ci_low": lo, "ci_high": hi, "n_seeds": int(g["seed"].nunique()),
                "n_episodes": int(g["n_episodes"].sum()),
            })
    table = pd.DataFrame(out, columns=["panel", "panel_title", "setting", "value", "is_default", "latent_step",
                                       "horizon", "mean", "ci_low", "ci_high", "n_seeds", "n_episodes"])
    order = {a: i for i, a in enumerate(axes)}
    table = table.sort_values(["panel", "value"], key=lambda s: s.map(order) if s.name == "panel" else s)
    return table.reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------
# Figure 3: modeling selections per task family


def selection_label(row: pd.Series | dict) -> str:
    """The Figure 3 modeling selection a row's config is (one change from the method at a time)."""
    if row["modeling"] == "raw":
        return "raw action space"
    if row["modeling"] == "skill":
        return "skill space"
    if row["energy.target"] == "return":
        return "return as energy"
    if row["energy.loss"] == "emse":
        return "E-MSE"
    if row["energy.loss"] == "mse":
        return "MSE"
    return "latent actions"


def task_family(dataset_name: str, env_id: Optional[str] = None) -> str:
    """locomotion | maze | adroit | kitchen | other, from the env id (or the dataset name)."""
    s = f"{env_id or ''} {dataset_name or ''}".lower()
    if "maze" in s:
        return "maze"
    if any(k in s for k in ("halfcheetah", "hopper", "walker", "ant", "humanoid", "swimmer")):
        return "locomotion"
    if any(k in s for k in ("pen", "hammer", "door", "relocate", "adroit")):
        return "adroit"
    if "kitchen" in s:
        return "kitchen"
    return "other"


def _with_selection(df: pd.DataFrame) -> pd.DataFrame:
    rows = method_rows(df)
    if rows.empty:
        raise ResultsError("no rows of the method (variant latentdiffuser) in the results")
    sel = rows[["modeling", "energy.target", "energy.loss"]].apply(selection_label, axis=1)
    fam = [task_family(d, e) for d, e in zip(rows["dataset_name"], rows["env_id"])]
    return rows.assign(selection=sel.to_numpy(), family=fam, task=rows["dataset_name"].astype(str))


def figure3_task_table(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per task and selection: mean over seeds with a bootstrap CI (the numbers behind each family bar)."""
    runs = per_seed(_with_selection(df), ["family", "task", "selection"])
    out = []
    for (fam, task, sel), g in runs.groupby(["family", "task", "selection"], sort=False):
        m, lo, hi = mean_ci(g["score"], reps=reps, seed=seed)
        out.append({"family": fam, "task": task, "setting": sel, "mean": m, "ci_low": lo, "ci_high": hi,
                    "n_seeds": int(g["seed"].nunique()), "n_episodes": int(g["n_episodes"].sum())})
    t = pd.DataFrame(out)
    return _order_fig3(t, ["family", "task"])


def family_aggregate(runs: pd.DataFrame, task_col: str, tasks: Sequence[str], reps: int = 10000,
                     seed: int = 0) -> tuple[float, float, float, str]:
    """(score, ci_low, ci_high, aggregate) of per-run `score`s: IQM over runs x tasks with a stratified
    bootstrap CI when there are several tasks, else the mean over seeds with a bootstrap CI."""
    if len(tasks) > 1:
        m, lo, hi = stratified_iqm_ci([runs.loc[runs[task_col] == t, "score"] for t in tasks], reps=reps, seed=seed)
        return m, lo, hi, "IQM"
    m, lo, hi = mean_ci(runs["score"], reps=reps, seed=seed)
    return m, lo, hi, "mean"


def figure3_table(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """One row per bar: per family and selection, IQM over runs x tasks with a stratified bootstrap CI if
    the family has several tasks, else mean over seeds with a bootstrap CI (`aggregate` says which)."""
    runs = per_seed(_with_selection(df), ["family", "task", "selection"])
    out = []
    for (fam, sel), g in runs.groupby(["family", "selection"], sort=False):
        tasks = sorted(g["task"].unique())
        m, lo, hi, agg = family_aggregate(g, "task", tasks, reps=reps, seed=seed)
        out.append({"panel": fam, "panel_title": FAMILY_TITLES.get(fam, fam), "setting": sel, "aggregate": agg,
                    "mean": m, "ci_low": lo, "ci_high": hi, "n_seeds": int(g["seed"].nunique()),
                    "n_runs": len(g), "n_episodes": int(g["n_episodes"].sum()), "n_tasks": len(tasks),
                    "tasks": ";".join(tasks)})
    return _order_fig3(pd.DataFrame(out), ["panel"])


def _order_fig3(t: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    if t.empty:
        return t
    fam_key = {f: i for i, f in enumerate(FAMILY_TITLES)}
    sel_key = {s: i for i, s in enumerate(SELECTIONS)}
    fam_col = "panel" if "panel" in t.columns else "family"
    t = t.assign(_f=t[fam_col].map(fam_key), _s=t["setting"].map(sel_key))
    return t.sort_values(["_f", *[c for c in first if c != fam_col], "_s"]).drop(columns=["_f", "_s"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------
# reference levels: does planning beat imitation?
#
# Two horizontal lines per panel: a behavior-cloning policy (`variant == "bc"`, evaluated on the same env
# seeds as the planners of its trial) and the behavior data itself (`behavior_score`, the dataset's mean
# normalized return). A bar below the BC line means the planner does not beat plain imitation of the data.

REFERENCES = ("bc", "behavior data")
REFERENCE_COLUMNS = ("family", "dataset", "reference", "aggregate", "mean", "ci_low", "ci_high", "n_seeds",
                     "n_tasks")


def bc_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One BC score per (dataset_name, seed): every trial of a dataset and seed trains the same BC policy
    and evaluates it on the same env seeds, so its rows repeat in each trial; counting them per trial would
    inflate n and shrink the CI. Score = mean over that seed's trials of the per-trial mean over episodes
    (identical trials: the first trial's mean). Columns dataset_name, env_id, seed, score, n_trials."""
    cols = ["dataset_name", "env_id", "seed", "score", "n_trials"]
    if "variant" not in df.columns:
        return pd.DataFrame(columns=cols)
    bc = df[df["variant"] == "bc"]
    if bc.empty:
        return pd.DataFrame(columns=cols)
    bc = bc.assign(env_id=bc["env_id"] if "env_id" in bc.columns else "")
    runs = per_seed(bc, ["dataset_name", "env_id", "trial_id"])
    g = runs.groupby(["dataset_name", "env_id", "seed"], sort=True)
    return g.agg(score=("score", "mean"), n_trials=("trial_id", "nunique")).reset_index()[cols]


def behavior_levels(df: pd.DataFrame) -> pd.DataFrame:
    """The behavior data's mean normalized return per dataset (`behavior_score`, one value per dataset in
    every row); datasets without it (no column, or NaN: no reference scores) are left out.
    Columns dataset_name, env_id, score."""
    cols = ["dataset_name", "env_id", "score"]
    if "behavior_score" not in df.columns:
        return pd.DataFrame(columns=cols)
    rows = df.assign(env_id=df["env_id"] if "env_id" in df.columns else "",
                     _b=pd.to_numeric(df["behavior_score"], errors="coerce"))
    rows = rows[np.isfinite(rows["_b"].to_numpy(float))]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    return rows.groupby(["dataset_name", "env_id"], sort=True)["_b"].mean().rename("score").reset_index()[cols]


def reference_table(df: pd.DataFrame, by: str = "dataset", reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """The reference levels the bars are read against: one row per (dataset, or task family with
    by="family") and reference in ("bc", "behavior data").

    bc: per dataset, mean over seeds of the deduplicated per-seed score (`bc_runs`) with a 95% bootstrap CI
    over seeds (`mean_ci`); per family of several tasks, the same aggregate as the family's bars -- IQM over
    the seeds x tasks runs with a stratified bootstrap CI (`stratified_iqm_ci`) -- so line and bars are
    comparable (`aggregate` says which). behavior data: the dataset's `behavior_score` (a property of the
    data, no CI); per family, the mean over its datasets. Empty (with the columns) when the results have no
    bc rows and no behavior_score: results written before these existed plot as before."""
    if by not in ("dataset", "family"):
        raise ValueError(f"by must be 'dataset' or 'family', got {by!r}")

    def fam(r: pd.DataFrame) -> list[str]:
        return [task_family(d, e) for d, e in zip(r["dataset_name"], r["env_id"])]

    bc, beh = bc_runs(df), behavior_levels(df)
    bc, beh = bc.assign(family=fam(bc)), beh.assign(family=fam(beh))
    key = "family" if by == "family" else "dataset_name"
    out = []
    for k, g in bc.groupby(key, sort=False):
        tasks = sorted(map(str, g["dataset_name"].unique()))
        m, lo, hi, agg = family_aggregate(g, "dataset_name", tasks, reps=reps, seed=seed)
        out.append({"family": g["family"].iloc[0], "dataset": ";".join(tasks), "reference": "bc", "aggregate": agg,
                    "mean": m, "ci_low": lo, "ci_high": hi, "n_seeds": int(g["seed"].nunique()),
                    "n_tasks": len(tasks)})
    for k, g in beh.groupby(key, sort=False):
        tasks = sorted(map(str, g["dataset_name"].unique()))
        out.append({"family": g["family"].iloc[0], "dataset": ";".join(tasks), "reference": "behavior data",
                    "aggregate": "mean" if len(tasks) > 1 else "value", "mean": float(g["score"].mean()),
                    "ci_low": float("nan"), "ci_high": float("nan"), "n_seeds": float("nan"), "n_tasks": len(tasks)})
    t = pd.DataFrame(out, columns=list(REFERENCE_COLUMNS))
    if t.empty:
        return t
    fam_key = {f: i for i, f in enumerate(FAMILY_TITLES)}
    ref_key = {r: i for i, r in enumerate(REFERENCES)}
    t = t.assign(_f=t["family"].map(fam_key), _r=t["reference"].map(ref_key))
    return t.sort_values(["_f", "dataset", "_r"]).drop(columns=["_f", "_r"]).reset_index(drop=True)

# ----------------------------------------------------------------------------------------------------
# the paper's findings, checked against the numbers
#
# Each finding is a comparison of two settings' per-seed scores: the difference (setting - reference) is
# paired by seed (the same seed trains the same data order and evaluates the same episode seeds), with a
# percentile bootstrap CI over seeds. A verdict is read off the CI, not the point estimate, so 3 seeds of
# noisy RL scores give "inconclusive" rather than a false "agrees"; and a difference inside a practical
# margin (10% of the reference score, at least 1 point) is "no difference", not a contradiction. With 2-3
# seeds a percentile bootstrap CI is little more than the range of the per-seed differences: read the
# verdicts with `n_seeds`.

FINDING_COLUMNS = ("figure", "finding", "panel", "comparison", "expect", "diff", "ci_low", "ci_high", "margin",
                   "n_seeds", "verdict")
EXPECTATIONS = ("lower", "higher", "same", "not higher")
VERDICTS = ("agrees", "no difference", "contradicts", "inconclusive", "missing")
MARGIN_FRACTION, MARGIN_FLOOR = 0.10, 1.0  # practical equivalence: 10% of the reference score, >= 1 point


def practical_margin(reference: float) -> float:
    """The difference (normalized points) below which two settings count as equal: 10% of the reference
    setting's score, at least 1 point -- what "insensitive" and "slightly" mean in a bar chart."""
    ref = abs(float(reference)) if np.isfinite(reference) else 0.0
    return max(MARGIN_FRACTION * ref, MARGIN_FLOOR)


def verdict(expect: str, lo: float, hi: float, margin: float = 0.0) -> str:
    """agrees | no difference | contradicts | inconclusive, for an expected sign of a difference whose 95%
    CI is [lo, hi], with a practical-equivalence margin.

    lower / higher: agrees when the CI excludes 0 on the expected side; no difference when it lies inside
    +-margin; contradicts when it excludes 0 on the other side (and is not inside +-margin).
    same ("insensitive"): agrees inside +-margin, contradicts entirely outside it.
    not higher ("very high beta slightly worse"): agrees when the CI is below 0, no difference inside
    +-margin, contradicts when it is entirely above +margin."""
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"  # one seed: nothing to resample
    inside = -margin <= lo and hi <= margin
    if expect == "same":
        return "agrees" if inside else "contradicts" if (lo > margin or hi < -margin) else "inconclusive"
    if expect == "not higher":
        return ("agrees" if hi < 0 else "no difference" if inside else "contradicts" if lo > margin
                else "inconclusive")
    right, wrong = (hi < 0, lo > 0) if expect == "lower" else (lo > 0, hi < 0)
    return "agrees" if right else "no difference" if inside else "contradicts" if wrong else "inconclusive"


def paired_diff(a: pd.Series, b: pd.Series, reps: int = 10000, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of a[s] - b[s] over the seeds s both have (series indexed by seed), with a bootstrap CI."""
    common = sorted(set(a.dropna().index) & set(b.dropna().index))
    if not common:
        return float("nan"), float("nan"), float("nan"), 0
    d = a.loc[common].to_numpy(float) - b.loc[common].to_numpy(float)
    m, lo, hi = mean_ci(d, reps=reps, seed=seed)
    return m, lo, hi, len(common)


def _finding(figure: str, finding: str, panel: str, comparison: str, expect: str,
             stats: tuple[float, float, float, int], reference: float) -> dict[str, Any]:
    m, lo, hi, n = stats
    margin = practical_margin(reference)
    return {"figure": figure, "finding": finding, "panel": panel, "comparison": comparison, "expect": expect,
            "diff": m, "ci_low": lo, "ci_high": hi, "margin": margin, "n_seeds": n,
            "verdict": verdict(expect, lo, hi, margin) if n else "missing"}


def figure5_findings(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """The paper's Figure 5 findings (L = 1 degrades a lot; H insensitive; low beta degrades, very high beta
    slightly worse; K insensitive), each as setting - default over paired seeds."""
    rows = method_rows(df)
    if rows.empty or SWEEP_AXIS not in rows.columns:
        raise ResultsError("Figure 5 findings need the method's rows with the sweep columns `ld sweep` writes")
    runs = per_seed(rows, [SWEEP_AXIS, SWEEP_VALUE])
    runs[SWEEP_VALUE] = runs[SWEEP_VALUE].astype(str)
    default = runs[runs[SWEEP_AXIS] == "default"].set_index("seed")["score"]

    def scores(axis: str) -> dict[float, pd.Series]:
        g = runs[runs[SWEEP_AXIS] == axis]
        return {_num(v): s.set_index("seed")["score"] for v, s in g.groupby(SWEEP_VALUE)}

    out = []
    base = {a: _num(rows.loc[rows[SWEEP_AXIS] == "default", a].iloc[0]) if (rows[SWEEP_AXIS] == "default").any()
            else float("nan") for a in FIGURE5_AXES}

    def cmp(finding: str, axis: str, value: float, expect: str, s: pd.Series) -> None:
        out.append(_finding("figure5", finding, axis, f"{axis}={_fmt(value)} - default ({axis}={_fmt(base[axis])})",
                            expect, paired_diff(s, default, reps, seed), reference=float(default.mean())))

    L = scores("latent_step")
    if 1.0 in L:
        cmp("L = 1 degrades a lot", "latent_step", 1.0, "lower", L[1.0])
    for v, s in sorted(scores("horizon").items()):
        cmp("H insensitive", "horizon", v, "same", s)
    B = scores("beta")
    if B:
        lo_b, hi_b = min(B), max(B)
        if lo_b < base["beta"]:
            cmp("low beta degrades", "beta", lo_b, "lower", B[lo_b])
        if hi_b > base["beta"]:
            cmp("very high beta slightly worse", "beta", hi_b, "not higher", B[hi_b])
    for v, s in sorted(scores("diffusion_steps").items()):
        cmp("K insensitive", "diffusion_steps", v, "same", s)
    return pd.DataFrame(out, columns=list(FINDING_COLUMNS))


def figure3_findings(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """The paper's Figure 3 findings per task family (latent > skill > raw; return as energy and E-MSE both
    worse than the method; MSE, the inexact baseline, too), each as a paired difference over seeds of the
    family's mean score over its tasks; plus "the latent-raw gap is widest in the maze family" (the
    long-horizon one) as a difference of the two families' gaps (unpaired: different tasks)."""
    runs = per_seed(_with_selection(df), ["family", "task", "selection"])
    fam_seed = runs.groupby(["family", "selection", "seed"])["score"].mean()
    out = []
    gaps: dict[str, np.ndarray] = {}
    pairs = [("latent > skill", "latent actions", "skill space"),
             ("skill > raw", "skill space", "raw action space"),
             ("latent > raw", "latent actions", "raw action space"),
             ("return as energy worse", "latent actions", "return as energy"),
             ("E-MSE worse", "latent actions", "E-MSE"),
             ("MSE worse", "latent actions", "MSE")]
    for fam in [f for f in FAMILY_TITLES if f in fam_seed.index.get_level_values(0)]:
        sel = fam_seed.loc[fam]
        have = set(sel.index.get_level_values(0))
        for finding, a, b in pairs:
            if a in have and b in have:
                out.append(_finding("figure3", finding, fam, f"{a} - {b}", "higher",
                                    paired_diff(sel.loc[a], sel.loc[b], reps, seed),
                                    reference=float(sel.loc[a].mean())))
        if {"latent actions", "raw action space"} <= have:
            d = (sel.loc["latent actions"] - sel.loc["raw action space"]).dropna()
            gaps[fam] = d.to_numpy(float)
    if "maze" in gaps and "locomotion" in gaps:
        g_m, g_l = gaps["maze"], gaps["locomotion"]
        diff = float(g_m.mean() - g_l.mean())
        if min(len(g_m), len(g_l)) >= 2:
            rng = np.random.default_rng(seed)
            boots = (g_m[rng.integers(0, len(g_m), (reps, len(g_m)))].mean(1)
                     - g_l[rng.integers(0, len(g_l), (reps, len(g_l)))].mean(1))
            lo, hi = float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
        else:
            lo = hi = float("nan")
        out.append(_finding("figure3", "latent-raw gap widest on the long-horizon family", "maze vs locomotion",
                            "(latent - raw) in maze - (latent - raw) in locomotion", "higher",
                            (diff, lo, hi, min(len(g_m), len(g_l))), reference=float(g_l.mean())))
    return pd.DataFrame(out, columns=list(FINDING_COLUMNS))


# ----------------------------------------------------------------------------------------------------
# plotting


def _style():
    import seaborn as sns

    sns.set_theme(context="paper", style="ticks", font_scale=1.25,
                  rc={"axes.spines.right": False, "axes.spines.top": False, "savefig.dpi": 200,
                      "svg.fonttype": "none"})
    return sns


def palette() -> dict[str, Any]:
    """One color per Figure 3 selection, and Figure 5's bar / default-bar colors (colorblind-safe)."""
    import seaborn as sns

    cb = sns.color_palette("colorblind", 10)
    colors = {s: cb[i] for i, s in enumerate(SELECTIONS)}
    colors["_bar"] = sns.color_palette("colorblind")[0]
    colors["_default"] = sns.color_palette("colorblind")[1]
    return colors


def _bars(ax, t: pd.DataFrame, colors: list, edge: list | None = None):
    x = np.arange(len(t))
    means = t["mean"].to_numpy(float)
    ax.bar(x, means, color=colors, edgecolor=edge or "black", linewidth=0.6, width=0.72, zorder=2)
    lo, hi = t["ci_low"].to_numpy(float), t["ci_high"].to_numpy(float)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        err = np.vstack([means[ok] - lo[ok], hi[ok] - means[ok]])
        ax.errorbar(x[ok], means[ok], yerr=np.clip(err, 0, None), fmt="none", ecolor="black", elinewidth=1.0,
                    capsize=3, zorder=3)
    span = np.nanmax(np.abs(np.concatenate([means, lo[ok], hi[ok]]))) if len(means) else 1.0
    span = span if np.isfinite(span) and span > 0 else 1.0
    tops = np.where(ok, np.fmax(hi, means), means)
    tasks = t["n_tasks"] if "n_tasks" in t.columns else [1] * len(t)
    for xi, y, n, k in zip(x, tops, t["n_seeds"], tasks):
        label = f"n={n}" if k <= 1 else f"n={n}\N{MULTIPLICATION SIGN}{k}"
        ax.text(xi, max(y, 0) + 0.02 * span, label, ha="center", va="bottom", fontsize=7.5, color="0.25", zorder=4)
    ax.axhline(0, color="black", linewidth=0.6, zorder=1)
    ax.set_xticks(x)
    return x


def _panel_grid(table: pd.DataFrame, width: float, height: float):
    """One row of panels sharing the y axis, one per `panel` of the table in its order: (fig, axes, [(panel,
    rows)])."""
    import matplotlib.pyplot as plt

    _style()
    panels = [(p, table[table["panel"] == p]) for p in dict.fromkeys(table["panel"])]
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), sharey=True, squeeze=False)
    return fig, axes, panels


# Reference lines: neutral colors (the bars own the palette), told apart by line style as well.
REFERENCE_STYLE = {
    "bc": {"color": "0.15", "linestyle": (0, (5, 3)), "linewidth": 1.4},
    "behavior data": {"color": "#8c7b6b", "linestyle": (0, (1, 1.6)), "linewidth": 1.8},
}
REFERENCE_LABELS = {"bc": "behavior cloning (band: 95% CI)", "behavior data": "behavior data (mean return)"}


def _reference_lines(ax, refs: Optional[pd.DataFrame]) -> list[str]:
    """Draw each reference row as a horizontal line across the panel (BC's CI as a light band behind the
    bars); returns the references drawn, for one figure-level legend."""
    if refs is None or refs.empty:
        return []
    drawn = []
    for _, r in refs.iterrows():
        m = float(r["mean"])
        if not np.isfinite(m):
            continue
        style = REFERENCE_STYLE.get(r["reference"], REFERENCE_STYLE["bc"])
        lo, hi = float(r["ci_low"]), float(r["ci_high"])
        if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
            ax.axhspan(lo, hi, color=style["color"], alpha=0.10, linewidth=0, zorder=1)
        ax.axhline(m, zorder=2.5, **style)
        drawn.append(r["reference"])
    return drawn


def _reference_handles(drawn: Iterable[str]) -> list:
    from matplotlib.lines import Line2D

    present = set(drawn)
    return [Line2D([], [], label=REFERENCE_LABELS.get(ref, ref), **REFERENCE_STYLE[ref])
            for ref in REFERENCES if ref in present]


def plot_figure5(table: pd.DataFrame, title: Optional[str] = None, references: Optional[pd.DataFrame] = None):
    """Four panels of bars (L, H, beta, K), the shared default bar highlighted. `references`
    (`reference_table(df)`): BC and behavior-data levels, drawn across every panel -- all panels use the
    one dataset of the sweep, so the same lines go in each."""
    from matplotlib.patches import Patch

    colors = palette()
    fig, axes, panels = _panel_grid(table, width=3.1, height=3.6)
    drawn: list[str] = []
    for ax, (panel, t) in zip(axes[0], panels):
        cols = [colors["_default"] if d else colors["_bar"] for d in t["is_default"]]
        _bars(ax, t, cols)
        drawn += _reference_lines(ax, references)
        ax.set_xticklabels(t["setting"])
        ax.set_title(t["panel_title"].iloc[0], fontsize=11)
        ax.set_xlabel({"latent_step": "L", "horizon": "latent actions H / raw steps T", "beta": "\N{GREEK SMALL LETTER BETA}",
                       "diffusion_steps": "K"}.get(panel, panel), fontsize=9.5)
    axes[0][0].set_ylabel("normalized score")
    handles = [Patch(facecolor=colors["_default"], edgecolor="black", label="default (shared point)"),
               Patch(facecolor=colors["_bar"], edgecolor="black", label="one factor changed")]
    handles += _reference_handles(drawn)
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), frameon=False, fontsize=9,
               bbox_to_anchor=(1.0, 1.02))
    fig.text(0.01, 0.005, "mean normalized score over seeds (per seed: mean over episodes); error bars: 95% "
             "bootstrap CI over seeds; n = seeds per bar", fontsize=8, color="0.3")
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11, y=1.02)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig


def plot_figure3(table: pd.DataFrame, title: Optional[str] = None, references: Optional[pd.DataFrame] = None):
    """One panel per task family, one bar per modeling selection (colors shared across panels).
    `references` (`reference_table(df, by="family")`): each family's BC and behavior-data levels, drawn
    across that family's panel."""
    colors = palette()
    fig, axes, panels = _panel_grid(table, width=4.4, height=3.9)
    drawn: list[str] = []
    for ax, (panel, t) in zip(axes[0], panels):
        _bars(ax, t, [colors.get(s, "0.5") for s in t["setting"]])
        if references is not None and not references.empty:
            drawn += _reference_lines(ax, references[references["family"] == panel])
        ax.set_xticklabels([SHORT_LABELS.get(s, s) for s in t["setting"]], fontsize=9)
        agg = t["aggregate"].iloc[0]
        tasks = t["tasks"].iloc[0].split(";")
        sub = f"{agg} over {len(tasks)} tasks" if len(tasks) > 1 else f"{tasks[0]}, mean over seeds"
        ax.set_title(f"{t['panel_title'].iloc[0]}\n{sub}", fontsize=10.5)
    axes[0][0].set_ylabel("normalized score")
    fig.text(0.01, 0.005, "several tasks: IQM over runs x tasks, stratified bootstrap 95% CI; one task: mean over "
             "seeds, bootstrap 95% CI; n = seeds (\N{MULTIPLICATION SIGN} tasks)", fontsize=8, color="0.3")
    handles = _reference_handles(drawn)
    if handles:
        fig.legend(handles=handles, loc="upper right", ncol=len(handles), frameon=False, fontsize=9,
                   bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95 if handles else 1))
    return fig


def save_figure(fig, out_dir: str | Path, stem: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    return paths


def write_tidy(table: pd.DataFrame, out_dir: str | Path, stem: str) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.csv"
    table.to_csv(path, index=False, float_format="%.6g")
    return path
