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
# # Figure 5: one factor at a time around the default
#
# Regenerates the paper's Figure 5 from the `figure5` suite's Parquet results (and nothing else): four
# panels of bars for latent steps **L**, planning horizon **H** (in latent actions, H = T / L, with the raw
# window T), inverse temperature **beta** and diffusion steps **K**. Each panel holds the trials of its axis
# plus the shared default point (highlighted). Bar = mean over seeds of the per-seed mean normalized score
# over evaluation episodes of the method (LatentDiffuser; at beta = 0 the unguided planner *is* the method);
# error bars = 95% percentile bootstrap CI over seeds.
#
# `latentdiffuser report figure5 --results STORAGE` runs this notebook headless. To run it by hand, set `LD_RESULTS`
# (a sweep storage root, its `results/figure5/` folder, or a Parquet file) and optionally `LD_OUT`.

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("LD_RESULTS", "figures/figure5/results")
OUT = os.environ.get("LD_OUT", "figures/figure5")
SUITE = os.environ.get("LD_SUITE", "figure5")
REPS = int(os.environ.get("LD_BOOTSTRAP_REPS", "10000"))
STALE = os.environ.get("LD_STALE", "")  # set by `latentdiffuser report` for trials trained by older stage code

# %%
from ld import analysis as A

df = A.load_results(RESULTS, SUITE)
print(f"{len(df)} episode rows, {df['trial_id'].nunique()} trials, seeds {sorted(df['seed'].unique())}")
df.groupby(["sweep.axis", "sweep.value", "variant"])["normalized_score"].agg(["count", "mean"]).round(1)

# %% [markdown]
# ## Aggregate: one row per bar

# %%
table = A.figure5_table(df, reps=REPS)
table.drop(columns=["panel_title"]).round(2)

# %% [markdown]
# ## The paper's findings, checked
#
# Each finding of the paper as a difference of per-seed scores (setting - default), paired by
# seed, with a 95% percentile bootstrap CI over seeds, and a practical margin (10% of the reference score, at
# least 1 normalized point). The verdict reads the CI, not the point: `agrees` when the whole CI lies beyond
# the margin on the paper's side (for "insensitive": inside +-margin), `no difference` when it lies inside the
# margin although the paper reports an effect, `contradicts` when it lies beyond the margin on the other side
# (for "insensitive": outside +-margin), else `inconclusive`. This table is the one source of verdicts.
# With 2-3 seeds the CI is about the range of the per-seed differences: read it with `n_seeds`.

# %%
findings = A.figure5_findings(df, reps=REPS)
A.write_tidy(findings, OUT, "figure5_findings")
findings.round(2)

# %% [markdown]
# ## Reference levels: does planning beat imitation?
#
# Two horizontal lines in every panel (all panels use one dataset): **BC** (dashed), a behavior-cloning
# policy evaluated on the same environment seeds -- its rows repeat in every trial of a seed, so they are
# deduplicated to one score per seed; mean over seeds with a 95% bootstrap CI (the light band) -- and the
# **behavior data** (dotted), the dataset's mean normalized return. Results written before these existed
# have neither: the table is empty and the figure has no lines.

# %%
references = A.reference_table(df, by="dataset", reps=REPS)
if not references.empty:
    A.write_tidy(references, OUT, "figure5_references")
references.round(2)

# %% [markdown]
# ## Figure

# %%
n_seeds = df["seed"].nunique()
title = (f"Figure 5: latent step L, horizon H, inverse temperature \N{GREEK SMALL LETTER BETA} and diffusion "
         f"steps K on {df['dataset_name'].iloc[0]} ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
fig = A.plot_figure5(table, title=f"{title} ({STALE})" if STALE else title, references=references)
A.save_figure(fig, OUT, "figure5")
A.write_tidy(table, OUT, "figure5")
fig
