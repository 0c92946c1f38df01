"""docs/api.md: every heading is a public name with its real signature, every public name of tks is there, and
every example runs (in order, in one interpreter, as a reader would paste them)."""

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tks

PAGE = (Path(__file__).parents[1] / "docs" / "api.md").read_text()
HEADINGS = re.findall(r"^### `([\w.]+)(\(.*\))`$", PAGE, flags=re.M)


def resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def plain_signature(obj) -> str:
    """``(a, b=1, *, c=2, **d)``: names, defaults and markers, no annotations (what the page shows)."""
    parts, keyword_only = [], False
    for p in inspect.signature(obj).parameters.values():
        if p.kind is p.KEYWORD_ONLY and not keyword_only:
            parts.append("*")
            keyword_only = True
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            keyword_only = True
        elif p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        else:
            parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"({', '.join(parts)})"


def test_the_page_lists_names_with_signatures():
    assert len(HEADINGS) >= 30


@pytest.mark.parametrize(("name", "signature"), HEADINGS, ids=[name for name, _ in HEADINGS])
def test_every_heading_is_the_code(name, signature):
    assert plain_signature(resolve(name)) == signature


def test_every_public_name_of_tks_is_documented():
    documented = {name for name, _ in HEADINGS}
    names = [n for n in tks.__all__ if n not in tks.SUBMODULES and n != "__version__"]
    missing = [n for n in names if f"tks.{n}" not in documented and n not in ("Config", "StrongWeakOptions")]
    assert not missing, missing


@pytest.mark.slow
def test_the_examples_run_in_order(tmp_path):
    code = "\n".join(re.findall(r"```python\n(.*?)```", PAGE, flags=re.S))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
