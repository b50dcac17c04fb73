"""The figures drawn from their tidy tables (`ld.analysis.tables`, `ld.analysis.references`): a plot adds
no numbers of its own, so what it shows is exactly what the CSV next to it says. matplotlib and seaborn are
imported only when something is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd

from ld.analysis.references import REFERENCES
from ld.analysis.rows import SELECTIONS

SHORT_LABELS = {"latent actions": "latent\nactions", "raw action space": "raw\nactions", "skill space": "skill\nspace",
                "return as energy": "return\nenergy", "E-MSE": "E-MSE", "MSE": "MSE"}
FIGURE5_AXIS_LABELS = {"latent_step": "L", "horizon": "latent actions H / raw steps T",
                       # beta = 0 is no guidance: the bar is the unguided prior's own rows (ld.analysis.rows)
                       "beta": "\N{GREEK SMALL LETTER BETA} (0: no guidance)", "diffusion_steps": "K"}


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
        # on a light backing: a reference line running through the label would strike it out
        ax.text(xi, max(y, 0) + 0.02 * span, label, ha="center", va="bottom", fontsize=7.5, color="0.25", zorder=4,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.6})
    ax.axhline(0, color="black", linewidth=0.6, zorder=1)
    ax.set_xticks(x)
    return x


def _panel_grid(table: pd.DataFrame, width: float, height: float, sharey: bool = True):
    """One row of panels, one per `panel` of the table in its order: (fig, axes, [(panel, rows)]). Figure 5's
    panels share one dataset and so one y axis; Figure 3's families do not (a maze scores 0-100, locomotion
    at small scale a few tens), so each gets its own, or the smaller family's differences vanish."""
    import matplotlib.pyplot as plt

    _style()
    panels = [(p, table[table["panel"] == p]) for p in dict.fromkeys(table["panel"])]
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), sharey=sharey, squeeze=False)
    return fig, axes, panels


# Reference lines: neutral colors (the bars own the palette), told apart by line style as well.
REFERENCE_STYLE = {
    "bc": {"color": "0.15", "linestyle": (0, (5, 3)), "linewidth": 1.4},
    "behavior data": {"color": "#8c7b6b", "linestyle": (0, (1, 1.6)), "linewidth": 1.8},
    "prior": {"color": "#5a6f8a", "linestyle": (0, (7, 2, 1.5, 2)), "linewidth": 1.4},
}
REFERENCE_LABELS = {"bc": "behavior cloning (band: 95% CI)", "behavior data": "behavior data (mean return)",
                    "prior": "unguided latent prior (band: 95% CI)"}


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
        ax.set_xlabel(FIGURE5_AXIS_LABELS.get(panel, panel), fontsize=9.5)
    axes[0][0].set_ylabel("normalized score")
    handles = [Patch(facecolor=colors["_default"], edgecolor="black", label="default (shared point)"),
               Patch(facecolor=colors["_bar"], edgecolor="black", label="one factor changed")]
    handles += _reference_handles(drawn)
    # the legend in a row under the panels, the title alone on top: a long (stale) title never runs into it
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.035))
    fig.text(0.01, 0.005, "mean normalized score over seeds (per seed: mean over episodes); error bars: 95% "
             "bootstrap CI over seeds; n = seeds per bar", fontsize=8, color="0.3")
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11, y=0.99)
    fig.tight_layout(rect=(0, 0.1, 1, 0.93))
    return fig


def plot_figure3(table: pd.DataFrame, title: Optional[str] = None, references: Optional[pd.DataFrame] = None):
    """One panel per task family, one bar per modeling selection (colors shared across panels).
    `references` (`reference_table(df, by="family", prior=True)`): each family's BC, behavior-data and
    unguided-prior levels, drawn across that family's panel."""
    colors = palette()
    fig, axes, panels = _panel_grid(table, width=4.4, height=3.9, sharey=False)
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
        ax.set_ylabel("normalized score")
    fig.text(0.01, 0.005, "several tasks: IQM over runs x tasks, stratified bootstrap 95% CI; one task: mean over "
             "seeds, bootstrap 95% CI; n = seeds (\N{MULTIPLICATION SIGN} tasks)", fontsize=8, color="0.3")
    handles = _reference_handles(drawn)
    if handles:  # under the panels, as in Figure 5
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9,
                   bbox_to_anchor=(0.5, 0.035))
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=11, y=0.99)
    fig.tight_layout(rect=(0, 0.1 if handles else 0.04, 1, 0.93 if title else 1))
    return fig


def save_figure(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """`<out_dir>/<stem>.png` for the page and `.svg` (text kept as text) for the paper."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, bbox_inches="tight")
    return paths
