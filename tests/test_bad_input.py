"""Bad input gets one line up front (issue 13): the config loader, folders, sizes, devices, checkpoints, outputs.

Every case here printed a traceback (or trained on silently) before the check that now refuses it.
"""

import json
import os
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tks.build import resolve_device
from tks.checkpoint import CheckpointError, load_checkpoint
from tks.cli import main
from tks.config import ConfigError, load_config
from tks.errors import DeviceError, TKSWarning

FAST = ["--set", "optim.epochs=1", "--set", "data.num_steps=1", "--set", "run.progress=false"]


def one_line_error(argv, capsys):
    """Run the CLI; it must fail with status 2 and exactly one line on stderr, which is returned."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tks: error: ") and "\n" not in err, err
    return err


def write(tmp_path, data, name="bad.yaml"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ---- the config loader


def test_binary_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"is not a UTF-8 text file \(byte 2 is 0xff\)"):
        load_config(write(tmp_path, b"\x00\x01\xff\xfe"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("loss:\n  alpha: 0.3\nloss:\n  temperature: 2\n", r"key 'loss' appears twice \(lines 1 and 3\)"),
        ("loss:\n  alpha: 0.3\n  alpha: 0.5\n", r"key 'alpha' appears twice \(lines 2 and 3\)"),
        ("model:\n  neuron: {tau: 2, tau: 3}\n", r"key 'tau' appears twice"),
    ],
)
def test_duplicate_keys_are_an_error_not_a_silent_last_wins(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"override 'loss=\{alpha: 1, alpha: 2\}': key 'alpha' appears twice"):
        load_config(None, ["loss={alpha: 1, alpha: 2}"])


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_config_warns_that_defaults_are_used(tmp_path, text):
    with pytest.warns(TKSWarning, match="is empty: the defaults are used"):
        cfg = load_config(write(tmp_path, text))
    assert cfg == load_config(None)


@pytest.mark.parametrize("key", ["optim.lr", "optim.warmup_lr", "model.neuron.tau", "loss.tks.temperature"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan"])
def test_non_finite_numbers_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"{key} must be a finite number"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("run.seed=-1", r"run.seed must be in \[0, 2\^32\), got -1"),
        ("run.seed=4294967296", r"run.seed must be in \[0, 2\^32\)"),
        ("run.device=cuda:x", "run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("run.device=tpu", "run.device must be"),
        ("run.name=" + "a" * 201, "run.name is 201 bytes long; at most 200"),
        ("run.name=a\0b", "run.name must be a non-empty name without '/' or NUL"),
    ],
)
def test_run_settings_out_of_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    assert load_config(None, ["run.seed=4294967295", "run.name=" + "a" * 200]).run.seed == 2**32 - 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzzed_config_files_give_a_config_or_one_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TKSWarning)
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc) and "Traceback" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["loss.tks.alpha", "optim.lr", "run.seed", "data.num_steps", "loss.name", "run.device", "loss"]),
    st.text(max_size=30),
)
def test_fuzzed_overrides_give_a_config_or_one_config_error(key, value):
    try:
        load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        assert str(exc)


# ---- devices


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line(device, capsys):
    with pytest.raises(DeviceError, match=f"device '{device}': no CUDA GPU is available here"):
        resolve_device(device)
    one_line_error(["train", *FAST, "--set", f"run.device={device}"], capsys)


def test_unknown_device_strings(capsys):
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="device 'meta' is not supported"):
        resolve_device("meta")
    assert resolve_device("cpu") == torch.device("cpu")


# ---- folders, sizes and memory: refused before any data is loaded or run folder made


def test_out_dir_that_is_a_file_or_below_one(tmp_path, capsys):
    a_file = write(tmp_path, "x", "file.txt")
    err = one_line_error(["train", *FAST, "--set", f"run.out_dir={a_file}"], capsys)
    assert f"run.out_dir {a_file} is a file" in err
    err = one_line_error(["train", *FAST, "--set", f"run.out_dir={a_file}/runs/x"], capsys)
    assert f"lies below the file {a_file}" in err


def test_read_only_out_dir(tmp_path, capsys, monkeypatch):
    # os.access is what decides; as root, permission bits alone would not stop a write, so fake a read-only folder
    real_access = os.access
    monkeypatch.setattr(
        "tks.paths.os.access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode)
    )
    err = one_line_error(["train", *FAST, "--set", f"run.out_dir={tmp_path}/runs"], capsys)
    assert f"{tmp_path} is read-only" in err
    assert not (tmp_path / "runs").exists()


def test_frames_cache_that_is_a_file(tmp_path, capsys):
    a_file = write(tmp_path, "x", "file.txt")
    argv = ["train", "configs/digits_dvs.yaml", *FAST, "--set", f"data.frames_cache={a_file}/frames"]
    argv += ["--set", f"run.out_dir={tmp_path / 'runs'}"]
    err = one_line_error(argv, capsys)
    assert f"data.frames_cache {a_file}/frames lies below the file" in err
    assert not (tmp_path / "runs").exists()


def test_batch_larger_than_the_training_set(tmp_path, capsys):
    err = one_line_error(["train", *FAST, "--set", "data.batch_size=5000", "--set", f"run.out_dir={tmp_path}"], capsys)
    assert "data.batch_size 5000 is larger than the 1437 training samples" in err
    assert not list(tmp_path.iterdir())


def test_model_too_large_for_the_input(tmp_path, capsys):
    err = one_line_error(["train", *FAST, "--set", "model.name=vgg_snn", "--set", f"run.out_dir={tmp_path}"], capsys)
    assert "model 'vgg_snn' needs inputs of at least 16x16 pixels; dataset 'digits' gives 8x8" in err
    assert not list(tmp_path.iterdir())


def test_activations_that_cannot_fit_are_refused_with_the_figure(tmp_path, capsys):
    argv = ["train", *FAST, "--set", "data.num_steps=10000000", "--set", f"run.out_dir={tmp_path}"]
    err = one_line_error(argv, capsys)
    assert "T=10000000 with data.batch_size=64 needs at least" in err and "GiB of activations, but cpu has" in err
    assert not list(tmp_path.iterdir())


# ---- tks eval, export, compare / plot / report, models, checkpoints


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", *FAST, "--set", "data.num_steps=2", "--set", f"run.out_dir={out}"]) == 0
    (folder,) = out.iterdir()
    return folder


def test_eval_steps_are_deduplicated_and_sorted(run_dir, capsys):
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--steps", "2", "2", "1"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert rows == ["1", "2"]


def test_eval_refuses_a_t_that_cannot_fit_before_evaluating_any(run_dir, capsys):
    before = json.loads((run_dir / "metrics.json").read_text())
    err = one_line_error(["eval", str(run_dir / "checkpoint.pt"), "--steps", "3", "100000000"], capsys)
    assert "T=100000000 with data.eval_batch_size=256 needs at least" in err
    assert "3" not in json.loads((run_dir / "metrics.json").read_text()).get("eval", {}).get("checkpoint.pt", {}).get(
        "steps", {}
    )
    assert json.loads((run_dir / "metrics.json").read_text()) == before


def test_eval_out_of_memory_keeps_the_t_values_already_evaluated(run_dir, capsys, monkeypatch):
    import tks.evaluation

    real_predict = tks.evaluation.predict

    def predict(model, batches, *, encode, device, **kwargs):
        if encode.keywords["num_steps"] == 4:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return real_predict(model, batches, encode=encode, device=device, **kwargs)

    monkeypatch.setattr(tks.evaluation, "predict", predict)
    err = one_line_error(["eval", str(run_dir / "checkpoint.pt"), "--steps", "1", "3", "4"], capsys)
    assert "out of memory evaluating T=4" in err and "the results of T=1, 3 are in metrics.json" in err
    assert {"1", "3"} <= set(json.loads((run_dir / "metrics.json").read_text())["eval"]["checkpoint.pt"]["steps"])


@pytest.mark.parametrize("dt", ["nan", "inf", "0", "-1e-4"])
def test_export_dt_must_be_finite_and_positive(run_dir, dt, capsys):
    err = one_line_error(["export", str(run_dir / "checkpoint.pt"), f"--dt={dt}"], capsys)
    assert "dt must be a finite number of seconds > 0, got" in err


def test_export_out_that_is_a_folder_and_in_a_missing_folder(run_dir, tmp_path, capsys):
    err = one_line_error(["export", str(run_dir / "checkpoint.pt"), "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path} is a folder; give a file name" in err
    target = tmp_path / "new" / "model.nir"
    assert main(["export", str(run_dir / "checkpoint.pt"), "--out", str(target)]) == 0
    assert target.is_file()


@pytest.mark.parametrize("verb", ["compare", "plot"])
def test_folder_outputs_that_are_files(run_dir, tmp_path, verb, capsys):
    a_file = write(tmp_path, "x", "file.txt")
    err = one_line_error([verb, str(run_dir), "--out", str(a_file)], capsys)
    assert f"--out {a_file} is a file; it must be a folder" in err


def test_report_out_that_is_a_folder(run_dir, tmp_path, capsys):
    err = one_line_error(["report", str(run_dir), "--out", str(tmp_path)], capsys)
    assert f"--out {tmp_path} is a folder; give a file name" in err


def test_run_folder_with_a_binary_config(run_dir, tmp_path, capsys):
    import shutil

    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "config.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    err = one_line_error(["compare", str(copy)], capsys)
    assert "config.yaml is not a valid tks config: not a UTF-8 text file" in err


def test_models_with_no_classes(capsys):
    err = one_line_error(["models", "--num-classes", "0"], capsys)
    assert "a model needs num_classes >= 1 and in_channels >= 1, got 0" in err


class NotPlainData:
    pass


def test_checkpoints_that_are_not_ours(tmp_path):
    torch.save({"model": [1, 2], "config": {}}, tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="its 'model' entry is a list, not a mapping"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"model": NotPlainData(), "config": {}}, tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data; not loaded") as exc:
        load_checkpoint(tmp_path / "object.pt")
    assert "weights_only" not in str(exc.value) and "succeed" not in str(exc.value)
