"""The models: ``register_model`` puts a factory under a name, ``create_model(name, ...)`` builds it.

Every registered model maps ``[T, B, C, H, W]`` to per-step logits ``[T, B, num_classes]``, has
``forward_features`` (time-averaged penultimate features) and holds no loss, no targets and no device. The
built-in families register themselves in their own modules, with the same decorator a user's code uses
(``tks.models.registry`` says what a factory receives); ``model_table()`` lists them as the README does.
"""

from tks.models import resnet19, sew_resnet, spiking_cnn, static_convnet, vgg_snn  # noqa: F401 (they register)
from tks.models.registry import (
    BUILD_ARGUMENTS,
    MODELS,
    ModelEntry,
    count_parameters,
    create_model,
    list_models,
    model_table,
    register_model,
)

__all__ = [
    "BUILD_ARGUMENTS",
    "MODELS",
    "ModelEntry",
    "count_parameters",
    "create_model",
    "list_models",
    "model_table",
    "register_model",
]
