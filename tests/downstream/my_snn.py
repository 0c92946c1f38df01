"""A downstream project's plugin, as a researcher would write it: a model, a dataset and a loss of their own.

tests/test_plugins.py loads it through ``--plugin``; it imports only public names of tks.
"""

import torch
from torch import nn
from torch.utils.data import TensorDataset

import tks
from tks.snn import PerStep


@tks.register_model("my_mlp", inputs="1x8x8")
def my_mlp(num_classes: int, in_channels: int, neuron, hidden: int = 32) -> nn.Module:
    """A two-layer spiking MLP."""
    return nn.Sequential(
        PerStep(nn.Flatten(), nn.Linear(in_channels * 64, hidden)), neuron(), PerStep(nn.Linear(hidden, num_classes))
    )


@tks.register_dataset("my-stripes", num_classes=3, in_channels=1, input_size=(8, 8), classes=("top", "mid", "low"))
def my_stripes(split: str, root: str | None) -> TensorDataset:
    """Noisy 8x8 images whose bright rows give the class."""
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.randint(0, 3, (240,), generator=generator)
    images = torch.randn(240, 1, 8, 8, generator=generator) * 0.3
    for label in range(3):
        images[labels == label, 0, 3 * label : 3 * label + 2, :] += 2.0
    return TensorDataset(images, labels)


@tks.register_loss("my_scaled_ce")
def my_scaled_ce(logits: torch.Tensor, target: torch.Tensor, *, scale: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits, scaled."""
    return scale * nn.functional.cross_entropy(logits.mean(0), target)
