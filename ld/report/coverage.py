"""Which of a suite's trials a results table holds: the trials the suite expects at a scale (matched on their
config columns), the ones missing, and the failures `latentdiffuser sweep` recorded in its status rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd

from ld.config import flatten
from ld.distributed.paths import trial_file_name


def _norm(v: Any) -> str:
    if v is None:
        return "None"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    if isinstance(v, bool):
        return str(v)
    try:
        import numpy as np

        if isinstance(v, np.bool_):
            return str(bool(v))
        f = float(v)
        if f != f:  # NaN: the Parquet's missing value for an optional field
            return "None"
        return repr(f)
    except (TypeError, ValueError):
        return str(v)


@dataclass
class Coverage:
    scale: Optional[str]
    expected: int = 0
    found: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)  # {axis, value, seed, label}
    unexpected: int = 0  # trial groups in the results that match no expected trial
    note: str = ""


def _observed_configs(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One representative row per trial (the method's, whose config columns are the trial's own)."""
    out = []
    for _, g in df.groupby(["trial_id", "seed"], sort=False):
        rep = g[g["variant"] != "prior"]
        out.append((rep if len(rep) else g).iloc[0].to_dict())
    return out


def _match(trials, observed, keys_for) -> tuple[set[int], set[int]]:
    """Indices of expected trials with results, and of observed trials that matched some expected one."""
    index: dict[tuple, list[int]] = {}
    for i, t in enumerate(trials):
        flat = t.config.flat()
        index.setdefault(tuple(_norm(flat[k]) for k in keys_for), []).append(i)
    hit, used = set(), set()
    for j, row in enumerate(observed):
        key = tuple(_norm(row.get(k)) for k in keys_for)
        if key in index:
            hit.update(index[key])
            used.add(j)
    return hit, used


def coverage(suite, df: pd.DataFrame, scale: Optional[str] = None) -> Coverage:
    """Compare the results' trials with the suite's expected trial list. The scale is the one given, or the
    one whose trials match the results best (full config, then only the fields that vary in the suite)."""
    from ld.suite import SCALES

    observed = _observed_configs(df)
    scales = [scale] if scale else list(SCALES)
    best = None
    for mode in ("full", "varying"):
        for s in scales:
            trials = suite.trials(s)
            flats = [t.config.flat() for t in trials]
            keys = [k for k in flats[0] if not k.startswith("train.") and k in df.columns]
            if mode == "varying":
                # the fields the suite's axes set (and the seed), where they vary; not those that follow from an
                # axis, e.g. a preset's per-family prior length that changes with the `dataset` axis
                varied = {k for t in trials for k in flatten(t.overrides)} | {"seed"}
                keys = [k for k in keys if k in varied and len({_norm(f[k]) for f in flats}) > 1] or ["seed"]
            hit, used = _match(trials, observed, keys)
            if best is None or len(hit) > len(best[2]):
                best = (s, trials, hit, used, mode)
        if best is not None and best[2]:
            break
    s, trials, hit, used, mode = best
    if not hit and not scale:
        return Coverage(scale=None, found=len(observed), unexpected=len(observed),
                        note="no results trial matches the suite's trials at any scale (pass --scale to list the "
                             "expected trials); the figure shows what the results hold")
    missing = [{"axis": t.axis, "value": str(t.value), "seed": t.config.seed,
                "label": f"{t.value if t.axis == 'product' else t.label} seed={t.config.seed}"}
               for i, t in enumerate(trials) if i not in hit]
    note = "" if mode == "full" else ("matched on the suite's varying fields only (the results differ from the "
                                       "suite's base config in other fields, e.g. `--set` overrides)")
    return Coverage(scale=s, expected=len(trials), found=len(hit), missing=missing,
                    unexpected=len(observed) - len(used), note=note)


# ----------------------------------------------------------------------------------------------------
# failures recorded by `latentdiffuser sweep`


def failed_trials(status: pd.DataFrame) -> list[dict[str, str]]:
    """The failed trials among `latentdiffuser sweep`'s status rows (`ld.analysis.load_status`), as the page and
    report.json list them: the last line of the error, which is what names the cause."""
    if status.empty:
        return []
    out = []
    for r in status[status["status"] != "ok"].to_dict("records"):
        err = r["error"].strip() if isinstance(r.get("error"), str) else ""
        out.append({"file": trial_file_name(r["trial_id"], r["seed"]), "status": str(r["status"]),
                    "axis": str(r.get("sweep.axis", "")), "value": str(r.get("sweep.value", "")),
                    "seed": str(r["seed"]), "error": err.splitlines()[-1][:300] if err else ""})
    return out


def trial_cost(status: pd.DataFrame) -> dict[str, Any]:
    """What the suite's finished trials cost, from their status rows: trial-minutes (the sum of each trial's
    wall time, so two trials at once on two cores count twice: CPU-minutes at one thread per trial) and how
    many stage runs were trained rather than reused from the stage cache. {} without status rows (a copy of
    the results alone). A trial interrupted and rerun counts its finished run only."""
    if status.empty or "wall_s" not in status.columns:
        return {}
    ok = status[status["status"] == "ok"]
    if "updated" in ok.columns:
        ok = ok.sort_values("updated")
    ok = ok.drop_duplicates(["trial_id", "seed"], keep="last")
    if ok.empty:
        return {}

    def count(col: str) -> int:
        if col not in ok.columns:
            return 0
        return int(sum(len([s for s in str(v).split(",") if s.strip()]) for v in ok[col].fillna("")))

    out: dict[str, Any] = {"trials timed": len(ok),
                           "trial-minutes": round(float(pd.to_numeric(ok["wall_s"], errors="coerce").sum()) / 60, 1),
                           "stage runs trained": count("trained"), "stage runs reused": count("reused")}
    if "host" in ok.columns:
        out["hosts"] = ", ".join(sorted(map(str, ok["host"].dropna().unique())))
    return out
