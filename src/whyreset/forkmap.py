"""Apply a function over a list on two cores: a forked child computes the second half while the caller
consumes the first.

For the end of a capture's analysis: every abnormal connection held back for the complete context is then
diagnosed, each independently of the others (the context is complete and only read), and the diagnosis is
pure Python, so threads would not run it in parallel. A forked child shares the connections and the context
copy-on-write, computes its half and sends the results back pickled; the caller gets every (item, result) pair
in the list's order, exactly as a serial map gives them.

If the child cannot be started or fails, its half is computed here: the results are the same, only slower.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Generator, Sequence
from typing import Any, NoReturn, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_in_halves(
    func: Callable[[Item], Result], items: Sequence[Item], *, parallel: bool = True
) -> Generator[tuple[Item, Result], None, None]:
    """``(item, func(item))`` for every item, in order; the second half computed by a forked child when
    ``parallel`` and fork is available."""
    parallel = parallel and "fork" in multiprocessing.get_all_start_methods()
    half = len(items) // 2
    if not parallel or half == 0:
        yield from ((item, func(item)) for item in items)
        return
    first, second = items[:half], items[half:]
    receiver, sender = multiprocessing.Pipe(duplex=False)
    try:
        pid = os.fork()
    except OSError:  # no process to spare (RLIMIT_NPROC, memory): one core it is
        receiver.close()
        sender.close()
        yield from ((item, func(item)) for item in items)
        return
    if pid == 0:  # the child: compute, send, and leave without running the parent's clean-ups
        receiver.close()
        _child(func, second, sender)
    sender.close()
    reaped = False
    try:
        yield from ((item, func(item)) for item in first)
        results = _receive(receiver, len(second))
        os.waitpid(pid, 0)
        reaped = True
        yield from zip(second, results if results is not None else map(func, second), strict=True)
    finally:
        receiver.close()
        if not reaped:  # the caller stopped early, or receiving failed: the child's work is not wanted
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _child(func: Callable[[Any], Any], items: Sequence[Any], sender: Any) -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    status = 0
    try:
        message: tuple[str, Any] = ("results", [func(item) for item in items])
    except BaseException:  # the parent recomputes this half and meets the same error itself
        message = ("failed", traceback.format_exc())
    try:
        sender.send(message)
    except BaseException:
        status = 1
    os._exit(status)


def _receive(receiver: Any, expected: int) -> list[Any] | None:
    """The child's results, or None when it failed (its half is then computed by the caller)."""
    try:
        kind, payload = receiver.recv()
    except (EOFError, OSError):
        return None
    if kind != "results" or len(payload) != expected:
        return None
    results: list[Any] = payload
    return results
