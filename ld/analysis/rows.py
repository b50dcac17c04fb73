"""Which rows of a results table a figure counts, and what a row stands for (the method or not, its Figure 3
selection, its task family, one score per run). Tables, reference lines and findings all select through
here, so a bar and the finding read off it always count the same runs."""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from ld.analysis.io import ResultsError
from ld.data.families import task_family  # noqa: F401  (re-exported: ld.analysis.task_family)

METHOD = "latentdiffuser"
FIGURE5_AXES = ("latent_step", "horizon", "beta", "diffusion_steps")
# Figure 3: the modeling selections, in the order the bars are drawn.
SELECTIONS = ("latent actions", "raw action space", "skill space", "return as energy", "E-MSE", "MSE")
FAMILY_TITLES = {
    "locomotion": "Locomotion (dense reward)",
    "maze": "Maze (long horizon, sparse reward)",
    "adroit": "Adroit",
    "kitchen": "Kitchen",
    "other": "Other tasks",
}


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


def with_selection(df: pd.DataFrame) -> pd.DataFrame:
    """The method's rows with their `selection`, `family` and `task` (dataset name): what Figure 3 groups by."""
    rows = method_rows(df)
    if rows.empty:
        raise ResultsError("no rows of the method (variant latentdiffuser) in the results")
    sel = rows[["modeling", "energy.target", "energy.loss"]].apply(selection_label, axis=1)
    fam = [task_family(d, e) for d, e in zip(rows["dataset_name"], rows["env_id"])]
    return rows.assign(selection=sel.to_numpy(), family=fam, task=rows["dataset_name"].astype(str))


def as_float(v: Any) -> float:
    """A config value as a number (sweep values are stored as text), NaN when it is not one."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def format_value(v: float) -> str:
    """A number as a bar label or a comparison names it: 3.0 -> "3", 0.5 -> "0.5"."""
    return f"{v:g}"
