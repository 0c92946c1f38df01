"""Locks between processes (tks.locks); run folders in use are locked, and two runs never share a folder."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from concurrency import FORK, run_at_once
from run_folders import fake_run

from tks import runfiles
from tks.cli import main
from tks.compare import compare_runs
from tks.config import load_config
from tks.experiment import train
from tks.locks import LockHeldError, acquire, is_held, partial_path, pid_alive, publish, remove_dead_partials

FAST = ["optim.epochs=1", "data.num_steps=1", "run.progress=false", "run.device=cpu", "data.train_limit=256"]

# Holds a run folder's lock as a tks process does (its pid in <run>/.lock, an exclusive flock on that file) until
# its stdin closes; plain fcntl, so that it starts at once.
HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def finished_run(tmp_path):
    cfg = load_config(None, [*FAST, f"run.out_dir={tmp_path}", "run.name=locked"])
    return train(cfg).run_dir


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}


def test_resume_of_a_folder_in_use_refuses_and_a_killed_holder_is_taken_over(finished_run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(finished_run / ".lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        before = snapshot(finished_run)
        capsys.readouterr()
        assert main(["train", "--resume", str(finished_run)]) == 2
        captured = capsys.readouterr()
        assert captured.err == f"tks: error: run folder {finished_run} is in use by process {holder.pid}\n"
        assert captured.out == "" and snapshot(finished_run) == before  # nothing read for writing, nothing changed
    finally:
        holder.kill()
        holder.wait()
    assert (finished_run / ".lock").read_text() == f"{holder.pid}\n"  # what the killed process left
    assert main(["train", "--resume", str(finished_run)]) == 0  # its lock died with it: taken over silently
    assert "error" not in capsys.readouterr().err
    assert not (finished_run / ".lock").exists()  # removed when the session ended


def test_is_held_tells_a_live_lock_from_a_stale_file_without_writing(tmp_path):
    lock = tmp_path / ".lock"
    assert not is_held(lock) and not lock.exists()  # no file: free, and none is made
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        before = lock.stat()
        assert is_held(lock)
    finally:
        holder.kill()
        holder.wait()
    assert not is_held(lock)  # the file a killed holder left
    after = lock.stat()
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_a_lock_file_naming_a_dead_process_is_taken_over(finished_run):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (finished_run / ".lock").write_text(gone.stdout)
    assert main(["train", "--resume", str(finished_run)]) == 0
    assert not (finished_run / ".lock").exists()


def test_a_run_folder_that_cannot_be_locked_is_one_line(finished_run, capsys):
    (finished_run / ".lock").mkdir()  # as unwritable as a read-only folder, even for root
    before = snapshot(finished_run)
    assert main(["train", "--resume", str(finished_run)]) == 2
    err = capsys.readouterr().err
    assert err == f"tks: error: run folder {finished_run} cannot be locked: Is a directory (.lock)\n"
    assert snapshot(finished_run) == before


def test_a_training_session_holds_its_run_folder_and_frees_it(tmp_path):
    seen = []

    def try_to_resume(record):
        (run_dir,) = tmp_path.iterdir()
        seen.append((run_dir / ".lock").read_text())
        holder = subprocess.run(
            [sys.executable, "-c", HOLDER.replace("LOCK_EX", "LOCK_EX | fcntl.LOCK_NB"), str(run_dir / ".lock")],
            capture_output=True,
            text=True,
        )
        seen.append("BlockingIOError" in holder.stderr)  # another process cannot take it

    result = train(load_config(None, [*FAST, f"run.out_dir={tmp_path}"]), on_epoch_end=try_to_resume)
    assert seen == [f"{os.getpid()}\n", True]
    assert sorted(p.name for p in result.run_dir.iterdir() if p.name.startswith(".")) == []


def test_readers_of_run_folders_ignore_a_lock_file(tmp_path):
    plain = compare_runs([fake_run(tmp_path / "a", "run")])
    locked = fake_run(tmp_path / "b", "run")
    (locked / ".lock").write_text("12345\n")  # as a killed session leaves it
    assert compare_runs([locked]) == plain and compare_runs([tmp_path / "b"]) == plain


def make_run_dir_in_step(out, barrier):
    """``make_run_dir(out, "race")`` in a forked process, at a fixed second, creating the folder in step with
    the other process: the moment where a check-then-create would let both pick the same name."""
    real_mkdir, first = Path.mkdir, [True]

    def mkdir(self, *args, **kwargs):
        if self.name.startswith("race-") and first[0]:
            first[0] = False
            barrier.wait(30)
        return real_mkdir(self, *args, **kwargs)

    Path.mkdir = mkdir
    runfiles.time.strftime = lambda fmt, *args: "20250101-000000"
    return runfiles.make_run_dir(out, "race").name


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path):
    barrier = FORK.Barrier(2)
    names = run_at_once(make_run_dir_in_step, [(tmp_path / "runs", barrier)] * 2)
    assert sorted(names) == ["race-20250101-000000", "race-20250101-000000-1"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(names)


def test_a_lock_is_exclusive_names_its_holder_and_is_removed_on_release(tmp_path):
    path = tmp_path / "x.lock"
    with acquire(path, wait=False):
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockHeldError, match=f"is locked by process {os.getpid()}") as held:
            acquire(path, wait=False)  # another open file: excluded even within one process
        assert held.value.pid == os.getpid()
    assert not path.exists()
    acquire(path, wait=False).release()


def test_a_waiter_takes_the_lock_when_the_holder_lets_go(tmp_path):
    path, told, got = tmp_path / "x.lock", [], []
    first = acquire(path, wait=False)

    def wait_for_it():
        with acquire(path, wait=True, on_wait=told.append) as lock:
            got.append((path.read_text(), path.exists(), lock.path))

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    deadline = time.time() + 10
    while not told and time.time() < deadline:
        time.sleep(0.01)
    assert told == [os.getpid()] and not got  # told once who it waits for, and waiting
    first.release()  # removes the file the waiter has open: it must lock a new one, not the removed one
    waiter.join(10)
    assert got == [(f"{os.getpid()}\n", True, path)] and not path.exists()


def hold_then_die_leaving_a_child(path, child_pid_file):
    acquire(path, wait=False)
    worker = FORK.Process(target=time.sleep, args=(60,))  # e.g. a DataLoader worker, forked while locked
    worker.start()
    child_pid_file.write_text(str(worker.pid))
    os._exit(0)  # ends without releasing, as a killed trainer does


def test_a_lock_dies_with_its_process_even_while_its_forked_children_live(tmp_path):
    path, child_pid_file = tmp_path / "x.lock", tmp_path / "child"
    owner = FORK.Process(target=hold_then_die_leaving_a_child, args=(path, child_pid_file))
    owner.start()
    deadline = time.time() + 30
    while owner.exitcode is None and time.time() < deadline:  # not join(): the child holds its sentinel pipe open
        time.sleep(0.02)
    child = int(child_pid_file.read_text())
    try:
        assert pid_alive(child) and path.read_text() == f"{owner.pid}\n"
        acquire(path, wait=False).release()  # free: the stale file is taken over
    finally:
        os.kill(child, 9)


def test_publish_keeps_a_valid_copy_and_replaces_an_invalid_one(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    (target / "old").write_text("")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftovers = [tmp_path / f"cache.partial-{dead.stdout.strip()}", tmp_path / f"cache.old-{dead.stdout.strip()}"]
    for leftover in leftovers:
        leftover.mkdir()
    live = partial_path(target)
    live.mkdir()
    remove_dead_partials(target)
    assert not any(p.exists() for p in leftovers) and live.is_dir()  # a live process's build is left alone
    (live / "new").write_text("")
    publish(live, target, lambda f: (f / "new").exists())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] and (target / "new").exists()
    other = tmp_path / "other"
    other.mkdir()
    publish(other, target, lambda f: (f / "new").exists())  # valid already: kept, ours left to the caller
    assert (target / "new").exists() and other.is_dir()
