"""The paper's figures from the results Parquet alone, so that anyone holding the results can check every bar
and every claim made from it (`latentdiffuser report` runs the notebooks under analysis/, which use this package).

    io          where results and `latentdiffuser sweep`'s status rows live, and ResultsError for every way that fails
    stats       the bootstrap CI, IQM and stratified bootstrap every reported number uses (pure numpy)
    rows        which rows are the method, one score per run, a row's Figure 3 selection and task family
    tables      one row per plotted bar (Figure 5, Figure 3 per family and per task), the tidy CSV
    references  the BC and behavior-data levels a bar is read against
    findings    each finding of the paper as a paired difference over seeds with a verdict
    plots       the figures drawn from those tables (matplotlib / seaborn load only when drawing)

Every public name is importable from `ld.analysis` itself.
"""

from __future__ import annotations

from ld.analysis.findings import (
    EXPECTATIONS,
    FINDING_COLUMNS,
    MARGIN_FLOOR,
    MARGIN_FRACTION,
    VERDICTS,
    figure3_findings,
    figure5_findings,
    findings_markdown,
    practical_margin,
    verdict,
)
from ld.analysis.io import (
    SWEEP_AXIS,
    SWEEP_VALUE,
    ResultsError,
    find_parquet_files,
    load_results,
    load_status,
    results_dir,
)
from ld.analysis.plots import (
    FIGURE5_AXIS_LABELS,
    REFERENCE_LABELS,
    REFERENCE_STYLE,
    SHORT_LABELS,
    palette,
    plot_figure3,
    plot_figure5,
    save_figure,
)
from ld.analysis.references import (
    REFERENCE_COLUMNS,
    REFERENCES,
    bc_runs,
    behavior_levels,
    prior_runs,
    reference_table,
)
from ld.analysis.rows import (
    FAMILY_TITLES,
    FIGURE5_AXES,
    METHOD,
    SELECTIONS,
    as_float,
    format_value,
    method_rows,
    per_seed,
    selection_label,
    task_family,
    with_selection,
)
from ld.analysis.stats import (
    bootstrap_ci,
    iqm,
    mean_ci,
    paired_diff,
    seeds_to_decide,
    stratified_iqm_ci,
    unpaired_diff_ci,
)
from ld.analysis.tables import (
    FIGURE5_TITLES,
    TIDY_COLUMNS,
    family_aggregate,
    figure3_table,
    figure3_task_table,
    figure5_table,
    write_tidy,
)

__all__ = [
    "EXPECTATIONS", "FAMILY_TITLES", "FIGURE5_AXES", "FIGURE5_AXIS_LABELS", "FIGURE5_TITLES", "FINDING_COLUMNS",
    "MARGIN_FLOOR", "MARGIN_FRACTION", "METHOD", "REFERENCES", "REFERENCE_COLUMNS", "REFERENCE_LABELS",
    "REFERENCE_STYLE", "SELECTIONS", "SHORT_LABELS", "SWEEP_AXIS", "SWEEP_VALUE", "TIDY_COLUMNS", "VERDICTS",
    "ResultsError", "as_float", "bc_runs", "behavior_levels", "bootstrap_ci", "family_aggregate",
    "figure3_findings", "figure3_table", "figure3_task_table", "figure5_findings", "figure5_table",
    "find_parquet_files", "findings_markdown", "format_value", "iqm", "load_results", "load_status", "mean_ci",
    "method_rows", "paired_diff", "palette", "per_seed", "plot_figure3", "plot_figure5", "practical_margin",
    "prior_runs", "reference_table", "results_dir", "save_figure", "seeds_to_decide", "selection_label",
    "stratified_iqm_ci", "task_family", "unpaired_diff_ci", "verdict", "with_selection", "write_tidy",
]
