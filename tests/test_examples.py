import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "sj_model_with_tks_loss.py"


def test_example_uses_only_the_loss_from_tks():
    tree = ast.parse(EXAMPLE.read_text())
    from_tks = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("tks")}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert from_tks == {"tks.losses"} and not any(name.startswith("tks") for name in imports)
    assert len(EXAMPLE.read_text().splitlines()) < 80


def test_sj_model_trains_with_the_tks_loss(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--epochs", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    epochs = re.findall(r"epoch (\d)  TKS weight (\S+)  last-batch loss (\S+)  test top-1 (\S+)%", result.stdout)
    assert [(e, w) for e, w, _, _ in epochs] == [("1", "0.00"), ("2", "0.35")]  # the second epoch uses TKS
    assert float(epochs[-1][3]) > 80.0  # it learns: chance is 10%
