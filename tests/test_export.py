import nir
import pytest
import torch
from torch import nn

from tks.checkpoint import CheckpointRecord, save_checkpoint
from tks.cli import main
from tks.config import Config, DataConfig, ModelConfig, to_dict
from tks.export import ExportError, export_checkpoint, run_nir, to_nir
from tks.models import create_model
from tks.snn import LIF, PerStep


def trained_like(model):
    """Give BatchNorm non-trivial statistics (as after training), so that folding is really exercised."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 8, *model.example_shape) * 3)
    return model.eval()


@pytest.mark.parametrize(
    ("name", "shape"), [("spiking_cnn", (1, 8, 8)), ("vgg_snn", (2, 48, 48)), ("resnet19", (3, 8, 8))]
)
def test_nir_round_trip_runs_like_the_model(name, shape, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=shape[0])
    model.example_shape = shape
    trained_like(model)
    path = tmp_path / "model.nir"
    nir.write(str(path), to_nir(model, shape))
    graph = nir.read(str(path))
    x = torch.rand(3, 2, *shape) * 3
    with torch.no_grad():
        expected = model(x)
    got = run_nir(graph, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "shape"), [("spiking_cnn", (1, 8, 8)), ("resnet19", (3, 8, 8))])
def test_avg_pooling_runs_like_the_model_too(name, shape, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_channels=shape[0])
    model.example_shape = shape
    trained_like(model)
    path = tmp_path / "model.nir"
    nir.write(str(path), to_nir(model, shape, pooling="avg"))
    graph = nir.read(str(path))
    kinds = {type(node).__name__ for node in graph.nodes.values()}
    assert "AvgPool2d" in kinds and "SumPool2d" not in kinds and graph.metadata["pooling"] == "avg"
    x = torch.rand(3, 2, *shape) * 3
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(run_nir(graph, x), expected, rtol=1e-4, atol=1e-4)


def test_flatten_names_its_dimensions_from_the_end_so_a_batch_in_front_changes_nothing():
    model = create_model("spiking_cnn", num_classes=10, in_channels=1).eval()
    graph = to_nir(model, (1, 8, 8))
    (flatten,) = [node for node in graph.nodes.values() if isinstance(node, nir.Flatten)]
    assert (flatten.start_dim, flatten.end_dim) == (-3, -1)
    assert flatten.input_type["input"].tolist() == [128, 2, 2] and flatten.output_type["output"].tolist() == [512]
    sample = torch.rand(128, 2, 2)
    as_torch = nn.Flatten(flatten.start_dim, flatten.end_dim)  # what importers build from the node
    assert as_torch(sample).shape == (512,) and as_torch(sample.expand(16, 128, 2, 2)).shape == (16, 512)
    graph.check_types()  # NIR's own type rules agree: [128, 2, 2] -> [512] -> Affine [10, 512]


def test_graphs_of_earlier_exports_still_run():
    """Earlier exports wrote Flatten(start_dim=0) (batch-free, counted from the front): run_nir reads both."""
    model = create_model("spiking_cnn", num_classes=10, in_channels=1).eval()
    graph = to_nir(model, (1, 8, 8))
    x = torch.rand(2, 3, 1, 8, 8)
    expected = run_nir(graph, x)
    for node in graph.nodes.values():
        if isinstance(node, nir.Flatten):
            node.start_dim = 0
    assert torch.equal(run_nir(graph, x), expected)


def test_sum_pooling_needs_a_weight_layer_after_it():
    model = nn.Sequential(PerStep(nn.AvgPool2d(2)), LIF())
    assert isinstance(to_nir(model, (4, 8, 8), pooling="avg").nodes["0_0"], nir.AvgPool2d)
    with pytest.raises(ExportError, match=r"layer '1' \(LIF\) follows sum pooling '0.0'.*export with pooling 'avg'"):
        to_nir(model, (4, 8, 8))
    with pytest.raises(ExportError, match="pooling must be one of avg, sum, got 'max'"):
        to_nir(model, (4, 8, 8), pooling="max")


def test_graph_structure_matches_the_model():
    model = create_model("spiking_cnn", num_classes=10, in_channels=1).eval()
    graph = to_nir(model, (1, 8, 8))
    kinds = [type(node).__name__ for node in graph.nodes.values()]
    # three conv-BN-LIF blocks (BN folded away), one average pool, the 4x4 -> 2x2 adaptive pool, flatten, head;
    # the pools are sums, so the conv after the first and the head after the second carry their 1/4
    assert kinds.count("Conv2d") == 3 and kinds.count("LIF") == 3 and "BatchNorm2d" not in kinds
    assert kinds.count("SumPool2d") == 2 and kinds.count("Flatten") == 1 and kinds.count("Affine") == 1
    lif = next(node for node in graph.nodes.values() if isinstance(node, nir.LIF))
    assert lif.tau.shape == (32, 8, 8) and float(lif.tau.flat[0]) == pytest.approx(2.0 * 1e-4)
    assert float(lif.v_threshold.flat[0]) == 0.5 and float(lif.v_reset.flat[0]) == 0.0
    head = graph.nodes["classifier_0"]
    assert torch.equal(torch.as_tensor(head.weight), model.classifier[0].weight.detach() / 4)
    assert torch.equal(torch.as_tensor(head.bias), model.classifier[0].bias.detach())
    avg, summed = (to_nir(model, (1, 8, 8), pooling=p).nodes["features_5_0"].weight for p in ("avg", "sum"))
    assert torch.equal(torch.as_tensor(summed), torch.as_tensor(avg) / 4)  # the conv after the first pool


def test_residual_sum_is_two_edges_into_the_neuron():
    graph = to_nir(create_model("resnet19", num_classes=10, in_channels=3).eval(), (3, 8, 8))
    into = {}
    for source, target in graph.edges:
        into.setdefault(target, []).append(source)
    assert len(into["features_2_sn2"]) == 2  # block output + BN-only shortcut (a diagonal 1x1 conv)
    (shortcut_key,) = [key for key in into["features_2_sn2"] if "shortcut" in key]
    shortcut = graph.nodes[shortcut_key]
    weight = torch.as_tensor(shortcut.weight)[:, :, 0, 0]
    assert isinstance(shortcut, nir.Conv2d) and torch.equal(weight, torch.diag(torch.diagonal(weight)))


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("sew_resnet19", {}, "layer 'features.2' is a SEW block"),
        ("vgg_snn", {"norm": "tebn"}, "is TEBN"),
        ("sew_resnet18", {"stem": "cifar"}, "is a SEW block"),
    ],
)
def test_what_nir_cannot_express_is_a_clear_error(name, options, message):
    model = create_model(name, num_classes=10, in_channels=3, **options).eval()
    with pytest.raises(ExportError, match=message):
        to_nir(model, (3, 32, 32))


def test_an_event_model_exports_at_the_frame_size_it_was_trained_with(tmp_path):
    """digits-dvs is recorded at 34x34 and framed to data.frame_size: the graph must take the frames."""
    cfg = Config(
        data=DataConfig(name="digits-dvs", num_steps=4, frame_size=16), model=ModelConfig(name="vgg_snn_small")
    )
    model = create_model("vgg_snn_small", num_classes=10, in_channels=2).eval()
    save_checkpoint(tmp_path / "checkpoint.pt", CheckpointRecord(model.state_dict(), to_dict(cfg)))
    graph = nir.read(str(export_checkpoint(tmp_path / "checkpoint.pt")))
    assert graph.nodes["input"].input_type["input"].tolist() == [2, 16, 16]
    x = torch.rand(2, 3, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(run_nir(graph, x), model(x), rtol=1e-4, atol=1e-4)


def test_export_command_writes_a_readable_file(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--set",
                "optim.epochs=1",
                "--set",
                "data.num_steps=2",
                "--set",
                "run.progress=false",
                "--set",
                f"run.out_dir={tmp_path}",
            ]
        )
        == 0
    )
    (run_dir,) = tmp_path.iterdir()
    assert main(["export", str(run_dir / "checkpoint.pt"), "--format", "nir"]) == 0
    graph = nir.read(str(run_dir / "model.nir"))
    assert graph.metadata["model"] == "spiking_cnn" and int(graph.metadata["num_steps"]) == 2
    assert "wrote" in capsys.readouterr().out
    assert [type(node).__name__ for node in graph.nodes.values()].count("SumPool2d") == 2
    out = tmp_path / "avg.nir"
    assert main(["export", str(run_dir / "checkpoint.pt"), "--pooling", "avg", "--out", str(out)]) == 0
    kinds = [type(node).__name__ for node in nir.read(str(out)).nodes.values()]
    assert kinds.count("AvgPool2d") == 2 and "SumPool2d" not in kinds


def test_the_graph_says_what_its_input_is_and_that_is_enough_to_feed_it(digits_runs):
    """Another toolchain with only the NIR file and the raw images gets the model's logits from the metadata."""
    import numpy as np

    from tks.checkpoint_model import load_model
    from tks.data import build_dataset
    from tks.data.digits import digit_arrays

    _, runs = digits_runs
    graph = nir.read(str(export_checkpoint(runs[1] / "checkpoint.pt")))
    meta = graph.metadata
    assert meta["input_kind"] == "static" and list(meta["input_shape"]) == [1, 8, 8] and float(meta["dt"]) == 1e-4
    assert [c.decode() if isinstance(c, bytes) else c for c in meta["class_names"]] == [str(d) for d in range(10)]
    assert (
        meta["encoding"].startswith("direct: the image, scaled to [0, 1] and normalised")
        and meta["dataset"] == "digits"
    )
    images, _, _, test = digit_arrays()  # raw 0..16 pixel counts, as a user would have them
    raw = torch.from_numpy(images[test[:16]] / 16.0).float().unsqueeze(1)  # scaled to [0, 1]
    mean = torch.tensor(np.asarray(meta["normalization_mean"]), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(np.asarray(meta["normalization_std"]), dtype=torch.float32).view(1, -1, 1, 1)
    x_seq = ((raw - mean) / std).unsqueeze(0).expand(int(meta["num_steps"]), *raw.shape)  # the direct encoding
    model = load_model(runs[1] / "checkpoint.pt").model
    tks_inputs = build_dataset("digits", "test")[0].tensors[0][:16]  # what tks itself feeds the model
    with torch.no_grad():
        expected = model(tks_inputs.unsqueeze(0).expand(int(meta["num_steps"]), *tks_inputs.shape))
        torch.testing.assert_close(run_nir(graph, x_seq), expected, rtol=1e-4, atol=1e-4)
