"""The report's `index.html`: the figure, the plotted numbers, the trials found and missing, the failures, the
provenance of the results (package version, git commit, hardware) and whether older stage code trained them."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml

from ld.report.coverage import Coverage

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f5f5f5}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.6em 1em}
.ok{background:#eef8ee;border-left:4px solid #4a4;padding:.6em 1em}
.figure svg{max-width:100%;height:auto}.muted{color:#777}
"""


def _table_html(df: pd.DataFrame) -> str:
    # a figure's two-line tick labels ("H=4\nT=12") read as one line in a table (to_html would print "\n")
    df = df.apply(lambda c: c.map(lambda v: v.replace("\n", " ") if isinstance(v, str) else v))
    return df.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.2f}", escape=True)


def _kv_html(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in d.items())
    return f"<table>{rows}</table>"


def provenance(df: pd.DataFrame) -> dict[str, Any]:
    def vals(col: str) -> str:
        if col not in df.columns:
            return "(not recorded)"
        c = df.groupby(col, dropna=False)["trial_id"].nunique().sort_values(ascending=False)
        return "; ".join(f"{k} ({n} trials)" for k, n in c.items())

    return {
        "package version": vals("package_version"), "git commit": vals("git_commit"), "hardware": vals("hardware"),
        "schema version": vals("schema_version"), "datasets": vals("dataset_name"),
        "trials": df.groupby(["trial_id", "seed"]).ngroups, "seeds": ", ".join(map(str, sorted(df["seed"].unique()))),
        "episode rows": len(df), "variants": ", ".join(sorted(map(str, df["variant"].unique()))),
        "created": f"{df['created'].min()} .. {df['created'].max()}",
    }


def stale_stages(df: pd.DataFrame) -> dict[str, Any]:
    """Which trials are not the method's current numbers: trained by older math than this ld's (a stage whose
    recorded version, the `stage.<name>.version` column, differs from the stage's version now or was not
    recorded), or on built-in data a retired generator made (`dataset_generator_version`; the HalfCheetah sets
    before version 3 scored a 942-return "expert" as 100). A figure of such trials is a record, and its page says
    so rather than passing it off as the method's current numbers. {} when every trial is current."""
    from ld.stages import dag  # lazily: it imports torch, which the rest of the report does not need

    trials = df.drop_duplicates(["trial_id", "seed"])
    stale: set[tuple] = set()
    stages: dict[str, str] = {}
    for stage in dag.ALL_STAGES:
        key = f"stage.{stage.name}.key"
        if key not in trials.columns:
            continue
        used = trials[trials[key].notna()]
        col = f"stage.{stage.name}.version"
        recorded = used[col] if col in used.columns else pd.Series(float("nan"), index=used.index)
        old = used[recorded.isna() | (recorded != stage.version)]
        if old.empty:
            continue
        stale |= set(zip(old["trial_id"], old["seed"]))
        seen = sorted({"not recorded" if pd.isna(v) else f"v{int(v)}" for v in recorded.loc[old.index]})
        stages[stage.name] = f"{', '.join(seen)} (now v{stage.version}; {len(old)} trials)"
    data = retired_data(trials)
    if not data.empty:
        stale |= set(zip(data["trial_id"], data["seed"]))
        names = ", ".join(sorted(data["dataset_name"].astype(str).unique()))
        stages["data"] = f"{names} made by a retired built-in generator ({len(data)} trials)"
    if not stale:
        return {}
    return {"trials": len(stale), "of": len(trials), "stages": stages}


def retired_data(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials whose data is a built-in set a retired generator made (ld.data.builtin.retired)."""
    from ld.data.builtin import retired

    if "dataset" not in trials.columns or "dataset_name" not in trials.columns:
        return trials.iloc[:0]
    builtin = trials[trials["dataset"].astype(str).str.startswith("builtin:")]
    version = (builtin["dataset_generator_version"] if "dataset_generator_version" in builtin.columns
               else pd.Series(None, index=builtin.index, dtype=object))
    mask = [retired(str(n), None if pd.isna(v) else v) for n, v in zip(builtin["dataset_name"], version)]
    return builtin[mask]


def stale_text(stale: dict[str, Any]) -> str:
    """One sentence for the page, the report and the figure's title."""
    if not stale:
        return ""
    what = "; ".join(f"{k}: {v}" for k, v in stale["stages"].items())
    return (f"Stale: {stale['trials']} of {stale['of']} trials were trained by older stage code than this ld's "
            f"or on retired built-in data ({what}). The figure is a record of that code and data, not of the "
            f"current method; rerun the suite into a fresh storage to replace it.")


def write_page(out: Path, *, suite, stem: str, df: pd.DataFrame, results: str, cov: Coverage,
               failures: list[dict[str, str]], notebook: Path, elapsed: float,
               stale: Optional[dict[str, Any]] = None, cost: Optional[dict[str, Any]] = None) -> Path:
    import ld

    svg = out / f"{stem}.svg"
    figure = svg.read_text() if svg.is_file() else "<p class=warn>the notebook wrote no figure</p>"
    if figure.startswith("<?xml"):
        figure = figure.split("?>", 1)[1]
    tidy_path = out / f"{stem}.csv"
    tidy = pd.read_csv(tidy_path) if tidy_path.is_file() else pd.DataFrame()
    extra_tables = [p for p in sorted(out.glob(f"{stem}_*.csv"))]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(suite.name)} report</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(suite.name)}</h1><p>{html.escape(suite.description)}</p>"]
    if stale:
        parts.append(f"<p class=warn>{html.escape(stale_text(stale))}</p>")
    if cov.missing or cov.scale is None or failures:
        msg = []
        if cov.missing:
            msg.append(f"{len(cov.missing)} of the {cov.expected} trials the suite expects at scale "
                       f"<b>{cov.scale}</b> have no results; the figure shows the {cov.found} that do.")
        if cov.scale is None:
            msg.append(html.escape(cov.note))
        if failures:
            msg.append(f"{len(failures)} failure record(s) under _status/.")
        parts.append(f"<p class=warn>{' '.join(msg)}</p>")
    else:
        parts.append(f"<p class=ok>All {cov.expected} trials of scale <b>{cov.scale}</b> have results.</p>")
    parts += [f"<div class=figure>{figure}</div>",
              f"<p><a href='{stem}.png'>PNG</a> · <a href='{stem}.svg'>SVG</a> · <a href='{stem}.csv'>tidy CSV</a> · "
              f"<a href='{stem}.ipynb'>executed notebook</a></p>",
              "<h2>Plotted numbers</h2>", _table_html(tidy.drop(columns=["panel_title"], errors="ignore"))]
    for p in extra_tables:
        parts += [f"<h2>{html.escape(p.stem)}</h2>", _table_html(pd.read_csv(p))]
    parts.append("<h2>Trials</h2>")
    cov_d = {"scale": cov.scale or "(unknown)", "expected trials": cov.expected, "with results": cov.found,
             "missing": len(cov.missing), "results trials not in the suite": cov.unexpected}
    if cov.note:
        cov_d["note"] = cov.note
    parts.append(_kv_html(cov_d))
    if cost:
        parts += ["<h3>Cost</h3>", _kv_html(cost)]
    if cov.missing:
        missing = pd.DataFrame(cov.missing)[["axis", "value", "seed", "failure"]]
        parts += ["<h3>Missing trials</h3>", _table_html(missing)]
    parts.append("<h3>Failures</h3>")
    parts.append(_table_html(pd.DataFrame(failures)) if failures else "<p class=muted>none recorded</p>")
    parts += ["<h2>Provenance</h2>", _kv_html({"results": results, **provenance(df),
                                               "report by": f"ld {ld.__version__}", "notebook": notebook,
                                               "report time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                                               "report wall s": f"{elapsed:.1f}"})]
    suite_text = suite.path.read_text() if suite.path else yaml.safe_dump(suite.model_dump(mode="json"))
    parts += ["<h2>Suite config</h2>", f"<pre>{html.escape(suite_text)}</pre>", "</body></html>"]
    page = out / "index.html"
    page.write_text("\n".join(parts))
    return page
