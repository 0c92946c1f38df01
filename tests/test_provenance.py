"""Provenance of a run: git state found or honestly unknown, never a failure; the CPU model; sessions kept."""

import json
import shutil
import subprocess

import pytest
import torch

from tks.provenance import PROVENANCE_FILE, SessionLog, cpu_model, git_state, read_sessions, session_record

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@needs_git
def test_git_state_of_a_checkout_clean_then_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    source = repo / "module.py"
    source.write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "module.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_state(source) == (head, False)
    source.write_text("x = 2\n")
    assert git_state(source) == (head, True)


@needs_git
def test_a_file_git_does_not_track_has_no_commit(tmp_path):
    repo = tmp_path / "repo"
    (repo / "site-packages").mkdir(parents=True)
    git(repo, "init", "-q")
    installed = repo / "site-packages" / "module.py"  # e.g. an installed copy inside a virtual environment
    installed.write_text("x = 1\n")
    assert git_state(installed) == (None, None)
    outside = tmp_path / "elsewhere.py"
    outside.write_text("")
    assert git_state(outside) == (None, None)


@needs_git
def test_missing_git_is_not_an_error(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "module.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "module.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert git_state(repo / "module.py")[0] is not None
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git binary anywhere on the path
    assert git_state(repo / "module.py") == (None, None)


def test_cpu_model_is_named():
    name = cpu_model()
    assert name is None or (isinstance(name, str) and name.strip() == name and name)


def test_sessions_are_kept_one_per_session(tmp_path):
    first = SessionLog(tmp_path, session_record(torch.device("cpu"), 1, 0))
    first.update(2, finished=True)
    second = SessionLog(tmp_path, session_record(torch.device("cpu"), 1, 2))
    second.update(3)
    sessions = read_sessions(tmp_path)
    assert [(s["first_epoch"], s["last_epoch"], s["finished"]) for s in sessions] == [(0, 2, True), (2, 3, False)]
    assert sessions == json.loads((tmp_path / PROVENANCE_FILE).read_text())["sessions"]
    expected = {"tks_version", "git_commit", "git_dirty", "torch_version", "cpu_model", "torch_threads", "device"}
    assert expected <= set(sessions[0]) and {"wall_s", "process_cpu_s", "started_utc"} <= set(sessions[0])
    (tmp_path / PROVENANCE_FILE).write_text("not json")
    assert read_sessions(tmp_path) == []
