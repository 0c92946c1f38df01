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
