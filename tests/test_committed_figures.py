"""The figures committed under analysis/figures/ regenerate, number for number, from the Parquet committed
next to them: what a reader of the README gets when they run `latentdiffuser report` on our results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

FIGURES = Path(__file__).resolve().parents[1] / "analysis" / "figures"


@pytest.mark.parametrize("suite", ["figure5", "figure3"])
def test_committed_figure_regenerates_from_its_parquet(suite, tmp_path):
    here = FIGURES / suite
    results = here / "results"
    assert sorted(results.glob("trial=*.parquet")), f"no committed results under {results}"
    out = tmp_path / suite
    # the suite file committed beside the figure is the one its trials ran (ablations/ moves on)
    p = subprocess.run([sys.executable, "-m", "ld.cli", "report", str(here / "suite.yaml"), "--results", str(results),
                        "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    committed = json.loads((here / "report.json").read_text())
    fresh = json.loads((out / "report.json").read_text())
    assert fresh["scale"] == committed["scale"] == "small"
    assert (fresh["found_trials"], len(fresh["missing"])) == (committed["found_trials"], len(committed["missing"]))
    assert fresh["stale"] == committed["stale"]  # the page says whether its trials ran today's stage code
    for name in (f"{suite}.csv", f"{suite}_findings.csv"):
        a, b = pd.read_csv(here / name), pd.read_csv(out / name)
        assert list(a.columns) == list(b.columns) and len(a) == len(b), name
        for col in a.columns:
            if pd.api.types.is_numeric_dtype(a[col]):
                np.testing.assert_allclose(a[col].to_numpy(float), b[col].to_numpy(float), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name}:{col}")
            else:
                assert a[col].fillna("").astype(str).tolist() == b[col].fillna("").astype(str).tolist(), f"{name}:{col}"
    for ext in ("png", "svg"):
        assert (here / f"{suite}.{ext}").stat().st_size > 0


def test_readme_quotes_the_findings_csvs():
    """analysis/figures/README.md restates no verdict: its findings tables are the CSVs', row for row, as
    `ld.analysis.findings_markdown` renders them."""
    from ld.analysis import findings_markdown

    text = (FIGURES / "README.md").read_text()
    for suite in ("figure5", "figure3"):
        f = pd.read_csv(FIGURES / suite / f"{suite}_findings.csv")
        block = text.split(f"(`{suite}/{suite}_findings.csv`):", 1)[1].split("\n\n", 2)[1]
        assert block.strip() == findings_markdown(f), suite
