import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    yield
    torch.set_default_dtype(default)


@pytest.fixture(scope="session")
def digits_dvs_root(tmp_path_factory):
    """digits-dvs generated once per test session into a temporary folder (a few seconds)."""
    from tks.data.digits_dvs import ensure_digits_dvs

    return ensure_digits_dvs(tmp_path_factory.mktemp("generated") / "digits-dvs")


@pytest.fixture(scope="session")
def digits_runs(tmp_path_factory):
    """Two short real digits runs (mean CE and TKS) under one folder, made once for the whole session."""
    from run_folders import make_digits_runs

    root = tmp_path_factory.mktemp("digits_runs")
    return root, make_digits_runs(root)


@pytest.fixture
def without(monkeypatch):
    """``without("tonic", ...)``: imports of these packages fail in this test, as where their extra is missing.

    Only imports made after the call fail; tks imports every optional package where it uses it (tks.extras), which
    is what the tests that use this fixture check. The few tks modules that need their extra to import at all
    (figures, the report, NIR export) are forgotten too, so that importing them again meets the block.
    """
    import sys

    def block(*packages: str) -> None:
        for top in packages:
            for name in [name for name in sys.modules if name.split(".")[0] == top] + [top]:
                monkeypatch.setitem(sys.modules, name, None)
        for name in [name for name in sys.modules if name.startswith(("tks.plots", "tks.report", "tks.export"))]:
            monkeypatch.delitem(sys.modules, name)

    return block
