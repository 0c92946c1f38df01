"""Optional dependencies, imported where they are used, and the one line that names a missing one's extra.

The core install (torch, numpy, PyYAML, tqdm) trains, evaluates and exports nothing beyond what those need: the
losses, metrics, neuron, models and the bundled digits data. Every other library belongs to an extra of the
``tks-snn`` distribution (docs/install.md) and is imported through ``require`` at the point of use, so that
``import tks`` costs no more than ``import torch`` and a missing library is a ``MissingExtraError``: one line that
says which feature needs it and which ``pip install`` brings it, never an ``ImportError`` traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from tks.errors import TKSError, short_message

DISTRIBUTION = "tks-snn"
"""The name on PyPI (``tks`` there is an unrelated project); the import name and the command are ``tks``."""

EXTRAS: dict[str, str] = {
    "torchvision": "vision",
    "PIL": "vision",
    "scipy": "vision",
    "tonic": "events",
    "lz4": "events",
    "zstandard": "events",
    "matplotlib": "plots",
    "sklearn": "plots",
    "threadpoolctl": "plots",
    "nir": "nir",
    "ray": "ray",
    "submitit": "slurm",
    "spikingjelly": "spikingjelly",
    "snntorch": "interop",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
}
"""The extra that brings each optional top-level module (pyproject.toml's ``optional-dependencies``)."""

PACKAGES = {"sklearn": "scikit-learn", "PIL": "Pillow", "mlflow": "mlflow-skinny"}
"""The names pip knows the modules by, where they differ from the module's."""


class MissingExtraError(TKSError, ImportError):
    """A feature needs an optional package that is not installed, or is installed but fails to import."""


def install_hint(module: str) -> str:
    """The pip command that brings ``module`` (its top-level name), e.g. ``pip install 'tks-snn[events]'``."""
    return f"pip install '{DISTRIBUTION}[{EXTRAS[module.partition('.')[0]]}]'"


def require(module: str, feature: str) -> ModuleType:
    """Import an optional module, or say in one line which extra the feature needs.

    Args:
        module: the dotted module to import, e.g. ``"tonic.transforms"``; its top-level name must be in ``EXTRAS``.
        feature: what needs it, e.g. ``"event datasets"``; the message starts with it.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the package is not installed, or its import fails (a torchvision built for another
            torch, a dependency of its own missing): the message names the feature, the package and the extra.
    """
    top = module.partition(".")[0]
    hint, package = install_hint(top), PACKAGES.get(top, top)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.partition(".")[0] == top:
            raise MissingExtraError(f"{feature}: {package} is not installed ({hint})") from None
        raise MissingExtraError(f"{feature}: {package} fails to import ({short_message(exc)}; {hint})") from None
    except Exception as exc:  # noqa: BLE001 - any failure inside a third-party import is reported the same way
        # e.g. torchvision built for another torch: "operator torchvision::nms does not exist"
        raise MissingExtraError(
            f"{feature}: {package} is installed but fails to import ({type(exc).__name__}: {short_message(exc)}); "
            f"install a build that matches this environment, e.g. this torch ({hint})"
        ) from None
