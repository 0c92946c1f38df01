"""Run a function in several processes at the same moment: the tests of concurrent cache builds and run folders.

The processes are forked, as DataLoader workers are, so they start without importing torch again and may run
functions defined anywhere (nothing is pickled on the way in; results come back through a queue). They wait at a
barrier before the call, so the calls overlap.
"""

import multiprocessing
import queue as queues
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

FORK = multiprocessing.get_context("fork")


def _child(index: int, barrier: Any, queue: Any, func: Callable[..., Any], args: Sequence[Any]) -> None:
    torch.set_num_threads(1)  # as in DataLoader workers: the OpenMP pool of the parent does not survive a fork
    try:
        barrier.wait(timeout=60)
        queue.put((index, True, func(*args)))
    except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
        queue.put((index, False, traceback.format_exc()))


def run_at_once(func: Callable[..., Any], calls: Sequence[Sequence[Any]], timeout: float = 120) -> list[Any]:
    """``func(*args)`` for every ``args`` in ``calls``, each in its own forked process, all released together.

    Returns:
        The results in the order of ``calls``.

    Raises:
        AssertionError: with the traceback of every process that raised.
    """
    barrier, queue = FORK.Barrier(len(calls)), FORK.Queue()
    procs = [FORK.Process(target=_child, args=(i, barrier, queue, func, args)) for i, args in enumerate(calls)]
    for proc in procs:
        proc.start()
    outcomes: dict[int, tuple[bool, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(outcomes) < len(procs) and time.monotonic() < deadline:
            try:
                index, ok, result = queue.get(timeout=0.2)
                outcomes[index] = ok, result
            except queues.Empty:
                for i, proc in enumerate(procs):  # a process that died without a word (a signal, a crash)
                    if i not in outcomes and proc.exitcode is not None and queue.empty():
                        outcomes[i] = False, f"exited with status {proc.exitcode} and no result"
    finally:
        for proc in procs:
            proc.join(1 if len(outcomes) < len(procs) else 10)
            if proc.is_alive():
                proc.kill()
    for i in range(len(procs)):
        outcomes.setdefault(i, (False, f"no result within {timeout} s"))
    failures = [f"process {i}:\n{result}" for i, (ok, result) in sorted(outcomes.items()) if not ok]
    assert not failures, "\n".join(failures)
    return [result for _, (_, result) in sorted(outcomes.items())]
