"""Training system: resume bit for bit after SIGKILL, NaN guard, accumulation, best checkpoint, 2-process DDP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

import tks
from tks.build import build_optimizer, encoder
from tks.checkpoint import load_checkpoint, save_checkpoint
from tks.cli import main
from tks.config import LossConfig, OptimConfig, load_config
from tks.data import to_time_major
from tks.distributed import Dist
from tks.engine import EvalSets, NonFiniteGuard, NonFiniteLossError, Training, fit, train_one_epoch
from tks.experiment import train
from tks.hooks import AppendLog, SaveCheckpoint
from tks.losses import Criterion, LossOutput
from tks.provenance import git_state
from tks.snn import PerStep

TKS = [str(Path(sys.executable).with_name("tks"))]
RESUME_SETTINGS = [
    "--set",
    "optim.epochs=4",
    "--set",
    "run.deterministic=true",
    "--set",
    "run.progress=false",
    "--set",
    "data.num_steps=2",
]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt").model


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


# `tks train` with one addition: after optimizer step PAUSE_AT it creates MARKER and sleeps, so the test can SIGKILL it
# at exactly that point of training, however fast or slow the machine. torch's global optimizer-step hook reaches the
# training loop's optimizer without any hook in tks itself.
PAUSING_TRAIN = """
import sys, time
from pathlib import Path
from torch.optim.optimizer import register_optimizer_step_post_hook

from tks.cli import main

pause_at, marker, steps = int(sys.argv[1]), Path(sys.argv[2]), []

def pause(optimizer, args, kwargs):
    steps.append(1)
    if len(steps) == pause_at:
        marker.touch()
        time.sleep(3600)

register_optimizer_step_post_hook(pause)
sys.exit(main(["train", *sys.argv[3:]]))
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run_bit_for_bit(tmp_path):
    straight, killed, marker = tmp_path / "straight", tmp_path / "killed", tmp_path / "paused"
    subprocess.run(
        [*TKS, "train", *RESUME_SETTINGS, "--set", f"run.out_dir={straight}"], check=True, capture_output=True
    )
    first = json.loads((only_run(straight) / "log.jsonl").read_text().splitlines()[0])
    batch_size = load_config(only_run(straight) / "config.yaml").data.batch_size
    steps_per_epoch = -(-first["train"]["samples"] // batch_size)
    pause_at = steps_per_epoch + steps_per_epoch // 2  # the middle of the second epoch
    argv = [sys.executable, "-c", PAUSING_TRAIN, str(pause_at), str(marker), *RESUME_SETTINGS]
    with (tmp_path / "stderr").open("w") as stderr:  # the child keeps its own copy of the file
        proc = subprocess.Popen([*argv, "--set", f"run.out_dir={killed}"], stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"never reached optimizer step {pause_at}: {(tmp_path / 'stderr').read_text()}"
    assert proc.poll() is None  # it sleeps in the hook until killed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = only_run(killed) / "log.jsonl"
    assert load_checkpoint(log.parent / "checkpoint.pt").epoch == 1  # killed in epoch 2: epoch 1 is saved
    assert [json.loads(line)["epoch"] for line in log.read_text().splitlines()] == [1]
    assert main(["train", "--resume", str(log.parent)]) == 0
    assert load_checkpoint(log.parent / "checkpoint.pt").epoch == 4
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert main(["train", "--resume", str(log.parent)]) == 0  # a finished run: nothing left, metrics reported
    assert len(log.read_text().splitlines()) == 4
    ours, reference = final_weights(log.parent), final_weights(only_run(straight))
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in ours), "resumed weights differ from the uninterrupted run"


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and err.count("\n") == 1
    assert main(["train", "configs/digits.yaml", "--resume", str(tmp_path)]) == 2
    assert "drop CONFIG, --set, --plugin" in capsys.readouterr().err


@dataclass(frozen=True)
class NaNAt:
    """A criterion that returns NaN at one (epoch, step)."""

    epoch: int
    step: int
    calls: list

    def tks_weight(self, epoch, epochs):
        return 0.0

    def __call__(self, logits, target, *, epoch, epochs):
        self.calls.append(epoch)
        step = self.calls.count(epoch) - 1
        loss = nn.functional.cross_entropy(logits.mean(0), target)
        if (epoch, step) == (self.epoch, self.step):
            loss = loss * float("nan")
        return LossOutput(loss, {"ce": loss})


def tiny_problem():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 4, 4)
    y = (x.mean((1, 2, 3)) > 0).long()
    model = PerStep(nn.Flatten(), nn.Linear(16, 2))
    return model, list(zip(x.split(16), y.split(16), strict=True))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    model, batches = tiny_problem()
    cfg = OptimConfig(lr=1e-2, epochs=3, warmup_epochs=0)
    with pytest.raises(NonFiniteLossError, match="became nan at epoch 2, step 3"):
        fit(
            Training(
                model,
                NaNAt(1, 2, []),
                build_optimizer(model, cfg),
                cfg,
                encode=partial(to_time_major, kind="static", num_steps=2),
                device=torch.device("cpu"),
            ),
            batches,
            EvalSets(batches),
            hooks=[SaveCheckpoint(tmp_path, {}), AppendLog(tmp_path)],
        )
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved.epoch == 1 and all(torch.isfinite(v).all() for v in saved.model.values())
    assert torch.isfinite(model[1].weight).all()  # the NaN never reached the weights


def test_gradient_accumulation_equals_the_larger_batch():
    model_a, batches = tiny_problem()
    model_b, _ = tiny_problem()
    model_b.load_state_dict(model_a.state_dict())
    cfg = OptimConfig(lr=1e-2, weight_decay=0.0, epochs=1, warmup_epochs=0)

    def training(model: nn.Module, schedule: OptimConfig) -> Training:
        encode = partial(to_time_major, kind="static", num_steps=2)
        criterion = Criterion(LossConfig(name="ce"))
        return Training(model, criterion, build_optimizer(model, cfg), schedule, encode, torch.device("cpu"))

    small = batches[:2]  # two batches of 16, accumulated
    large = [(torch.cat([b[0] for b in small]), torch.cat([b[1] for b in small]))]  # one batch of 32
    train_one_epoch(training(model_a, replace(cfg, accumulate=2)), small, epoch=0)
    train_one_epoch(training(model_b, cfg), large, epoch=0)
    torch.testing.assert_close(model_a[1].weight, model_b[1].weight, rtol=1e-5, atol=1e-7)


def test_best_checkpoint_follows_test_top1(tmp_path):
    assert (
        main(
            [
                "train",
                "--set",
                "optim.epochs=3",
                "--set",
                "data.num_steps=1",
                "--set",
                "run.progress=false",
                "--set",
                f"run.out_dir={tmp_path}",
            ]
        )
        == 0
    )
    run_dir = only_run(tmp_path)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    best_epoch = max(range(3), key=lambda i: (log[i]["test"]["top1"], -i)) + 1
    assert load_checkpoint(run_dir / "best.pt").epoch == best_epoch
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == best_epoch and metrics["best_top1"] == log[best_epoch - 1]["test"]["top1"]


DDP_SCRIPT = """
import sys, torch
from tks.config import load_config
from tks.experiment import train
out = sys.argv[1]
cfg = load_config(None, ["optim.epochs=2", "data.num_steps=2", "run.progress=false", "run.device=cpu",
                         f"run.out_dir={out}", "data.batch_size=32"])
result = train(cfg)
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else int(__import__("os").environ["RANK"])
torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
"""


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0 if "running" not in k and "num_batches" not in k)
    run_dir = only_run(tmp_path)  # only rank 0 wrote a run folder
    assert load_checkpoint(run_dir / "checkpoint.pt").epoch == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["num_samples"] == 360  # every test sample evaluated once
    log = json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])
    assert log["train"]["samples"] == 2 * (718 // 32) * 32  # each rank: its half of 1,437, in full batches


def test_channels_last_and_accumulation_options_train(tmp_path):
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
                "run.channels_last=true",
                "--set",
                "optim.warmup_epochs=0",
                "--set",
                "optim.accumulate=2",
                "--set",
                "data.batch_size=32",
                "--set",
                f"run.out_dir={tmp_path}",
            ]
        )
        == 0
    )
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["top1"] > 0.3  # it learned something in one epoch


def test_fp16_needs_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    assert main(["train", "--set", "run.precision=fp16", "--set", "run.device=cpu"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err


def test_validation_split_selects_best_and_records_provenance_across_resume(tmp_path, capsys):
    settings = ["--set", "data.val_size=300", "--set", "data.train_eval_size=200", "--set", f"run.out_dir={tmp_path}"]
    assert main(["train", "--set", "optim.epochs=2", "--set", "data.num_steps=2", *settings]) == 0
    out = capsys.readouterr().out
    assert "val " in out and "train-eval " in out and "(best.pt, selected on val)" in out
    run_dir = only_run(tmp_path)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {"val", "test", "train_eval", "process_cpu_s"} <= set(log[0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = max(range(2), key=lambda i: (log[i]["val"]["top1"], -i)) + 1
    assert metrics["selected_on"] == "val" and metrics["best_epoch"] == best
    assert metrics["selected"]["epoch"] == best and metrics["selected"]["top1"] == log[best - 1]["test"]["top1"]
    assert metrics["val"]["num_samples"] == 300 and metrics["train_eval"]["num_samples"] == 200
    assert metrics["num_samples"] == 360 and log[0]["train"]["samples"] == (1437 - 300) // 64 * 64

    (session,) = metrics["provenance"]["sessions"]
    assert session == json.loads((run_dir / "provenance.json").read_text())["sessions"][0]
    assert session["tks_version"] == tks.__version__ and session["torch_version"] == torch.__version__
    assert session["torch_threads"] == torch.get_num_threads() and session["device"] == "cpu"
    assert session["cpu_model"] and session["world_size"] == 1 and session["finished"] is True
    assert (session["first_epoch"], session["last_epoch"]) == (0, 2) and session["wall_s"] > 0
    commit, dirty = git_state(Path(tks.__file__))  # this source tree, whatever its state
    assert (session["git_commit"], session["git_dirty"]) == (commit, dirty)
    assert socket.gethostname() not in (run_dir / "provenance.json").read_text()

    # one more epoch asked of the stored config, so that --resume has work to do: a second session
    record = load_checkpoint(run_dir / "checkpoint.pt")
    record.config["optim"]["epochs"] = 3
    save_checkpoint(run_dir / "checkpoint.pt", record)
    config = run_dir / "config.yaml"  # the folder's config says so too: resume refuses a folder that disagrees
    config.write_text(config.read_text().replace("\n  epochs: 2\n", "\n  epochs: 3\n"))
    assert main(["train", "--resume", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    first, second = metrics["provenance"]["sessions"]
    assert (first["first_epoch"], first["last_epoch"]) == (0, 2)
    assert (second["first_epoch"], second["last_epoch"], second["finished"]) == (2, 3, True)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    best = max(range(3), key=lambda i: (log[i]["val"]["top1"], -i)) + 1
    assert metrics["best_epoch"] == best and metrics["selected"]["top1"] == log[best - 1]["test"]["top1"]
    assert load_checkpoint(run_dir / "best.pt").epoch == best


def test_the_nan_guard_skips_the_update_on_the_device():
    weight = nn.Parameter(torch.ones(3))
    optimizer = build_optimizer(nn.ParameterList([weight]), OptimConfig(lr=0.1, weight_decay=0.0))
    assert optimizer.defaults["fused"]
    guard = NonFiniteGuard(optimizer, torch.device("cpu"), Dist.single())
    for step, scale in enumerate([float("nan"), 1.0]):
        loss = (weight * scale).sum()
        guard.observe(loss, epoch=0, step=step)
        loss.backward()
        guard.before_step([weight])
        optimizer.step()
        guard.after_step()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:  # the non-finite loss changed neither the weights nor the optimizer's step count
            assert torch.equal(weight.detach(), torch.ones(3)) and optimizer.state[weight]["step"].item() == 0
    assert (weight.detach() < 1).all() and optimizer.state[weight]["step"].item() == 1  # the finite one did
    with pytest.raises(NonFiniteLossError, match="became nan at epoch 1, step 1"):
        guard.check(0, 1, force=True)


def test_an_epoch_reads_the_device_only_every_check_period(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(240, 1, 4, 4)
    y = (x.mean((1, 2, 3)) > 0).long()
    model = PerStep(nn.Flatten(), nn.Linear(16, 2))
    batches = list(zip(x.split(2), y.split(2), strict=True))  # 120 steps
    cfg = OptimConfig(lr=1e-2, epochs=1, warmup_epochs=0)
    reads = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or real_item(self))
    encode = partial(to_time_major, kind="static", num_steps=2)
    training = Training(model, NaNAt(-1, -1, []), build_optimizer(model, cfg), cfg, encode, torch.device("cpu"))
    train_one_epoch(training, batches, epoch=0)
    assert len(reads) <= 10  # checks at steps 50, 100 and the end, plus the epoch's statistics; was >= 120


def test_channels_last_encoder_stores_static_images_channels_last_with_the_same_values():
    images = torch.rand(3, 2, 5, 5)
    plain = encoder("static", 4)(images)
    steps = encoder("static", 4, channels_last=True)(images)
    assert torch.equal(plain, steps) and steps.shape == (4, 3, 2, 5, 5)
    assert steps[0].is_contiguous(memory_format=torch.channels_last) and not plain[0].is_contiguous(
        memory_format=torch.channels_last
    )
    frames = torch.rand(3, 4, 2, 5, 5)  # events [B, T, 2, H, W] keep their layout
    assert torch.equal(encoder("events", 4, channels_last=True)(frames), frames.transpose(0, 1))


def test_a_deterministic_run_leaves_the_callers_setting_as_it_found_it(tmp_path):
    settings = ["run.deterministic=true", "optim.epochs=1", "data.train_limit=64", "data.test_limit=32"]
    cfg = load_config(None, [*settings, "data.num_steps=1", "run.progress=false", f"run.out_dir={tmp_path}"])
    assert not torch.are_deterministic_algorithms_enabled()
    train(cfg)
    assert not torch.are_deterministic_algorithms_enabled()  # was left switched on for the rest of the process
