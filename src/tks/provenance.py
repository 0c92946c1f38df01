"""What produced a run: software versions, source commit, machine and wall time of each training session.

``tks train`` starts a session (and ``tks train --resume`` another) with ``session_record``; the run folder's
``provenance.json`` holds ``{"sessions": [...]}``, one entry per session, rewritten after every epoch so that an
interrupted session still shows how far it got. No host name, user name or path is recorded.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tks.runfiles import write_json
from tks.version import __version__

PROVENANCE_FILE = "provenance.json"


def git_state(source: Path) -> tuple[str | None, bool | None]:
    """The commit of the git checkout that holds ``source`` and whether its tracked or untracked files differ.

    Returns:
        ``(commit, dirty)``; ``(None, None)`` when git is missing, ``source`` is not tracked in a git checkout (an
        installed copy), or git fails in any way: provenance never stops a run.
    """
    folder = source if source.is_dir() else source.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):  # no git binary, or it hung
            return None
        return done.stdout if done.returncode == 0 else None

    # an installed package can sit inside some other repository (a virtual environment in a checkout): only a file
    # that git tracks belongs to the commit
    if git("ls-files", "--error-unmatch", source.name if source.is_file() else ".") is None:
        return None, None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    if commit is None or status is None:
        return None, None
    return commit.strip(), bool(status.strip())


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows, else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def session_record(
    device: torch.device, world_size: int, first_epoch: int, plugins: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """Provenance of the training session starting now, on this process; ``finish_session`` completes it.

    Args:
        device: the device the model trains on.
        world_size: number of training processes.
        first_epoch: completed epochs when the session starts (0 for a new run).
        plugins: the loaded plugins' records (``tks.plugins.Plugin.as_record``: module, file name, SHA-256,
            version).
    """
    commit, dirty = git_state(Path(__file__))  # the package's checkout, where it is one
    return {
        "tks_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": world_size,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "first_epoch": first_epoch,
        "last_epoch": first_epoch,
        "wall_s": 0.0,
        "process_cpu_s": 0.0,
        "finished": False,
        "plugins": list(plugins),
    }


class SessionLog:
    """The sessions of one run folder's ``provenance.json``: earlier ones kept, the current one updated."""

    def __init__(self, run_dir: Path, session: dict[str, Any]) -> None:
        self.path = run_dir / PROVENANCE_FILE
        self.sessions = read_sessions(run_dir) + [session]
        self.session = session
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self.save()

    def update(self, completed_epochs: int, finished: bool = False) -> None:
        """Record the session's progress, wall time and CPU time so far, and write the file."""
        self.session.update(
            last_epoch=completed_epochs,
            wall_s=round(time.perf_counter() - self._start, 3),
            process_cpu_s=round(time.process_time() - self._cpu_start, 3),
            finished=finished,
        )
        self.save()

    def save(self) -> None:
        """Write ``provenance.json`` atomically."""
        write_json(self.path, {"sessions": self.sessions})


def read_sessions(run_dir: Path) -> list[dict[str, Any]]:
    """The sessions recorded in ``run_dir/provenance.json`` ([] when there is none or it is unreadable)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        sessions = json.loads(path.read_text()).get("sessions", [])
    except (OSError, ValueError, AttributeError):
        return []
    return sessions if isinstance(sessions, list) else []
