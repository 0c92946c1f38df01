"""The public registries: a user's model, dataset and loss go where the built-ins go, and are checked the same way."""

import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import tks
from tks.config import BUILTIN_LOSSES, LossConfig, TKSOptions, load_config
from tks.config.loader import upgrade_stored
from tks.data import DATASETS, build_dataset, dataset_info, list_datasets, register_dataset
from tks.errors import OptionError, TKSWarning, UnknownNameError
from tks.experiment import train
from tks.losses import LOSSES, Criterion, LossOutput, StrongWeakLoss, TKSLoss, register_loss, tks_objective, tks_weight
from tks.models import MODELS, create_model, list_models, model_table, register_model
from tks.registry import RegistryError
from tks.snn import LIF, PerStep

ROOT = Path(__file__).parents[1]


@pytest.fixture
def registries(monkeypatch):
    """The registries as they are, restored after the test: what it registers does not leak into others."""
    for registry in (MODELS, DATASETS, LOSSES):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def test_the_decorators_are_public_names_of_tks():
    assert tks.register_model is register_model and tks.register_dataset is register_dataset
    assert tks.register_loss is register_loss


def test_a_factory_gets_the_build_arguments_its_signature_names_and_its_options(registries):
    seen = {}

    @register_model("mine")
    def mine(num_classes, neuron, width: int = 4):
        """Mine."""
        seen.update(num_classes=num_classes, neuron=neuron, width=width)
        return nn.Sequential(
            PerStep(nn.Flatten(), nn.Linear(8, width)), neuron(), PerStep(nn.Linear(width, num_classes))
        )

    model = create_model("mine", num_classes=3, in_channels=2, width=6)
    assert seen["num_classes"] == 3 and seen["width"] == 6 and isinstance(seen["neuron"](), LIF)
    assert model(torch.rand(5, 7, 2, 2, 2)).shape == (5, 7, 3)  # [T, B, ...] -> [T, B, K]
    assert "mine" in list_models() and MODELS["mine"].options == ["width"] and MODELS["mine"].description == "Mine."
    with pytest.raises(OptionError) as caught:
        create_model("mine", num_classes=3, in_channels=2, depth=2)
    message = str(caught.value)
    assert message.startswith("model 'mine' has no option depth (") and message.endswith("<locals>.mine takes: width)")


def test_a_factory_with_kwargs_takes_any_option_and_must_return_a_module(registries):
    register_model("anything")(lambda num_classes, **options: nn.Linear(options["n"], num_classes))
    assert create_model("anything", num_classes=2, in_channels=1, n=3).in_features == 3
    register_model("not_a_module")(lambda num_classes: "a string")
    with pytest.raises(OptionError, match="returned str, not a module"):
        create_model("not_a_module", num_classes=2, in_channels=1)


def test_a_name_is_taken_once_and_the_same_code_may_register_again(registries):
    def first(num_classes):
        return nn.Linear(1, num_classes)

    register_model("twice")(first)
    register_model("twice")(first)  # the same function (a plugin imported again)
    with pytest.raises(RegistryError, match=r"model 'resnet19' is already registered by tks.models.resnet19.resnet19"):
        register_model("resnet19")(lambda num_classes: nn.Linear(1, num_classes))
    with pytest.raises(RegistryError, match="non-empty string"):
        register_model(" padded ")(first)
    with pytest.raises(UnknownNameError, match=r"unknown model 'resnet91' \(did you mean 'resnet19'\?\)"):
        create_model("resnet91", num_classes=2, in_channels=1)


def test_the_readme_model_table_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    assert model_table() in readme
    assert set(re.findall(r"^\| `(\w+)` \|", model_table(), flags=re.M)) == set(list_models())


def test_the_readme_dataset_list_is_the_registry():
    readme = (ROOT / "README.md").read_text()
    sentence = re.search(r"`data.name` selects one of (.*?), read from", readme, flags=re.S).group(1)
    assert sorted(re.findall(r"`([\w-]+)`", sentence)) == list_datasets()


def test_builtin_losses_listed_for_help_are_the_registered_ones():
    assert set(BUILTIN_LOSSES) == set(LOSSES) and len(BUILTIN_LOSSES) == len(LOSSES)


def blobs(split, root, n=96):
    generator = torch.Generator().manual_seed(0 if split == "train" else 1)
    y = torch.randint(0, 3, (n,), generator=generator)
    x = torch.randn(n, 1, 8, 8, generator=generator) * 0.3
    for label in range(3):
        x[y == label, 0, 3 * label : 3 * label + 2, :] += 2.0  # bright rows per class: learnable in a few steps
    return TensorDataset(x, y)


def small_run(tmp_path, *overrides):
    base = ["optim.epochs=3", "optim.warmup_epochs=0", "run.progress=false", "run.device=cpu", "data.num_steps=2"]
    base += ["data.batch_size=16"]
    return train(load_config(None, [*base, f"run.out_dir={tmp_path}", *overrides]))


def test_a_static_dataset_of_ones_own_trains(registries, tmp_path):
    register_dataset("blobs", num_classes=3, in_channels=1, input_size=(8, 8), classes=("a", "b", "c"))(blobs)
    dataset, info = build_dataset("blobs", "train")
    assert len(dataset) == 96 and info.classes == ("a", "b", "c") and dataset_info("blobs").kind == "static"
    result = small_run(tmp_path, "data.name=blobs")
    assert result.metrics["top1"] > 0.6  # chance is 1/3


def test_an_event_dataset_of_ones_own_gives_frames_per_step(registries, tmp_path):
    @register_dataset("frame-blobs", num_classes=3, in_channels=1, input_size=(8, 8), kind="events")
    def frames(split, root, options):
        x, y = blobs(split, root).tensors
        steps = options.num_steps
        return TensorDataset(x.unsqueeze(1).expand(-1, steps, -1, -1, -1).contiguous(), y)  # [N, T, C, H, W]

    dataset, _ = build_dataset("frame-blobs", "test", options=tks.data.DataOptions(num_steps=3))
    assert dataset[0][0].shape == (3, 1, 8, 8)
    assert small_run(tmp_path, "data.name=frame-blobs").metrics["top1"] > 0.6


def test_a_dataset_with_impossible_facts_is_refused(registries):
    with pytest.raises(OptionError, match="2 class names for 3 classes"):
        register_dataset("bad", num_classes=3, in_channels=1, input_size=(8, 8), classes=("a", "b"))
    with pytest.raises(OptionError, match="kind must be 'static' or 'events'"):
        register_dataset("bad", num_classes=3, in_channels=1, input_size=(8, 8), kind="audio")


def test_a_loss_of_ones_own_gets_its_options_and_schedule(registries, tmp_path):
    calls = []

    @register_loss("scaled_ce")
    def scaled_ce(logits, target, *, epoch, epochs, scale: float = 1.0):
        calls.append((epoch, epochs, scale))
        ce = nn.functional.cross_entropy(logits.mean(0), target)
        return LossOutput(scale * ce, {"ce": ce})

    criterion = Criterion(LossConfig(name="scaled_ce", options={"scale": 0.5}))
    logits, target = torch.randn(2, 4, 3), torch.tensor([0, 1, 2, 0])
    out = criterion(logits, target, epoch=1, epochs=3)
    assert calls == [(1, 3, 0.5)] and torch.allclose(out.total, 0.5 * out.parts["ce"])
    assert criterion.tks_weight(1, 3) == 0.0
    with pytest.raises(OptionError, match=r"loss 'scaled_ce' has no option gamma \(.*takes: scale\)"):
        Criterion(LossConfig(name="scaled_ce", options={"gamma": 2}))
    with pytest.raises(OptionError, match="loss 'tks' takes its options from loss.tks, not loss.options"):
        Criterion(LossConfig(name="tks", options={"alpha": 0.3}))
    register_dataset("blobs", num_classes=3, in_channels=1, input_size=(8, 8))(blobs)
    result = small_run(tmp_path, "data.name=blobs", "loss.name=scaled_ce", "loss.options.scale=2.0")
    assert result.metrics["top1"] > 0.6 and calls[-1][2] == 2.0


def test_a_plain_tensor_loss_is_logged_under_its_name(registries):
    register_loss("plain")(lambda logits, target: logits.mean() * 0)
    out = Criterion(LossConfig(name="plain"))(torch.randn(2, 3, 4), torch.tensor([0, 1, 2]))
    assert list(out.parts) == ["plain"]


# ------------------------------------------------------------------------------------------------- TKSLoss


def test_tks_loss_takes_its_schedule_from_its_options():
    logits, target = torch.randn(4, 6, 5), torch.randint(0, 5, (6,))
    options = TKSOptions(temperature=3.0, alpha=0.6)
    loss = TKSLoss(options)
    for epoch in range(5):
        expected = tks_objective(logits, target, options, tks_weight(options, epoch, 5)).total
        torch.testing.assert_close(loss(logits, target, epoch=epoch, epochs=5), expected)
    assert loss.weight(3, 5) == pytest.approx(0.6 * 3 / 5)
    # no weight and no epoch: the full weight alpha, as the docstring says
    torch.testing.assert_close(loss(logits, target), tks_objective(logits, target, options, 0.6).total)
    torch.testing.assert_close(loss(logits, target, 0.25), tks_objective(logits, target, options, 0.25).total)
    assert TKSLoss(temperature=3.0, alpha=0.6).options == options  # fields as keywords
    assert TKSLoss(options, alpha=0.1).options.alpha == 0.1
    with pytest.raises(ValueError, match="give both epoch and epochs"):
        loss(logits, target, epoch=1)
    with pytest.raises(ValueError, match=r"epoch must be in \[0, epochs\)"):
        loss(logits, target, epoch=5, epochs=5)


def test_tks_loss_says_once_when_its_weight_stays_zero():
    logits, target = torch.randn(2, 3, 4), torch.tensor([0, 1, 2])
    loss = TKSLoss()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss(logits, target, epoch=0, epochs=1)
        loss(logits, target, epoch=0, epochs=1)
        loss(logits, target, epoch=0, epochs=4)  # the ramp rises: nothing to say
    messages = [str(w.message) for w in caught if issubclass(w.category, TKSWarning)]
    assert messages == [
        "the TKS term weighs 0 in every epoch of this 1-epoch run (the linear ramp alpha * epoch / 1 is 0 at epoch "
        "0): it trains plain cross-entropy; use more epochs, or schedule 'constant'"
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TKSLoss(alpha=0.0)(logits, target, epoch=2, epochs=4)
    assert "alpha is 0" in str(caught[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TKSLoss(schedule="constant")(logits, target, epoch=0, epochs=1)
    assert not caught


def test_strong_weak_loss_is_its_objective():
    from tks.config import StrongWeakOptions
    from tks.losses import strong_weak_objective

    logits, target = torch.randn(4, 6, 5), torch.randint(0, 5, (6,))
    options = StrongWeakOptions(direction="strong2weak")
    torch.testing.assert_close(
        StrongWeakLoss(direction="strong2weak")(logits, target), strong_weak_objective(logits, target, options).total
    )


def test_batch_first_logits_get_a_transpose_hint():
    logits, target = torch.randn(8, 4, 10), torch.randint(0, 10, (8,))  # [B, T, K] with B=8, T=4
    with pytest.raises(ValueError, match=r"look batch-first \[B, T, K\]: tks is time-major, pass logits.transpose"):
        TKSLoss()(logits, target)
    torch.testing.assert_close(TKSLoss()(logits.transpose(0, 1), target), TKSLoss()(logits.transpose(0, 1), target))


# ------------------------------------------------------------------------------------------------- configs


def test_the_sew_options_of_earlier_configs_move_to_model_options(tmp_path):
    stored = {"model": {"name": "sew_resnet19", "connect": "AND", "stem": None}}
    assert upgrade_stored(stored)["model"] == {"name": "sew_resnet19", "options": {"connect": "AND"}}
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  name: sew_resnet19\n  connect: AND\n")
    assert load_config(path, stored=True).model.options == {"connect": "AND"}
    with pytest.raises(Exception, match=r"unknown config key 'model.connect' \(it is now 'model.options.connect'\)"):
        load_config(path)
    assert load_config(None, ["model.options.connect=AND"]).model.options == {"connect": "AND"}


@pytest.mark.parametrize(
    ("kind", "x", "message"),
    [
        ("static", torch.zeros(8, 8), r"x has shape \[8, 8\], its registration says \[C, H, W\] = \[1, 8, 8\]"),
        (
            "events",
            torch.zeros(1, 1, 8, 8),
            r"x has shape \[1, 1, 8, 8\], its registration says frames \[T, C, H, W\] = \[2 or more, 1, 8, 8\]",
        ),
    ],
)
def test_items_unlike_the_registration_are_one_line(kind, x, message, registries, tmp_path):
    register_dataset("odd", num_classes=2, in_channels=1, input_size=(8, 8), kind=kind)(
        lambda split, root: TensorDataset(x.unsqueeze(0).repeat(4, *[1] * x.dim()), torch.tensor([0, 1, 0, 1]))
    )
    with pytest.raises(tks.data.DatasetError, match=rf"dataset 'odd' \(train split\): {message}"):
        small_run(tmp_path, "data.name=odd")
