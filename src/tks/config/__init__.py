"""Typed, frozen configuration loaded from YAML by a strict loader.

* ``schema``: the sections as frozen dataclasses (``Config``, ``DataConfig``, ..., the options of each loss), each
  checking its ranges;
* ``loader``: the strict YAML loader and ``--set`` overrides, conversion back to YAML, and the upgrade of configs
  stored by an earlier tks.
"""

from tks.config.loader import dump_config, flatten, from_dict, load_config, to_dict, upgrade_stored
from tks.config.schema import (
    BUILTIN_LOSSES,
    TKS_VARIANT_FIELDS,
    Config,
    ConfigError,
    DataConfig,
    LabelSmoothingOptions,
    LossConfig,
    ModelConfig,
    NeuronConfig,
    OptimConfig,
    RunConfig,
    StrongWeakOptions,
    TETOptions,
    TKSOptions,
)

__all__ = [
    "BUILTIN_LOSSES",
    "TKS_VARIANT_FIELDS",
    "Config",
    "ConfigError",
    "DataConfig",
    "LabelSmoothingOptions",
    "LossConfig",
    "ModelConfig",
    "NeuronConfig",
    "OptimConfig",
    "RunConfig",
    "StrongWeakOptions",
    "TETOptions",
    "TKSOptions",
    "dump_config",
    "flatten",
    "from_dict",
    "load_config",
    "to_dict",
    "upgrade_stored",
]
