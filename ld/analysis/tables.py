"""The figures as tidy tables, one row per plotted bar: the numbers a plot draws and the CSV a reader can
check them in, computed once so that picture and table cannot disagree."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ld.analysis.io import SWEEP_AXIS, SWEEP_VALUE, ResultsError
from ld.analysis.rows import (
    FAMILY_TITLES,
    FIGURE5_AXES,
    SELECTIONS,
    as_float,
    format_value,
    method_rows,
    per_seed,
    with_selection,
)
from ld.analysis.stats import mean_ci, stratified_iqm_ci

FIGURE5_TITLES = {
    "latent_step": "Latent steps L",
    "horizon": "Planning horizon H = T / L",
    "beta": "Inverse temperature \N{GREEK SMALL LETTER BETA}",
    "diffusion_steps": "Diffusion steps K",
}
TIDY_COLUMNS = ("panel", "setting", "mean", "ci_low", "ci_high", "n_seeds", "n_episodes")


# ----------------------------------------------------------------------------------------------------
# Figure 5: one factor at a time


def figure5_table(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """One row per bar: for each axis panel (L, H, beta, K, in that order, then any other axis), the
    axis's own trials plus the shared default point (`is_default`), sorted by value."""
    if SWEEP_AXIS not in df.columns:
        raise ResultsError(f"Figure 5 needs the sweep columns ({SWEEP_AXIS}, {SWEEP_VALUE}) that "
                           "`latentdiffuser sweep` writes")
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
            v = as_float(value)
            if axis == "horizon":
                label = f"H={format_value(as_float(T) / as_float(L))}\nT={format_value(as_float(T))}"
            else:
                label = format_value(v) if np.isfinite(v) else str(value)
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


def figure3_task_table(df: pd.DataFrame, reps: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Per task and selection: mean over seeds with a bootstrap CI (the numbers behind each family bar)."""
    runs = per_seed(with_selection(df), ["family", "task", "selection"])
    out = []
    for (fam, task, sel), g in runs.groupby(["family", "task", "selection"], sort=False):
        m, lo, hi = mean_ci(g["score"], reps=reps, seed=seed)
        out.append({"family": fam, "task": task, "setting": sel, "mean": m, "ci_low": lo, "ci_high": hi,
                    "n_seeds": int(g["seed"].nunique()), "n_episodes": int(g["n_episodes"].sum())})
    t = pd.DataFrame(out)
    return _order_figure3(t, ["family", "task"])


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
    runs = per_seed(with_selection(df), ["family", "task", "selection"])
    out = []
    for (fam, sel), g in runs.groupby(["family", "selection"], sort=False):
        tasks = sorted(g["task"].unique())
        m, lo, hi, agg = family_aggregate(g, "task", tasks, reps=reps, seed=seed)
        out.append({"panel": fam, "panel_title": FAMILY_TITLES.get(fam, fam), "setting": sel, "aggregate": agg,
                    "mean": m, "ci_low": lo, "ci_high": hi, "n_seeds": int(g["seed"].nunique()),
                    "n_runs": len(g), "n_episodes": int(g["n_episodes"].sum()), "n_tasks": len(tasks),
                    "tasks": ";".join(tasks)})
    return _order_figure3(pd.DataFrame(out), ["panel"])


def _order_figure3(t: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    if t.empty:
        return t
    fam_key = {f: i for i, f in enumerate(FAMILY_TITLES)}
    sel_key = {s: i for i, s in enumerate(SELECTIONS)}
    fam_col = "panel" if "panel" in t.columns else "family"
    t = t.assign(_f=t[fam_col].map(fam_key), _s=t["setting"].map(sel_key))
    order = ["_f", *[c for c in first if c != fam_col], "_s"]
    return t.sort_values(order).drop(columns=["_f", "_s"]).reset_index(drop=True)


def write_tidy(table: pd.DataFrame, out_dir: str | Path, stem: str) -> Path:
    """`<out_dir>/<stem>.csv`, 6 significant digits: what the committed figures are compared by."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.csv"
    table.to_csv(path, index=False, float_format="%.6g")
    return path
