"""`ld report SUITE --results URI [--out DIR]`: regenerate a suite's figure from its Parquet results.

    ld report figure5 --results runs/sweeps                   # a sweep storage root (uses results/figure5/)
    ld report figure3 --results runs/sweeps/results/figure3 --out reports/figure3
    ld report my_suite.yaml --results R --notebook analysis/figure5.py --scale small

SUITE is a suite name (`ablations/<name>.yaml`, then `sweeps/<name>.yaml`, relative to the repository root
of the installed package) or a suite YAML path. The suite's notebook `analysis/<suite name>.py` (jupytext
percent format; `--notebook` overrides) is executed headless with nbclient; it gets the results location,
the output folder and the suite name in `LD_RESULTS`, `LD_OUT`, `LD_SUITE` and writes the figure (PNG, SVG)
and a tidy CSV of the plotted numbers. The report adds the executed notebook, `index.html` (figure, table,
the suite's config, provenance: package version, git commit, hardware, trials found, failures, and the
trials the suite expects at the recorded scale that have no results), `suite.yaml` and `report.json`.

A results set with missing trials is plotted as it is and the page lists what is missing. No results, an
empty table or a table without the results schema is one error message, exit code 2, and nothing is
written: the report is built in a temporary folder and moved into place only when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
import yaml

from ld.distributed.paths import trial_file_name

REPO_ROOT = Path(__file__).resolve().parent.parent
SUITE_DIRS = ("ablations", "sweeps")


class ReportError(Exception):
    """The notebook failed for a reason that is not the user's input (exit code 1)."""


# ----------------------------------------------------------------------------------------------------
# resolving the suite and its notebook


def resolve_suite(spec: str):
    from ld.config import ConfigError
    from ld.suite import load_suite

    p = Path(spec)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return load_suite(p)
    for d in SUITE_DIRS:
        for ext in (".yaml", ".yml"):
            cand = REPO_ROOT / d / f"{spec}{ext}"
            if cand.is_file():
                return load_suite(cand)
    known = sorted(f.stem for d in SUITE_DIRS for f in (REPO_ROOT / d).glob("*.yaml"))
    raise ConfigError(f"unknown suite {spec!r}: not a file and not in {', '.join(d + '/' for d in SUITE_DIRS)} "
                      f"under {REPO_ROOT}; known suites: {', '.join(known) or 'none'}")


def resolve_notebook(suite_name: str, override: Optional[str | Path] = None) -> Path:
    from ld.config import ConfigError

    if override is not None:
        p = Path(override)
        if not p.is_file():
            raise ConfigError(f"notebook not found: {p}")
        return p.resolve()
    p = REPO_ROOT / "analysis" / f"{suite_name}.py"
    if not p.is_file():
        raise ConfigError(f"no analysis notebook for suite {suite_name!r} (looked for {p}); pass --notebook PATH")
    return p


# ----------------------------------------------------------------------------------------------------
# which of the suite's trials have results


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
                keys = [k for k in keys if len({_norm(f[k]) for f in flats}) > 1] or ["seed"]
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
# failures recorded by `ld sweep`


def failed_trials(status: pd.DataFrame) -> list[dict[str, str]]:
    """The failed trials among `ld sweep`'s status rows (`ld.analysis.load_status`), as the page and
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


# ----------------------------------------------------------------------------------------------------
# executing the notebook


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(notebook: Path, env: dict[str, str], timeout: int = 1800):
    """Run a jupytext notebook headless (the kernel is this interpreter); returns the executed notebook.
    A ResultsError raised in the notebook becomes ResultsError here; any other failure ReportError."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from ld.analysis import ResultsError

    nb = jupytext.read(notebook)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    with _env({**env, "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}):
        try:
            client.execute()
        except CellExecutionError as e:
            if e.ename == "ResultsError":
                raise ResultsError(e.evalue) from None
            raise ReportError(f"notebook {notebook} failed: {e.ename}: {e.evalue}") from None
        except Exception as e:  # the kernel did not start, died, or a cell timed out
            raise ReportError(f"notebook {notebook} could not be executed: {type(e).__name__}: {e}") from None
    return nb


# ----------------------------------------------------------------------------------------------------
# the page


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
    """Which trials were trained by older math than this ld's: a stage whose recorded version (the
    `stage.<name>.version` column, written since stage versions were recorded) differs from the stage's
    version now, or was not recorded. A figure of such trials is a record of older code, and its page says
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
    if not stale:
        return {}
    return {"trials": len(stale), "of": len(trials), "stages": stages}


def stale_text(stale: dict[str, Any]) -> str:
    """One sentence for the page, the report and the figure's title."""
    if not stale:
        return ""
    what = "; ".join(f"{k}: {v}" for k, v in stale["stages"].items())
    return (f"Stale: {stale['trials']} of {stale['of']} trials were trained by older stage code than this ld's "
            f"({what}). The figure is a record of that code, not of the current method; rerun the suite into a "
            f"fresh storage to replace it.")


def write_page(out: Path, *, suite, stem: str, df: pd.DataFrame, results: str, cov: Coverage,
               failures: list[dict[str, str]], notebook: Path, elapsed: float,
               stale: Optional[dict[str, Any]] = None) -> Path:
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


# ----------------------------------------------------------------------------------------------------
# the command


def build_report(suite_spec: str, results: str, out: Optional[Path] = None, *, notebook: Optional[str] = None,
                 scale: Optional[str] = None, timeout: int = 1800) -> Path:
    """Validate, execute the notebook into a temporary folder, write the page, move everything into `out`."""
    import nbformat

    from ld.analysis import ResultsError, load_results, load_status, method_rows

    t0 = time.perf_counter()
    suite = resolve_suite(suite_spec)
    nb_path = resolve_notebook(suite.name, notebook)
    df = load_results(results, suite.name)  # raises ResultsError before anything is written
    if method_rows(df).empty:
        raise ResultsError(f"results under {results} have no rows of the method (variant latentdiffuser)")
    cov = coverage(suite, df, scale)
    stale = stale_stages(df)
    failures = failed_trials(load_status(results, suite.name))
    failed = {(f["axis"], f["value"], f["seed"]): f["error"] or f["status"] for f in failures}
    for m in cov.missing:
        m["failure"] = failed.get((m["axis"], m["value"], str(m["seed"])), "")
    out = Path(out) if out is not None else Path("reports") / suite.name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        env = {"LD_RESULTS": str(Path(results).resolve()) if "://" not in str(results) else str(results),
               "LD_OUT": str(tmp.resolve()), "LD_SUITE": suite.name,
               "LD_STALE": "stale: trained by older stage code" if stale else ""}
        nb = execute_notebook(nb_path, env, timeout=timeout)
        stem = nb_path.stem
        nbformat.write(nb, tmp / f"{stem}.ipynb")
        if suite.path:
            shutil.copyfile(suite.path, tmp / "suite.yaml")
        (tmp / "report.json").write_text(json.dumps({
            "suite": suite.name, "results": str(results), "notebook": str(nb_path), "scale": cov.scale,
            "expected_trials": cov.expected, "found_trials": cov.found, "missing": cov.missing,
            "unexpected_trials": cov.unexpected, "failures": failures, "note": cov.note, "stale": stale,
            "provenance": {k: str(v) for k, v in provenance(df).items()},
        }, indent=2))
        write_page(tmp, suite=suite, stem=stem, df=df, results=str(results), cov=cov, failures=failures,
                   notebook=nb_path, elapsed=time.perf_counter() - t0, stale=stale)
        out.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="regenerate a suite's figure, table and HTML page from its Parquet",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("suite", help="suite name (ablations/<name>.yaml or sweeps/<name>.yaml) or a suite YAML path")
    p.add_argument("--results", required=True, metavar="URI",
                   help="sweep storage root, its results/<suite>/ folder, an `ld run --out` folder or a Parquet file")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<suite>)")
    p.add_argument("--notebook", default=None, metavar="PATH",
                   help="analysis notebook (jupytext .py); default: analysis/<suite name>.py")
    p.add_argument("--scale", choices=("smoke", "small", "paper"), default=None,
                   help="scale the results were run at (default: inferred from the results)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per notebook cell")
    p.set_defaults(func=cmd_report)
    return p


def cmd_report(args: argparse.Namespace) -> int:
    from ld.analysis import ResultsError
    from ld.config import ConfigError

    try:
        out = build_report(args.suite, args.results, args.out, notebook=args.notebook, scale=args.scale,
                           timeout=args.timeout)
    except (ResultsError, ConfigError) as e:
        print(f"ld report: error: {e}", file=sys.stderr)
        return 2
    except ReportError as e:
        print(f"ld report: error: {e}", file=sys.stderr)
        return 1
    rep = json.loads((out / "report.json").read_text())
    if rep["scale"]:
        print(f"ld report: {rep['suite']} at scale {rep['scale']}: {rep['found_trials']}/{rep['expected_trials']} "
              f"expected trials have results, {len(rep['missing'])} missing, {len(rep['failures'])} failures")
    else:
        print(f"ld report: {rep['suite']}: {rep['note']}; {rep['found_trials']} trials plotted, "
              f"{len(rep['failures'])} failures")
    for m in rep["missing"][:20]:
        print(f"  missing: {m['label']}" + (f" (failed: {m['failure']})" if m.get("failure") else ""))
    if len(rep["missing"]) > 20:
        print(f"  ... and {len(rep['missing']) - 20} more (see {out / 'index.html'})")
    if rep.get("stale"):
        print(f"  {stale_text(rep['stale'])}")
    print(f"report: {out / 'index.html'}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m ld.report report ...`: `ld report` without the rest of the CLI (tests call it in-process)."""
    parser = argparse.ArgumentParser(prog="ld")
    sub = parser.add_subparsers(dest="command", required=True)
    add_report_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
