"""Every example of docs/own-data.md runs as it stands: a user's image folder, event files, tonic dataset,
SpikingJelly model and snnTorch model, each registered and trained for a moment."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "own-data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
NEEDS = {"spikingjelly": "the spikingjelly extra", "snntorch": "the interop extra"}


def test_the_page_has_its_five_examples():
    assert len(BLOCKS) == 5


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_every_example_runs(index, tmp_path):
    code = BLOCKS[index]
    for package, extra in NEEDS.items():
        if f"import {package}" in code or f"from {package}" in code:
            pytest.importorskip(package, reason=f"{package} is not installed ({extra})")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
