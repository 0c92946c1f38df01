"""Locks between processes: one process at a time builds a cache, and one trains in a run folder.

A lock is a file holding its owner's process id, locked with ``fcntl.flock``. The operating system frees a flock
when the process that took it ends, however it ends, so the lock file of a killed process is taken over by the
next one without any check of the pid it names; the pid only names the owner in messages. The owner removes the
file when it lets go. Taking a lock goes:

1. open (or create) the file and ``flock`` it, waiting or not;
2. make sure the locked file is still the one at the path: an owner that let go removed it, and a process that
   was waiting on that file must lock the new one (otherwise two processes would each hold "the" lock);
3. write the own pid.

Where ``fcntl`` does not exist (Windows), or the file system refuses ``flock``, locks do nothing: caches then rely
on their atomic rename alone, and run folders are not protected.

A build writes into ``<name>.partial-<pid>`` beside its target and renames it into place when complete; the next
builder removes the partial copies of processes that are gone.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from tks.errors import TKSError, TKSWarning

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RUN_LOCK = ".lock"
"""The lock file inside a run folder while a training session uses it."""

_HELD: set[int] = set()
"""File descriptors of the locks this process holds."""


def _close_in_child() -> None:
    # A forked child (a DataLoader or framing worker) shares its parent's locked files. Closing the child's copies
    # ties each lock to the parent's life alone: a killed trainer frees its run folder even while its workers linger.
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class LockHeldError(TKSError):
    """A lock that another live process holds; ``pid`` is that process (``None`` when it could not be read)."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path, self.pid = path, pid
        super().__init__(f"{path} is locked by {describe(pid)}")


class LockFileError(TKSError):
    """A lock file that cannot be created or written (a full disk, a read-only folder); ``cause`` says why."""

    def __init__(self, path: Path, cause: str) -> None:
        self.path, self.cause = path, cause
        super().__init__(f"cannot write the lock file {path}: {cause}")


class RunFolderLockError(TKSError):
    """A run folder that cannot be locked for a training session (e.g. it is read-only)."""


class RunFolderInUseError(RunFolderLockError):
    """A run folder that another live process is training in."""


class FileLock:
    """A lock this process holds; ``release()``, or the end of a ``with`` block, removes the file and frees it."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd
        self._owner = os.getpid()

    def fileno(self) -> int | None:
        """The locked file's descriptor: a child process that inherits it shares the lock (None: not locked)."""
        return self._fd

    def release(self) -> None:
        """Remove the lock file and free the lock (once; a forked child that inherited the object does nothing)."""
        fd, self._fd = self._fd, None
        if fd is None or os.getpid() != self._owner:
            return
        _HELD.discard(fd)
        try:
            if _same_file(self.path, fd):  # removed while still locked: a waiter then locks a new file (step 2)
                self.path.unlink()
        finally:
            os.close(fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def describe(pid: int | None) -> str:
    """``process N``, or ``another process`` when the pid is unknown."""
    return "another process" if pid is None else f"process {pid}"


def holder(path: Path) -> int | None:
    """The process id written in a lock file, or ``None`` when there is none (yet)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def acquire(path: str | Path, *, wait: bool, on_wait: Callable[[int | None], None] | None = None) -> FileLock:
    """Take the lock at ``path`` (see the module docstring), creating the file.

    Args:
        path: the lock file; its folder must exist.
        wait: block until the lock is free; otherwise fail at once.
        on_wait: called once with the holder's pid before blocking (e.g. to say why nothing happens).

    Raises:
        LockHeldError: when ``wait`` is false and another process holds the lock.
        LockFileError: when the file cannot be created or written (one line with the cause).
    """
    try:
        return _acquire(Path(path), wait, on_wait)
    except OSError as exc:
        raise LockFileError(Path(path), exc.strerror or str(exc)) from None


def _acquire(path: Path, wait: bool, on_wait: Callable[[int | None], None] | None) -> FileLock:
    if fcntl is None:
        return FileLock(path, None)
    told, tries = False, 0
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _lock(fd, blocking=False)
            if locked is False:
                pid = holder(path)
                if pid is None and tries < 100:  # the holder is between its flock and its pid, or just let go
                    tries += 1
                    os.close(fd)
                    time.sleep(0.01)
                    continue
                if not wait:
                    raise LockHeldError(path, pid)
                if on_wait is not None and not told:
                    on_wait(pid)
                    told = True
                locked = _lock(fd, blocking=True)
            if locked is None:
                os.close(fd)
                return FileLock(path, None)
            if not _same_file(path, fd):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        _HELD.add(fd)
        return FileLock(path, fd)


def is_held(path: str | Path) -> bool:
    """Whether a live process holds the lock at ``path``, found without creating or writing anything.

    For listings that must not change the folders they look at (``tks sweep --dry-run`` of committed results). The
    file is opened read-only and locked shared for an instant: an ``acquire`` of another process at that very
    instant fails as if the lock were held, so only ``acquire`` itself decides who may write.
    """
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody holds it (an owner removes the file when it lets go)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without flock: nothing is locked there
        return False
    finally:
        os.close(fd)  # closing frees the shared lock taken just above
    return False


def _lock(fd: int, *, blocking: bool) -> bool | None:
    """``flock`` the file: True when locked, False when another process holds it, None where flock is refused."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # e.g. a file system without flock: go on unlocked rather than refuse to work
        return None
    return True


def lock_run_dir(run_dir: str | Path) -> FileLock:
    """Lock a run folder for this process's training session (``<run_dir>/.lock``).

    Raises:
        RunFolderInUseError: ``run folder D is in use by process N`` while another live process holds it.
        RunFolderLockError: when the lock file cannot be written (a read-only folder).
    """
    try:
        return acquire(Path(run_dir) / RUN_LOCK, wait=False)
    except LockHeldError as exc:
        raise RunFolderInUseError(f"run folder {run_dir} is in use by {describe(exc.pid)}") from None
    except LockFileError as exc:
        raise RunFolderLockError(f"run folder {run_dir} cannot be locked: {exc.cause} ({RUN_LOCK})") from None


@contextmanager
def build_lock(target: Path, what: str | None) -> Iterator[None]:
    """Hold the build lock of a cache file or folder (``.<name>.lock`` beside it), waiting for another builder.

    The caller checks the cache again inside: a process that waited then finds the copy the other one finished.

    Args:
        target: the cache folder or file.
        what: named in a warning shown once when this process has to wait; ``None``: wait silently.
    """
    target.parent.mkdir(parents=True, exist_ok=True)

    def say(pid: int | None) -> None:
        warnings.warn(f"waiting for {describe(pid)} to finish building {what}", TKSWarning, stacklevel=2)

    with acquire(target.with_name(f".{target.name}.lock"), wait=True, on_wait=say if what else None):
        yield


def partial_path(target: Path) -> Path:
    """Where this process builds ``target`` before renaming it into place: ``<name>.partial-<pid>`` beside it."""
    return target.with_name(f"{target.name}.partial-{os.getpid()}")


def remove_dead_partials(target: Path) -> None:
    """Remove what builds of ``target`` killed before they finished left beside it (``.partial-`` and ``.old-``)."""
    for kind in ("partial", "old"):
        for stale in target.parent.glob(f"{target.name}.{kind}-*"):
            pid = stale.name.rsplit("-", 1)[1]
            if pid.isdigit() and not pid_alive(int(pid)):
                _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # PermissionError: it exists under another user
        return True
    return True


def publish(tmp: Path, target: Path, is_valid: Callable[[Path], bool]) -> None:
    """Move the finished build ``tmp`` to ``target``; a valid ``target`` is kept and ``tmp`` left to the caller.

    Without a lock (see the module docstring) another process may have published first: its copy is then kept, so
    that nobody deletes files another process reads. An invalid ``target`` (an older version) is renamed aside and
    deleted after ours took its place, so that its name is missing only between two renames.
    """
    if is_valid(target):
        return
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        _remove(old)
