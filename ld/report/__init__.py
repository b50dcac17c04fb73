"""`latentdiffuser report SUITE --results URI [--out DIR]`: regenerate a suite's figure from its Parquet results.

    latentdiffuser report figure5 --results runs/sweeps       # a sweep storage root (uses results/figure5/)
    latentdiffuser report figure3 --results runs/sweeps/results/figure3 --out reports/figure3
    latentdiffuser report my_suite.yaml --results R --notebook analysis/figure5.py --scale small

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

This module is the command: the suite and its notebook, executing it, assembling the report. Which trials the
results hold is `ld.report.coverage`; the HTML page, provenance and staleness are `ld.report.page`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from ld.report.coverage import Coverage, coverage, failed_trials, trial_cost
from ld.report.page import provenance, stale_stages, stale_text, write_page

__all__ = ["build_report", "add_report_parser", "main", "ReportError", "Coverage", "coverage", "failed_trials",
           "trial_cost", "provenance", "stale_stages", "stale_text", "write_page"]

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    status = load_status(results, suite.name)
    failures = failed_trials(status)
    cost = trial_cost(status)
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
               "LD_STALE": "stale: older stage code or retired data" if stale else ""}
        nb = execute_notebook(nb_path, env, timeout=timeout)
        stem = nb_path.stem
        nbformat.write(nb, tmp / f"{stem}.ipynb")
        if suite.path:
            shutil.copyfile(suite.path, tmp / "suite.yaml")
        (tmp / "report.json").write_text(json.dumps({
            "suite": suite.name, "results": str(results), "notebook": str(nb_path), "scale": cov.scale,
            "expected_trials": cov.expected, "found_trials": cov.found, "missing": cov.missing,
            "unexpected_trials": cov.unexpected, "failures": failures, "note": cov.note, "stale": stale,
            "cost": cost,
            "provenance": {k: str(v) for k, v in provenance(df).items()},
        }, indent=2))
        write_page(tmp, suite=suite, stem=stem, df=df, results=str(results), cov=cov, failures=failures,
                   notebook=nb_path, elapsed=time.perf_counter() - t0, stale=stale, cost=cost)
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
                   help="sweep storage root, its results/<suite>/ folder, a `latentdiffuser run --out` folder or a "
                        "Parquet file")
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
        print(f"latentdiffuser report: error: {e}", file=sys.stderr)
        return 2
    except ReportError as e:
        print(f"latentdiffuser report: error: {e}", file=sys.stderr)
        return 1
    rep = json.loads((out / "report.json").read_text())
    if rep["scale"]:
        print(f"latentdiffuser report: {rep['suite']} at scale {rep['scale']}: "
              f"{rep['found_trials']}/{rep['expected_trials']} expected trials have results, "
              f"{len(rep['missing'])} missing, {len(rep['failures'])} failures")
    else:
        print(f"latentdiffuser report: {rep['suite']}: {rep['note']}; {rep['found_trials']} trials plotted, "
              f"{len(rep['failures'])} failures")
    for m in rep["missing"][:20]:
        print(f"  missing: {m['label']}" + (f" (failed: {m['failure']})" if m.get("failure") else ""))
    if len(rep["missing"]) > 20:
        print(f"  ... and {len(rep['missing']) - 20} more (see {out / 'index.html'})")
    if rep.get("cost"):
        c = rep["cost"]
        print(f"  cost: {c['trial-minutes']} trial-minutes over {c['trials timed']} finished trials "
              f"({c['stage runs trained']} stage runs trained, {c['stage runs reused']} reused)")
    if rep.get("stale"):
        print(f"  {stale_text(rep['stale'])}")
    print(f"report: {out / 'index.html'}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m ld.report report ...`: `latentdiffuser report` without the rest of the CLI (tests call it
    in-process)."""
    parser = argparse.ArgumentParser(prog="latentdiffuser")
    sub = parser.add_subparsers(dest="command", required=True)
    add_report_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
