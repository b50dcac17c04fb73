"""The paper's findings, checked against our numbers rather than eyeballed from bars.

Each finding is a comparison of two settings' per-seed scores: the difference (setting - reference) is
paired by seed (the same seed trains the same data order and evaluates the same episode seeds), with a
percentile bootstrap CI over seeds. A verdict is read off the CI, not the point estimate, so 3 seeds of
noisy RL scores give "inconclusive" rather than a false "agrees"; a practical margin (10% of the reference
score, at least 1 point) separates a difference that matters from one that does not: "agrees" and
"contradicts" need the whole CI beyond it, and a CI inside it is "no difference". With 2-3
seeds a percentile bootstrap CI is little more than the range of the per-seed differences: read the
verdicts with `n_seeds`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ld.analysis.io import SWEEP_AXIS, SWEEP_VALUE, ResultsError
from ld.analysis.rows import FAMILY_TITLES, FIGURE5_AXES, as_float, format_value, method_rows, per_seed, with_selection
from ld.analysis.stats import paired_diff, unpaired_diff_ci

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

    A direction counts only beyond the margin: a CI that excludes 0 but reaches into +-margin may be a real
    difference too small to matter, which is not what the paper's "degrades" or "worse" claims.
    lower / higher: agrees when the whole CI lies beyond the margin on the expected side; contradicts when
    it lies beyond the margin on the other side; no difference when it lies inside +-margin; otherwise
    inconclusive.
    same ("insensitive"): agrees inside +-margin, contradicts entirely outside it.
    not higher ("very high beta slightly worse"): agrees when the CI lies below -margin, no difference inside
    +-margin, contradicts when it lies above +margin."""
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"  # one seed: nothing to resample
    inside = -margin <= lo and hi <= margin
    if expect == "same":
        return "agrees" if inside else "contradicts" if (lo > margin or hi < -margin) else "inconclusive"
    below, above = hi < -margin, lo > margin
    if expect == "not higher":
        return "agrees" if below else "no difference" if inside else "contradicts" if above else "inconclusive"
    right, wrong = (below, above) if expect == "lower" else (above, below)
    return "agrees" if right else "no difference" if inside else "contradicts" if wrong else "inconclusive"


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
        raise ResultsError("Figure 5 findings need the method's rows with the sweep columns "
                           "`latentdiffuser sweep` writes")
    runs = per_seed(rows, [SWEEP_AXIS, SWEEP_VALUE])
    runs[SWEEP_VALUE] = runs[SWEEP_VALUE].astype(str)
    default = runs[runs[SWEEP_AXIS] == "default"].set_index("seed")["score"]

    def scores(axis: str) -> dict[float, pd.Series]:
        g = runs[runs[SWEEP_AXIS] == axis]
        return {as_float(v): s.set_index("seed")["score"] for v, s in g.groupby(SWEEP_VALUE)}

    out = []
    is_default = rows[SWEEP_AXIS] == "default"
    base = {a: as_float(rows.loc[is_default, a].iloc[0]) if is_default.any() else float("nan") for a in FIGURE5_AXES}

    def cmp(finding: str, axis: str, value: float, expect: str, s: pd.Series) -> None:
        comparison = f"{axis}={format_value(value)} - default ({axis}={format_value(base[axis])})"
        out.append(_finding("figure5", finding, axis, comparison, expect, paired_diff(s, default, reps, seed),
                            reference=float(default.mean())))

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
    runs = per_seed(with_selection(df), ["family", "task", "selection"])
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
        diff, lo, hi = unpaired_diff_ci(g_m, g_l, reps=reps, seed=seed)
        out.append(_finding("figure3", "latent-raw gap widest on the long-horizon family", "maze vs locomotion",
                            "(latent - raw) in maze - (latent - raw) in locomotion", "higher",
                            (diff, lo, hi, min(len(g_m), len(g_l))), reference=float(g_l.mean())))
    return pd.DataFrame(out, columns=list(FINDING_COLUMNS))
