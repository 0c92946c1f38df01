"""The paper's recipes: one config per table row, each naming its target, each building its model and loss."""

import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tks.build import build_model
from tks.compare import method_label
from tks.config import LabelSmoothingOptions, StrongWeakOptions, TETOptions, TKSOptions, load_config
from tks.data import dataset_info
from tks.losses import Criterion

PAPER = sorted((Path(__file__).parents[1] / "configs" / "paper").glob("*.yaml"))
TARGET = r"# target: (Table [1-4]|Ding et al\. 2025 \(arXiv:2510\.07924\) Table [7-9]), .+: top-1 \d+\.\d+"

# The rows of the paper's Tables 1-4, as (file stem, dataset, model, loss), then TKS's successor's (Ding et al. 2025,
# Tables 7-9) Strong2Weak and Weak2Strong rows. Methods: Baseline (ce), LS, TET, TKS.
CIFAR = [
    (f"{d}_{m}_{loss}", d, m, loss)
    for d in ("cifar10", "cifar100")
    for m in ("resnet19", "sew_resnet19")
    for loss in ("ce", "ls", "tet", "tks")
] + [(f"{d}_resnet19_tks_crop_flip", d, "resnet19", "tks") for d in ("cifar10", "cifar100")]  # Table 1 without '*'
DVS = [
    (f"{d}_vgg_snn_{loss}", name, "vgg_snn", loss)
    for d, name in (("cifar10dvs", "cifar10-dvs"), ("ncaltech101", "ncaltech101"))
    for loss in ("ce", "ls", "tet", "tks")
]
IMAGENET = [(f"imagenet_sew_resnet34_{loss}", "imagenet", "sew_resnet34", loss) for loss in ("ce", "tet", "tks")]
IMAGENET += [("imagenet_sew_resnet50_tks", "imagenet", "sew_resnet50", "tks")]
FINE_GRAINED = [
    (f"{d}_{m}_{loss}", d.replace("_", "-"), m, loss)
    for d in ("cub200", "stanford_dogs", "stanford_cars")
    for m in ("sew_resnet18", "sew_resnet34")
    for loss in ("ce", "tet", "tks")
]
DING = [
    (f"{d}_{m}_{short}", name, m, "strong_weak")
    for d, name, m in (
        ("cifar10", "cifar10", "resnet19"),
        ("cifar100", "cifar100", "resnet19"),
        ("imagenet", "imagenet", "sew_resnet34"),
        ("cifar10dvs", "cifar10-dvs", "vgg_snn"),
    )
    for short in ("s2w", "w2s")
]
ROWS = {stem: (data, model, loss) for stem, data, model, loss in CIFAR + DVS + IMAGENET + FINE_GRAINED + DING}


def test_one_config_per_table_row():
    assert len(ROWS) == 16 + 2 + 8 + 4 + 18 + 8  # no row listed twice
    assert sorted(p.stem for p in PAPER) == sorted(ROWS)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_is_its_rows_dataset_model_and_method(path):
    cfg = load_config(path)
    assert (cfg.data.name, cfg.model.name, cfg.loss.name) == ROWS[path.stem]
    assert cfg.data.augment == ("crop_flip" if path.stem.endswith("_crop_flip") else "official")
    if cfg.loss.name == "strong_weak":
        assert cfg.loss.strong_weak.direction == {"s2w": "strong2weak", "w2s": "weak2strong"}[path.stem[-3:]]
    # the options of every method are the official code's: LS 0.1, TET lambda 1e-3 and phi 1, TKS's official
    # teacher and students (only temperature, alpha and the linear schedule are set per dataset)
    assert cfg.loss.ls == LabelSmoothingOptions(smoothing=0.1) and cfg.loss.tet == TETOptions(lamb=1e-3, phi=1.0)
    assert cfg.loss.tks == TKSOptions(temperature=cfg.loss.tks.temperature, alpha=cfg.loss.tks.alpha)
    assert cfg.loss.tks.schedule == "linear"
    # the common recipe (docs/reference.md §7.1): lr 5e-3 x batch 128 / 1024, 600 epochs of cosine, 5 warmup epochs
    assert cfg.data.batch_size == 128 and cfg.optim.lr == pytest.approx(5e-3 * 128 / 1024)
    assert (cfg.optim.epochs, cfg.optim.warmup_epochs, cfg.optim.warmup_lr, cfg.optim.min_lr) == (600, 5, 1e-6, 1e-5)


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
