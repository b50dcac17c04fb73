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
from ld.analysis.stats import paired_diff, paired_diffs, seeds_to_decide, unpaired_diff_ci

FINDING_COLUMNS = ("figure", "finding", "panel", "comparison", "expect", "diff", "ci_low", "ci_high", "margin",
                   "n_seeds", "verdict", "seeds_to_decide")
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
             stats: tuple[float, float, float, int], reference: float, sd: float) -> dict[str, Any]:
    """One findings row. `sd`: the per-seed standard deviation of the difference, for `seeds_to_decide`
    (the seeds this comparison is read with when its verdict is already decided)."""
    m, lo, hi, n = stats
    margin = practical_margin(reference)
    v = verdict(expect, lo, hi, margin) if n else "missing"
    decided = v in ("agrees", "contradicts", "no difference")
    return {"figure": figure, "finding": finding, "panel": panel, "comparison": comparison, "expect": expect,
            "diff": m, "ci_low": lo, "ci_high": hi, "margin": margin, "n_seeds": n, "verdict": v,
            "seeds_to_decide": float(n) if decided else seeds_to_decide(m, sd, margin)}


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) >= 2 else float("nan")


def _paired_finding(figure: str, finding: str, panel: str, comparison: str, expect: str, a: pd.Series,
                    b: pd.Series, reference: pd.Series, reps: int, seed: int) -> dict[str, Any]:
    """`finding` as a - b paired by seed; the margin is read off `reference`'s mean score."""
    return _finding(figure, finding, panel, comparison, expect, paired_diff(a, b, reps, seed),
                    reference=float(reference.mean()), sd=_sd(paired_diffs(a, b)))


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
        out.append(_paired_finding("figure5", finding, axis, comparison, expect, s, default, default, reps, seed))

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
                out.append(_paired_finding("figure3", finding, fam, f"{a} - {b}", "higher", sel.loc[a], sel.loc[b],
                                           sel.loc[a], reps, seed))
        if {"latent actions", "raw action space"} <= have:
            d = (sel.loc["latent actions"] - sel.loc["raw action space"]).dropna()
            gaps[fam] = d.to_numpy(float)
    if "maze" in gaps and "locomotion" in gaps:
        g_m, g_l = gaps["maze"], gaps["locomotion"]
        diff, lo, hi = unpaired_diff_ci(g_m, g_l, reps=reps, seed=seed)
        out.append(_finding("figure3", "latent-raw gap widest on the long-horizon family", "maze vs locomotion",
                            "(latent - raw) in maze - (latent - raw) in locomotion", "higher",
                            (diff, lo, hi, min(len(g_m), len(g_l))), reference=float(g_l.mean()),
                            # two independent means of n seeds each: var(diff) * n = var_m + var_l
                            sd=float(np.hypot(_sd(g_m), _sd(g_l)))))
    return pd.DataFrame(out, columns=list(FINDING_COLUMNS))


def _seeds_cell(x: float) -> str:
    return "" if np.isnan(x) else "never" if np.isinf(x) else str(int(x))


def findings_markdown(findings: pd.DataFrame) -> str:
    """A findings CSV as the Markdown table analysis/figures/README.md quotes (tests/test_committed_figures.py
    checks the README against this, so a verdict is never restated by hand)."""
    lines = ["| finding | panel | comparison | paired diff [95% CI] | margin | n_seeds | verdict | seeds to decide |",
             "|---|---|---|---|---|---|---|---|"]
    for r in findings.itertuples():
        lines.append(f"| {r.finding} | {r.panel} | {r.comparison} | {r.diff:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}] | "
                     f"{r.margin:.1f} | {r.n_seeds} | {r.verdict} | {_seeds_cell(float(r.seeds_to_decide))} |")
    return "\n".join(lines)
