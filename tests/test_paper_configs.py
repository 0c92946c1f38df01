"""The paper's recipes: one config per table row, each naming its target, each building its model and loss."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tks.build import build_model
from tks.compare import method_label
from tks.config import StrongWeakOptions, load_config
from tks.data import dataset_info
from tks.losses import Criterion

PAPER = sorted((Path(__file__).parents[1] / "configs" / "paper").glob("*.yaml"))
# rows of Tables 1-4: CIFAR 2 datasets x 2 nets x 4 methods + 2 un-augmented TKS rows, DVS 2 x 4, ImageNet 3 + 1,
# fine-grained 3 datasets x 2 nets x 3 methods; and of TKS's successor (Ding et al. 2025, Tables 7-9): Strong2Weak
# and Weak2Strong on CIFAR-10/100 ResNet-19, ImageNet SEW-ResNet-34 and CIFAR10-DVS VGG-SNN
EXPECTED_ROWS = 16 + 2 + 8 + 4 + 18 + 8
TARGET = r"# target: (Table [1-4]|Ding et al\. 2025 \(arXiv:2510\.07924\) Table [7-9]), .+: top-1 \d+\.\d+"


def test_one_config_per_table_row():
    assert len(PAPER) == EXPECTED_ROWS


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_names_its_target_and_builds(path):
    first = path.read_text().splitlines()[0]
    assert re.match(TARGET, first), first
    cfg = load_config(path)
    assert cfg.run.name == path.stem and cfg.data.batch_size == 128
    info = dataset_info(cfg.data.name)
    model = build_model(cfg.model, info, cfg.data.num_steps)
    x = torch.rand(2, 2, info.in_channels, 16, 16)  # T=2, batch 2, small frames: enough to run every layer
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 2, info.num_classes)
    loss = Criterion(cfg.loss)(logits, torch.randint(0, info.num_classes, (2,)), epoch=300, epochs=cfg.optim.epochs)
    assert torch.isfinite(loss.total)
    assert f", {method_label(cfg.loss)}" in first
    assert first.startswith("# target: Ding") == (cfg.loss.name == "strong_weak")


def test_paper_hyperparameters():
    """docs/reference.md §7.1: temperature 3 / 1 / 5 and alpha 0.7 / 0.7 / 0.3; Adam without decay on ImageNet."""
    for path in PAPER:
        cfg = load_config(path)
        if cfg.loss.name == "tks":
            expected = {"imagenet": (1.0, 0.7), "cifar10-dvs": (5.0, 0.3), "ncaltech101": (5.0, 0.3)}
            assert (cfg.loss.tks.temperature, cfg.loss.tks.alpha) == expected.get(cfg.data.name, (3.0, 0.7)), path.name
        if cfg.loss.name == "strong_weak":  # Ding et al.: a = 2, lambda = 1, batch-level choice, everywhere
            assert cfg.loss.strong_weak == StrongWeakOptions(direction=cfg.loss.strong_weak.direction), path.name
            twin = load_config(path.with_name(path.name.rsplit("_", 1)[0] + "_tks.yaml"))
            assert replace(cfg, loss=twin.loss, run=twin.run) == twin, f"{path.name}: not the TKS recipe, loss swapped"
        assert cfg.data.num_steps == (10 if "dvs" in cfg.data.name or cfg.data.name == "ncaltech101" else 4)
        assert (cfg.optim.name, cfg.optim.weight_decay) == (
            ("adam", 0.0) if cfg.data.name == "imagenet" else ("adamw", 0.01)
        ), path.name
