"""What README.md and docs/ claim, held to what was measured and to commands that exist (issue 26, part 8).

Two checks, both on the text alone (no command is run: the file takes about 2 s):

- The README's opening paragraph gives TKS's result as the paper reports it beside what this project measured in
  its converged study: it does not state "higher accuracy" or "better-calibrated confidence" as a fact, it links
  docs/results.md, and every figure it quotes is one of docs/results.md (what was measured here) or of the
  ``# target:`` lines of configs/paper/ (the paper's numbers, as this project records them).
- Every figure in README.md and docs/ is either produced by a command the page names beside it, or marked as the
  paper's or as measured once by hand; whether a figure has its note is for a reader to judge, but each command the
  pages name must exist. Every one, in inline code or in a code block, is checked: ``tks <verb>`` against the CLI
  parser (the verb, each ``--option`` of it, and each ``--set KEY=VALUE`` against the config loader);
  ``python benchmarks/<file>.py``, ``python examples/...`` and ``python tools/...`` against the files and the
  options their source declares; ``bash <script>.sh`` and ``studies/<script>.sh`` against the files; and
  ``nox -s <session>`` against noxfile.py. Each file a command names under configs/, studies/, benchmarks/,
  results/, examples/ or tools/ must exist. A failure names the page, the line and the command.
"""

import argparse
import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_docs import PAGES, ROOT

README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"

# ---- the README's opening paragraph: the paper's claims beside what was measured here ----

# Phrases that state a benefit of TKS as a fact; the converged study measured a worse ECE and no top-1 gain.
UNQUALIFIED = re.compile(r"higher accuracy|better[- ]calibrated|more accurate overall", re.IGNORECASE)
# A figure: a number with a decimal point or a percent sign, with its sign ("-23%", "+0.08", "92.62").
FIGURE = re.compile(r"(?<![\w.])[-+−]?\d+\.\d+(?!\d)|(?<![\w.])[-+−]?\d+(?=%)")


def opening_paragraph(readme: str) -> str:
    """The first paragraph of prose after the README's first code block: what a reader meets first."""
    after = readme.split("```", 2)[2].split("\n", 1)[1]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", after) if p.strip()]
    return paragraphs[0]


def sentences(paragraph: str) -> list[str]:
    return re.split(r"(?<=[.])\s+(?=[A-Z(])", " ".join(paragraph.split()))


def figures(text: str) -> list[str]:
    """The figures a sentence quotes, without link targets and arXiv numbers (a citation is not a figure)."""
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"arXiv:\S+", "", text)
    return [f.replace("−", "-") for f in FIGURE.findall(text)]


def paper_targets() -> str:
    """The paper's numbers as this project records them: the first line of each recipe of configs/paper/."""
    return "\n".join(p.read_text().splitlines()[0] for p in sorted((ROOT / "configs" / "paper").glob("*.yaml")))


def unsourced_figures(paragraph: str, measured: str, paper: str) -> list[str]:
    """Figures of a paragraph found neither where its sentence says they come from; empty when all are found.

    A sentence that says what the paper reports takes its figures from ``paper``, every other one from
    ``measured``. A figure is found when its text, sign included, occurs there as a number of its own.
    """
    missing = []
    for sentence in sentences(paragraph):
        source, name = (paper, "configs/paper") if "paper reports" in sentence else (measured, "docs/results.md")
        for figure in figures(sentence):
            if not re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d])", source):
                missing.append(f"{figure} (not in {name}): {sentence[:100]}")
    return missing


def test_readme_opening_states_measured_results_beside_the_papers():
    opening = opening_paragraph(README.read_text())
    assert opening.startswith("A spiking neural network"), opening[:80]
    assert not UNQUALIFIED.search(opening), f"the opening claims a benefit as fact: {UNQUALIFIED.search(opening)}"
    assert "](docs/results.md" in opening, "the opening does not link the study, docs/results.md"
    assert any("paper reports" in s for s in sentences(opening)), "the opening does not say what the paper reports"
    # the measured sentence gives the costs too, not only the gains
    for word in ("AURC", "ECE", "top-5", "T=1"):
        assert word in opening, f"the opening leaves out {word}"
    quoted = figures(opening)
    assert len(quoted) >= 8, quoted
    assert unsourced_figures(opening, RESULTS.read_text(), paper_targets()) == []


def test_the_figure_check_catches_a_figure_of_nowhere():
    measured = "TKS 92.62 against 92.54 (+0.08 [-0.50, +0.65]); AURC -23%."
    paper = "# target: Table 4, CIFAR-10, ResNet-19, TKS: top-1 96.35"
    good = "The paper reports 96.35% on CIFAR-10. Measured here: 92.62% against 92.54%, +0.08, AURC -23%."
    assert unsourced_figures(good, measured, paper) == []
    assert figures("Dong et al. 2023, [arXiv:2304.06540](https://arxiv.org/abs/2304.06540), 3 seeds, T=1") == []
    bad = unsourced_figures("Measured here: 92.6% (rounded), and 96.35 from the paper.", measured, paper)
    assert [b.split(" ", 1)[0] for b in bad] == ["92.6", "96.35"]  # a rounding, a paper figure given as measured
    assert unsourced_figures("Here -0.08 better.", measured, paper)  # the sign is part of the figure
    assert unsourced_figures("The paper reports 92.62.", measured, paper)  # a measured figure given as the paper's
    assert UNQUALIFIED.search("The result is higher accuracy, better-calibrated confidence")


# ---- every command the pages name exists ----

PLACEHOLDER = re.compile(r"[<>\[\]]|\.\.\.|^[A-Z][A-Z0-9_]*$")  # <run>, [options], ..., CHECKPOINT, DIR
REPO_DIRS = ("configs/", "studies/", "benchmarks/", "results/", "examples/", "tools/")
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+")


@dataclass(frozen=True)
class Command:
    """A command as a page names it: where, and its text."""

    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def shell_parts(line: str) -> list[str]:
    """The simple commands of one shell line: comment dropped, split at ``&&`` and ``;``, ``do``/``$`` removed."""
    line = re.sub(r"(^|\s)#.*$", "", line).strip()
    parts = [p.strip() for p in re.split(r"&&|;", line)]
    return [re.sub(r"^(?:\$|do|then)\s+", "", p) for p in parts if p and p not in ("done", "fi")]


def candidate(text: str) -> bool:
    """Whether a piece of code is one of the commands checked here."""
    text = ENV_PREFIX.sub("", text)
    return bool(
        re.match(r"(tks|torchrun|nox|bash)\s", text)
        or re.match(r"python3?\s+(-m\s+tks\s|benchmarks/|examples/|tools/)", text)
        or re.match(r"(studies|benchmarks|tools)/\S+\.sh\b", text)
    )


def extract_commands(markdown: str, page: str) -> list[Command]:
    """Every command a markdown page names, in shell code blocks (a line each) and in inline code.

    A code block's lines continued with a backslash are joined; Python, YAML and JSON blocks are left out. Inline
    code may run over one line break, as the pages wrap it.
    """
    commands = []
    prose = markdown
    for match in FENCE.finditer(markdown):
        first = markdown.count("\n", 0, match.start(2)) + 1
        prose = prose[: match.start()] + re.sub(r"[^\n]", " ", match.group(0)) + prose[match.end() :]
        if match.group(1) not in SHELL_LANGS:
            continue
        lines, start, pending = match.group(2).split("\n"), first, ""
        for offset, line in enumerate(lines):
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            commands += [Command(page, start, " ".join(p.split())) for p in shell_parts(pending + line) if candidate(p)]
            pending = ""
    for match in INLINE.finditer(prose):
        text = " ".join(match.group(1).split())
        if candidate(text):
            commands.append(Command(page, prose.count("\n", 0, match.start()) + 1, text))
    return commands


def cli_options() -> dict[str, set[str]]:
    """Each verb of ``tks`` and its option strings, from the parser the command uses."""
    from tks.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {verb: {o for a in sub._actions for o in a.option_strings} for verb, sub in subparsers.choices.items()}


def nox_sessions() -> set[str]:
    """The session names noxfile.py defines (``@nox.session`` functions, or their ``name=``)."""
    sessions = set()
    for node in ast.walk(ast.parse((ROOT / "noxfile.py").read_text())):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if ast.unparse(target) == "nox.session":
                names = [k.value for k in getattr(decorator, "keywords", []) if k.arg == "name"]
                sessions.add(ast.literal_eval(names[0]) if names else node.name)
    return sessions


def flags(argv: list[str]) -> list[str]:
    """The ``--options`` of an argument list, without their ``=value``; placeholders left out."""
    return [a.split("=", 1)[0] for a in argv if a.startswith("--") and not PLACEHOLDER.search(a.split("=", 1)[0])]


def missing_files(argv: list[str], root: Path) -> list[str]:
    """The arguments that name a file of the repository (configs/..., results/...) that does not exist."""
    paths = [a for a in argv if a.startswith(REPO_DIRS) and not PLACEHOLDER.search(a)]
    return [p for p in paths if not any(root.glob(p.rstrip("/")))]


def override_problem(item: str) -> str | None:
    """What is wrong with one ``--set KEY=VALUE`` (None when ``tks train`` would take it).

    A value that is a placeholder or a shell variable (``run.seed=$seed``) cannot be checked: only its key is.
    """
    from tks.config.loader import flatten, load_config, to_dict

    key, _, value = item.partition("=")
    if "$" in value or PLACEHOLDER.search(value):
        keys = flatten(to_dict(load_config()))
        known = key in keys or any(key.startswith(f"{k}.") for k, v in keys.items() if isinstance(v, dict))
        return None if known else f"--set {item}: unknown config key {key!r}"
    try:
        load_config(None, [item])
    except Exception as error:  # ConfigError: the message names the key and what is wrong
        return f"--set {item}: {error}"
    return None


def command_problem(command: str, verbs: dict[str, set[str]], sessions: set[str], root: Path = ROOT) -> str | None:
    """What is wrong with one command (None when it exists as written, as far as its text shows)."""
    try:
        argv = shlex.split(ENV_PREFIX.sub("", command))
    except ValueError as error:
        return f"cannot be split into arguments ({error})"
    if argv[0] == "torchrun" or argv[:3] == ["python", "-m", "tks"] or argv[:3] == ["python3", "-m", "tks"]:
        if "-m" not in argv or argv[argv.index("-m") + 1 : argv.index("-m") + 2] != ["tks"]:
            return None  # torchrun of another module: not ours to check
        argv = ["tks", *argv[argv.index("-m") + 2 :]]
    if argv[0] == "tks":
        if len(argv) == 1 or PLACEHOLDER.search(argv[1]) or argv[1] in ("-h", "--help"):
            return None
        if argv[1] not in verbs:
            return f"'tks {argv[1]}' is not a verb of tks (verbs: {', '.join(sorted(verbs))})"
        unknown = [f for f in flags(argv[2:]) if f not in verbs[argv[1]]]
        if unknown:
            return f"'tks {argv[1]}' has no option {', '.join(unknown)}"
        overrides = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--set"]
        overrides += [a.split("=", 1)[1] for a in argv if a.startswith("--set=")]
        wrong = [problem for item in overrides if (problem := override_problem(item))]
        if wrong:
            return "; ".join(wrong)
        missing = missing_files(argv[2:], root)
        return f"names missing files {missing}" if missing else None
    if argv[0] == "nox":
        named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-s", "--session", "--sessions")]
        unknown = [s for s in named if s not in sessions]
        return f"no nox session {unknown} in noxfile.py (sessions: {sorted(sessions)})" if unknown else None
    if argv[0] in ("python", "python3", "bash"):
        argv = argv[1:]
    script, rest = argv[0], argv[1:]
    if PLACEHOLDER.search(script):
        return None
    path = root / script
    if not path.is_file():
        return f"{script} is not a file of the repository"
    if path.suffix == ".py":
        source = path.read_text()
        unknown = [f for f in flags(rest) if f'"{f}"' not in source and f"'{f}'" not in source]
        if unknown:
            return f"{script} declares no option {', '.join(unknown)}"
    missing = missing_files(rest, root)
    return f"names missing files {missing}" if missing else None


def page_commands() -> list[Command]:
    return [c for page in PAGES for c in extract_commands(page.read_text(), str(page.relative_to(ROOT)))]


def test_every_command_the_pages_name_exists():
    verbs, sessions = cli_options(), nox_sessions()
    commands = page_commands()
    problems = [f"{c}\n    {p}" for c in commands if (p := command_problem(c.text, verbs, sessions))]
    assert not problems, "commands in README.md and docs/ that do not exist:\n" + "\n".join(problems)
    # the extraction still finds what the pages name: every kind, in both places
    texts = [ENV_PREFIX.sub("", c.text) for c in commands]
    for start in ("tks train", "tks sweep studies/", "python benchmarks/", "nox -s floor", "bash benchmarks/"):
        assert any(t.startswith(start) for t in texts), f"no command starting {start!r} found; is the pattern right?"
    assert len(commands) >= 100, len(commands)


SAMPLE = """\
# A page

Run `tks train configs/digits.yaml --set optim.epochs=1` or `tks eval CHECKPOINT --steps 1 2` (`tks.losses` is
a module, `tks: error: ...` a message). A wrapped one: `python benchmarks/models.py --models
spiking_cnn --channels-last`.

```bash
tks train --resume runs/<run>     # a comment
for seed in 0 1; do tks train --set run.seed=$seed; done
OMP_NUM_THREADS=1 python benchmarks/models.py \\
    --threads 1
nox -s floor && pytest
```

```python
tks = "tks train --bogus"
```

```text
$ tks plot runs/
tks: error: figures (tks plot, tks report): matplotlib is not installed
```
"""


def test_the_extractor_finds_commands_where_pages_put_them():
    found = [(c.line, c.text) for c in extract_commands(SAMPLE, "sample.md")]
    assert found == [
        (8, "tks train --resume runs/<run>"),
        (9, "tks train --set run.seed=$seed"),
        (10, "OMP_NUM_THREADS=1 python benchmarks/models.py --threads 1"),
        (12, "nox -s floor"),
        (20, "tks plot runs/"),
        (3, "tks train configs/digits.yaml --set optim.epochs=1"),
        (3, "tks eval CHECKPOINT --steps 1 2"),
        (4, "python benchmarks/models.py --models spiking_cnn --channels-last"),
    ]
    verbs, sessions = cli_options(), nox_sessions()
    assert [command_problem(text, verbs, sessions) for _, text in found] == [None] * len(found)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("tks trian configs/digits.yaml", "'tks trian' is not a verb"),
        ("tks eval runs/<run>/checkpoint.pt --stepz 1", "'tks eval' has no option --stepz"),
        ("tks sweep studies/nonexistent.yaml", "names missing files ['studies/nonexistent.yaml']"),
        ("tks train configs/paper/cifar10_resnet19_tks.yml", "names missing files"),
        ("torchrun --nproc_per_node 2 -m tks train --set=x=1 --epochs 3", "'tks train' has no option --epochs"),
        ("python benchmarks/no_such_benchmark.py --quick", "is not a file of the repository"),
        ("python benchmarks/models.py --channels-first", "declares no option --channels-first"),
        ("BUDGET_S=1 bash benchmarks/gpu_session.sh.old", "is not a file of the repository"),
        ("studies/results.py", "is not a file of the repository"),
        ("nox -s ceiling", "no nox session ['ceiling']"),
        ("tks train --set 'unclosed", "cannot be split"),
        ("tks train --set loss.tks.temprature=5", "unknown config key 'loss.tks.temprature'"),
        ("tks sweep studies/fashion_mnist.yaml --set optim.epochs=zero", "optim.epochs must be int"),
        ("tks train --set run.sed=$seed", "unknown config key 'run.sed'"),
    ],
)
def test_the_command_check_catches_what_does_not_exist(command, problem):
    found = command_problem(command, cli_options(), nox_sessions())
    assert found and problem in found, found


def test_a_bogus_command_in_a_page_fails_naming_page_line_and_command():
    """A copy of the README with one bad line added: the failure points at that line and no other."""
    readme = README.read_text()
    lines = readme.count("\n")
    added = "```bash\ntks train configs/digits.yaml --set optim.epochs=1\ntks compare runs --paierd TKS\n```\n"
    page = readme + "\n" + added
    verbs, sessions = cli_options(), nox_sessions()
    problems = [str(c) for c in extract_commands(page, "README.md") if command_problem(c.text, verbs, sessions)]
    assert problems == [f"README.md:{lines + 4}: tks compare runs --paierd TKS"]
