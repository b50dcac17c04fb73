"""The levels a bar is read against, to tell whether planning beats imitation.

Two horizontal lines per panel: a behavior-cloning policy (`variant == "bc"`, evaluated on the same env
seeds as the planners of its trial) and the behavior data itself (`behavior_score`, the dataset's mean
normalized return). A bar below the BC line means the planner does not beat plain imitation of the data.
Figure 3 adds a third (`prior=True`): the method's unguided latent prior, the level every energy selection
starts from -- a bar on it is guidance that does nothing, a bar under it guidance that hurts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ld.analysis.rows import FAMILY_TITLES, per_seed, task_family
from ld.analysis.tables import family_aggregate

REFERENCES = ("bc", "behavior data", "prior")
REFERENCE_COLUMNS = ("family", "dataset", "reference", "aggregate", "mean", "ci_low", "ci_high", "n_seeds",
                     "n_tasks")


RUN_COLUMNS = ["dataset_name", "env_id", "seed", "score", "n_trials"]


def _dedup_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """One score per (dataset_name, seed) of a baseline whose rows repeat in every trial of that dataset and
    seed (same policy, same env seeds): mean over the trials of each trial's mean over episodes."""
    if rows.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    rows = rows.assign(env_id=rows["env_id"] if "env_id" in rows.columns else "")
    runs = per_seed(rows, ["dataset_name", "env_id", "trial_id"])
    g = runs.groupby(["dataset_name", "env_id", "seed"], sort=True)
    return g.agg(score=("score", "mean"), n_trials=("trial_id", "nunique")).reset_index()[RUN_COLUMNS]


def bc_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One BC score per (dataset_name, seed): every trial of a dataset and seed trains the same BC policy
    and evaluates it on the same env seeds, so its rows repeat in each trial; counting them per trial would
    inflate n and shrink the CI. Score = mean over that seed's trials of the per-trial mean over episodes
    (identical trials: the first trial's mean). Columns dataset_name, env_id, seed, score, n_trials."""
    if "variant" not in df.columns:
        return pd.DataFrame(columns=RUN_COLUMNS)
    return _dedup_runs(df[df["variant"] == "bc"])


def prior_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One unguided-prior score per (dataset_name, seed), from the `prior` rows of the latent-action trials
    (`modeling == "latent"`). In Figure 3 those trials differ only in their energy model (target or loss), so
    they share one VAE and prior and evaluate it on the same env seeds: the rows repeat, deduplicated as
    `bc_runs` does. Raw and skill trials have priors of their own and are left out. Same columns."""
    if "variant" not in df.columns or "modeling" not in df.columns:
        return pd.DataFrame(columns=RUN_COLUMNS)
    return _dedup_runs(df[(df["variant"] == "prior") & (df["modeling"] == "latent")])


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


def reference_table(df: pd.DataFrame, by: str = "dataset", reps: int = 10000, seed: int = 0,
                    prior: bool = False) -> pd.DataFrame:
    """The reference levels the bars are read against: one row per (dataset, or task family with
    by="family") and reference in ("bc", "behavior data", and with `prior` "prior": the unguided latent
    prior of `prior_runs`, aggregated exactly as bc).

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

    beh = behavior_levels(df)
    beh = beh.assign(family=fam(beh))
    key = "family" if by == "family" else "dataset_name"
    out = []
    runs = {"bc": bc_runs(df)}
    if prior:
        runs["prior"] = prior_runs(df)
    for ref, r in runs.items():
        for _, g in r.assign(family=fam(r)).groupby(key, sort=False):
            tasks = sorted(map(str, g["dataset_name"].unique()))
            m, lo, hi, agg = family_aggregate(g, "dataset_name", tasks, reps=reps, seed=seed)
            out.append({"family": g["family"].iloc[0], "dataset": ";".join(tasks), "reference": ref,
                        "aggregate": agg, "mean": m, "ci_low": lo, "ci_high": hi,
                        "n_seeds": int(g["seed"].nunique()), "n_tasks": len(tasks)})
    for _, g in beh.groupby(key, sort=False):
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
