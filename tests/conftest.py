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
