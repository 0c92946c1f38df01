"""Every command and code block of the README runs, as a new user would run it."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
INSTALL = 'pip install -e ".[dev]"'


def bash_commands():
    commands = []
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            for part in (p.strip() for p in line.split("&&")):
                if part:
                    commands.append(part)
    return commands


def test_readme_starts_with_install_train_and_test():
    lang, first = BLOCKS[0]
    assert lang == "bash"
    assert bash_commands()[:3] == [INSTALL, "tks train", "pytest"]


def test_ci_installs_as_the_readme_says_and_runs_its_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert INSTALL in ci
    for command in ("pytest", "pytest -m slow", "nox -s floor"):  # the README's test commands, every one
        assert command in bash_commands() and re.search(rf"^{command}( |$)", ci, flags=re.M), command


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("readme")
    (work / "configs").symlink_to(ROOT / "configs")
    return work


def run(command, cwd):
    argv = shlex.split(command)
    assert argv[0] in ("tks", "torchrun"), command
    exe = Path(sys.executable).with_name(argv[0])
    env = {**os.environ, "TKS_CACHE": str(Path(cwd) / "cache")}  # generated data and frame caches stay in the test
    return subprocess.run([str(exe), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_every_readme_shell_command_runs(workdir):
    """`tks train` with no argument is the full default recipe: it must reach at least 97% on digits."""
    commands = [c for c in bash_commands() if c not in (INSTALL, "pytest", "pytest -m slow", "nox -s floor")]
    assert commands[0] == "tks train"
    first = run(commands[0], workdir)
    assert first.returncode == 0, first.stderr
    run_dir = Path(re.search(r"run folder: (\S+)", first.stdout).group(1))
    metrics = json.loads((workdir / run_dir / "metrics.json").read_text())
    assert metrics["top1"] >= 0.97, metrics
    assert "top-1" in first.stdout and "accuracy of each step" in first.stdout
    for command in commands[1:]:
        result = run(command.replace("runs/<run>", str(run_dir)), workdir)
        assert result.returncode == 0, f"{command}\n{result.stderr}"


def test_readme_commands_that_need_data_or_gpus_parse():
    """Commands in text blocks cannot run here (GPUs, datasets): their tks part parses and names existing files."""
    from tks.cli import build_parser

    lines = [line.split("  #")[0].strip() for lang, body in BLOCKS if lang == "text" for line in body.splitlines()]
    lines = [line for line in lines if line.startswith(("torchrun ", "tks "))]
    assert sum(line.startswith("torchrun") for line in lines) == 2
    for line in lines:
        argv = shlex.split(line)
        tks_args = argv[argv.index("-m") + 2 :] if argv[0] == "torchrun" else argv[1:]
        args = build_parser().parse_args(tks_args)
        if args.verb == "train" and args.config:
            assert (ROOT / args.config).is_file(), line


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "python"])
@pytest.mark.slow
def test_every_readme_python_block_runs(index, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[index][1]], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
