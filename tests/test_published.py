"""The paper's numbers (src/tks/paper/published.csv) against the recipes' ``# target:`` lines, parsed here.

The rule: a recipe whose target line names a table of the TKS paper (``# target: Table N, ...``) reproduces a row,
and the data file links it to exactly the numbers that line gives; a recipe of TKS's successor (``# target: Ding et
al. 2025 ...``) reproduces no row of the TKS paper and is linked to none. Every number of the data file names a
recipe that exists.
"""

import re
from pathlib import Path

import pytest

from tks.compare import method_label
from tks.config import load_config
from tks.paper import COLUMNS, published, read_published, targets

PAPER = Path(__file__).parents[1] / "configs" / "paper"
RECIPES = sorted(PAPER.glob("*.yaml"))
LINE = re.compile(r"# target: Table (\d), ([^,]+), ([^,]+), ([^:]+): (.*?)( \(Table (\d): ([\d.]+)\))?$")
METRIC = {"top-1": "top1", "top-5": "top5", "AURC(x1e3)": "aurc"}


def parse_target(line: str) -> tuple[list[tuple], str]:
    """The (table, dataset, model, method, metric, value) a target line names, and its row label."""
    match = LINE.match(line)
    assert match, line
    table, dataset, model, method, numbers, _, other_table, other_value = match.groups()
    row = "TKS" if method == "TKS (no '*')" else method
    method = method.split(" (")[0]
    named = []
    for part in numbers.split(", "):
        name, value = part.rsplit(" ", 1)
        named.append((int(table), dataset, model, method, METRIC[name], float(value)))
    if other_table:
        named.append((int(other_table), dataset, model, method, "top1", float(other_value)))
    return named, row


def test_the_file_has_every_table_of_the_paper_and_its_counts():
    numbers = published()
    counts = {t: sum(p.table == t for p in numbers) for t in (1, 2, 3, 4)}
    # Table 1: the paper's 8 own rows (top-1); Table 2: 2 rows (top-1); Table 3: 18 rows x top-1/top-5;
    # Table 4: 28 rows x top-1/top-5, AURC on 24 of them (ImageNet's 4 rows print '-')
    assert counts == {1: 8, 2: 2, 3: 36, 4: 28 * 2 + 24}
    assert len({(p.table, p.dataset, p.model, p.row, p.metric) for p in numbers}) == len(numbers)  # no number twice


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_each_recipe_and_its_published_numbers_agree(path):
    line = path.read_text(encoding="utf-8").splitlines()[0]
    linked = [p for p in published() if p.recipe == path.stem]
    if line.startswith("# target: Ding et al. 2025"):
        assert linked == []  # a successor's row: not a number of the TKS paper
        return
    named, _ = parse_target(line)
    primary = named[0][0]
    data = {(p.table, p.dataset, p.model, p.method, p.metric, p.value) for p in linked}
    assert set(named) <= data
    # what the line does not name is top-1 repeated by another table (Table 1 repeats Table 4's TKS* rows)
    top1 = next(v for t, *_, m, v in named if t == primary and m == "top1")
    assert all(
        p.metric == "top1" and p.value == top1 and p.table != primary for p in linked if p_fields(p) not in named
    )
    cfg = load_config(path)
    for p in linked:
        assert (p.data_name, p.model_name, p.num_steps, p.augment) == (
            cfg.data.name,
            cfg.model.name,
            cfg.data.num_steps,
            cfg.data.augment,
        )
        assert p.method == method_label(cfg.loss)


def test_every_number_names_a_recipe_and_one_key_one_recipe():
    stems = {p.stem for p in RECIPES}
    assert {p.recipe for p in published()} <= stems
    gathered = targets()
    assert len({t.recipe for t in gathered.values()}) == len(gathered) == 48  # the 56 recipes less Ding's 8


def test_tables_that_repeat_a_number_agree():
    cifar10_tks = targets()[("cifar10", "resnet19", 4, "TKS", "official")]
    assert cifar10_tks.values == {"top1": 96.35, "top5": 99.85, "aurc": 2.76}
    assert cifar10_tks.rows == ("Table 4", "Table 1 (TKS*)")
    for key in targets():
        values = [p.value for p in published() if p.key == key and p.metric == "top1"]
        assert len(set(values)) == 1, (key, values)


def p_fields(p):
    return tuple(getattr(p, f) for f in ("table", "dataset", "model", "method", "metric", "value"))


def test_a_wrong_header_is_refused():
    with pytest.raises(ValueError, match="header"):
        read_published("table,row\n4,TKS\n")
    assert read_published(",".join(COLUMNS) + "\n") == ()
