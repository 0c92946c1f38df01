"""The numbers the TKS paper publishes (Dong, Zhao, Zeng 2023, arXiv:2304.06540), and the runs they belong to.

``published.csv`` holds every number of the paper's own rows in Tables 1-4, one per line: the table, the row as
the paper labels it (``TKS*``: with the data augmentation of the '*' rows), dataset, model and method as printed,
the trained T, the metric (a key of ``tks.compare.METRICS``), the value in the printed unit (% or x10^3), and the
recipe of ``configs/paper/`` that reproduces it. The rows of other methods that Tables 1 and 2 cite from other
papers are not in it: no recipe here reproduces them; nor are the rows of TKS's successor (Ding et al. 2025), whose
recipes (``*_s2w``, ``*_w2s``) name their own paper and link to no number here. The last three columns say
which runs a row is about: ``data.name``, ``model.name`` and ``data.augment`` of the recipe, with the trained T
and the method label. Torch-free: ``tks compare`` reads it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

PUBLISHED_FILE = "published.csv"
COLUMNS = (
    "table",
    "row",
    "dataset",
    "model",
    "method",
    "T",
    "metric",
    "value",
    "recipe",
    "data_name",
    "model_name",
    "augment",
)


@dataclass(frozen=True)
class Published:
    """One number of the paper."""

    table: int
    row: str
    """The row's method as the table prints it, e.g. ``TKS*``."""
    dataset: str
    model: str
    method: str
    """The method as ``tks compare`` labels it: Baseline, LS, TET, TKS."""
    num_steps: int
    metric: str
    value: float
    recipe: str
    """The file stem of its recipe in ``configs/paper/``."""
    data_name: str
    model_name: str
    augment: str

    @property
    def key(self) -> tuple[str, str, int, str, str]:
        """What a run must have for this number to be its paper's: dataset, model, T, method label, augmentation."""
        return self.data_name, self.model_name, self.num_steps, self.method, self.augment


@dataclass(frozen=True)
class Target:
    """The published numbers of one recipe: a metric's value, and where the paper prints it."""

    recipe: str
    values: dict[str, float]
    """Metric key -> published value, in the printed unit."""
    rows: tuple[str, ...]
    """Where, e.g. ``("Table 1 (TKS*)", "Table 4")``."""


def read_published(text: str) -> tuple[Published, ...]:
    """Parse the CSV text of ``published.csv``.

    Raises:
        ValueError: for a header other than ``COLUMNS``.
    """
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{PUBLISHED_FILE}: the header must be {','.join(COLUMNS)}")
    return tuple(
        Published(
            table=int(r["table"]),
            row=r["row"],
            dataset=r["dataset"],
            model=r["model"],
            method=r["method"],
            num_steps=int(r["T"]),
            metric=r["metric"],
            value=float(r["value"]),
            recipe=r["recipe"],
            data_name=r["data_name"],
            model_name=r["model_name"],
            augment=r["augment"],
        )
        for r in reader
    )


@cache
def published() -> tuple[Published, ...]:
    """Every number of ``published.csv``, in its order."""
    return read_published(resources.files(__name__).joinpath(PUBLISHED_FILE).read_text(encoding="utf-8"))


def targets(numbers: Sequence[Published] | None = None) -> dict[tuple[str, str, int, str, str], Target]:
    """The published numbers of each run key (``Published.key``), gathered over the tables that print them.

    A metric printed in two tables (Table 1's TKS* rows repeat Table 4's top-1) has one value: the tests check that
    the tables agree.
    """
    gathered: dict[tuple[str, str, int, str, str], Target] = {}
    for p in published() if numbers is None else numbers:
        where = f"Table {p.table}" if p.row == p.method else f"Table {p.table} ({p.row})"
        old = gathered.get(p.key, Target(p.recipe, {}, ()))
        rows = old.rows if where in old.rows else (*old.rows, where)
        gathered[p.key] = Target(p.recipe, {**old.values, p.metric: p.value}, rows)
    return gathered


__all__ = ["COLUMNS", "PUBLISHED_FILE", "Published", "Target", "published", "read_published", "targets"]
