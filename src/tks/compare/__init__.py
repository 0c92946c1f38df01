"""Comparison of runs from their files: the paper's Table 4 and the numbers behind its figures (``tks compare``).

* ``runs``: run folders read and checked (``Run``), without building a model or loading data;
* ``groups``: runs grouped into experiments, statistics over seeds and paired differences between methods;
* ``paper``: the rows the TKS paper reports, beside its published numbers;
* ``tables``: the comparison as Markdown (the layout of Table 4) and CSV;
* ``command``: ``tks compare`` itself, from folders to the printed and written tables.
"""

from tks.compare.command import compare_runs
from tks.compare.groups import (
    Group,
    PairedStat,
    Row,
    Stat,
    accuracy_by_test_steps,
    experiment_settings,
    group_runs,
    mean_std,
    method_label,
    paired_difference,
    per_step_accuracy,
    summarize,
    table_rows,
)
from tks.compare.paper import PAPER_HEADER, PAPER_NOTE, format_difference, paper_markdown, paper_rows, paper_target
from tks.compare.runs import METRICS, MODELS, Run, RunFolderError, expand_run_dirs, read_run, read_runs, selected_model
from tks.compare.tables import (
    TABLE_HEADER,
    TABLE_NOTE,
    format_stat,
    paired_markdown,
    steps_markdown,
    table_note,
    to_csv,
    to_markdown,
)

__all__ = [
    "METRICS",
    "MODELS",
    "PAPER_HEADER",
    "PAPER_NOTE",
    "TABLE_HEADER",
    "TABLE_NOTE",
    "Group",
    "PairedStat",
    "Row",
    "Run",
    "RunFolderError",
    "Stat",
    "accuracy_by_test_steps",
    "compare_runs",
    "expand_run_dirs",
    "experiment_settings",
    "format_difference",
    "format_stat",
    "group_runs",
    "mean_std",
    "method_label",
    "paired_difference",
    "paired_markdown",
    "paper_markdown",
    "paper_rows",
    "paper_target",
    "per_step_accuracy",
    "read_run",
    "read_runs",
    "selected_model",
    "steps_markdown",
    "summarize",
    "table_note",
    "table_rows",
    "to_csv",
    "to_markdown",
]
