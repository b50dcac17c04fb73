# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figure 3: modeling selections per task family
#
# Regenerates the paper's Figure 3 from the `figure3` suite's Parquet results (and nothing else): for each
# task family (dense-reward locomotion, long-horizon maze) one bar per modeling selection -- latent actions
# (the method), raw action space, skill space, return as energy, E-MSE and MSE energy losses. The selection
# of a trial is read from its config columns (`modeling`, `energy.target`, `energy.loss`), its family from
# its environment.
#
# A family of several tasks is summarized as in `rliable`: IQM (25%-trimmed mean) over the runs x tasks
# matrix of per-seed scores, with a stratified bootstrap 95% CI; a family with one task: mean over seeds
# with a percentile bootstrap 95% CI. Per-task numbers are written next to the figure.
#
# `latentdiffuser report figure3 --results STORAGE` runs this notebook headless; by hand, set `LD_RESULTS` and `LD_OUT`.

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("LD_RESULTS", "figures/figure3/results")
OUT = os.environ.get("LD_OUT", "figures/figure3")
SUITE = os.environ.get("LD_SUITE", "figure3")
REPS = int(os.environ.get("LD_BOOTSTRAP_REPS", "10000"))
STALE = os.environ.get("LD_STALE", "")  # set by `latentdiffuser report` for trials trained by older stage code

# %%
from ld import analysis as A

df = A.load_results(RESULTS, SUITE)
print(f"{len(df)} episode rows, {df['trial_id'].nunique()} trials, seeds {sorted(df['seed'].unique())}")
keys = ["dataset_name", "modeling", "energy.target", "energy.loss", "variant"]
df.groupby(keys)["normalized_score"].agg(["count", "mean"]).round(1)

# %% [markdown]
# ## Per task (mean over seeds)

# %%
tasks = A.figure3_task_table(df, reps=REPS)
A.write_tidy(tasks, OUT, "figure3_tasks")
tasks.round(2)

# %% [markdown]
# ## Per family: one row per bar

# %%
table = A.figure3_table(df, reps=REPS)
table.drop(columns=["panel_title"]).round(2)

# %% [markdown]
# ## The paper's findings, checked
#
# Each finding of the paper as a difference of per-seed scores (per family: the method - the alternative), paired by
# seed, with a 95% percentile bootstrap CI over seeds, and a practical margin (10% of the reference score, at
# least 1 normalized point). The verdict reads the CI, not the point: `agrees` when the whole CI lies beyond
# the margin on the paper's side (for "insensitive": inside +-margin), `no difference` when it lies inside the
# margin although the paper reports an effect, `contradicts` when it lies beyond the margin on the other side
# (for "insensitive": outside +-margin), else `inconclusive`. This table is the one source of verdicts.
# With 2-3 seeds the CI is about the range of the per-seed differences: read it with `n_seeds`.

# %%
findings = A.figure3_findings(df, reps=REPS)
A.write_tidy(findings, OUT, "figure3_findings")
findings.round(2)

# %% [markdown]
# ## Reference levels: does planning beat imitation, and does guidance beat the prior?
#
# Three horizontal lines per family panel: **BC** (dashed), a behavior-cloning policy evaluated on the same
# environment seeds -- its rows repeat in every trial of a (task, seed), so they are deduplicated to one
# score per run, then aggregated like the family's bars (IQM over runs x tasks with a stratified bootstrap
# 95% CI for several tasks, mean over seeds with a bootstrap CI for one; the light band); the **behavior
# data** (dotted), the mean over the family's datasets of each dataset's mean normalized return; and the
# **unguided latent prior** (dash-dot), the method's prior sampled without an energy model -- shared by the
# latent-action trials (the method, return as energy, E-MSE, MSE), deduplicated and aggregated like BC. An
# energy selection's bar on the prior line is guidance that changes nothing; under it, guidance that hurts.
# Results written before these existed have none of them: the table is empty and the figure has no lines.

# %%
references = A.reference_table(df, by="family", reps=REPS, prior=True)
if not references.empty:
    A.write_tidy(references, OUT, "figure3_references")
references.round(2)

# %% [markdown]
# The same levels per task (mean over seeds, bootstrap CI), to read beside `figure3_tasks.csv`.

# %%
task_references = A.reference_table(df, by="dataset", reps=REPS, prior=True)
if not task_references.empty:
    A.write_tidy(task_references, OUT, "figure3_task_references")
task_references.round(2)

# %% [markdown]
# ## Figure

# %%
n_seeds = df["seed"].nunique()
title = f"Figure 3: modeling selections per task family ({n_seeds} seed{'s' if n_seeds != 1 else ''})"
fig = A.plot_figure3(table, title=f"{title} ({STALE})" if STALE else title, references=references)
A.save_figure(fig, OUT, "figure3")
A.write_tidy(table, OUT, "figure3")
fig
