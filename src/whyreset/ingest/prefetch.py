"""Read a capture file in a second process, so reading overlaps the analysis on another core.

Reading a large capture (the record walk and the columnar decode, ~1 s per million packets) and analysing it
(tracking, diagnosis, output) are both CPU-bound, and the analysis of chunk N does not need chunk N+1. A forked
child runs `iter_capture` and hands each chunk over through a pipe (numpy columns pickle as flat copies); the
pipe's backpressure keeps it at most a chunk ahead, so memory stays bounded. What the caller sees is exactly
what `iter_capture` gives: the same chunks, then the same `CaptureError` (its offset and record survive the
pickle) after the readable part. The reader keeps updating its `ReadReport` after the last chunk it yields (the
error it stopped at, the last counts); when it did, one more empty chunk carries the final report.

Only regular files given by path are read this way: a stream (standard input, a file object) has a single
reader, and a small file is read before a child would even have started. Without ``fork`` (not Linux/BSD) the
file is read in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import traceback
from collections.abc import Generator, Iterator
from multiprocessing.connection import Connection as Pipe
from typing import Any

from whyreset.errors import CaptureError
from whyreset.ingest.reader import DEFAULT_CHUNK_RECORDS, iter_capture
from whyreset.model import Capture, PacketTable, ReadReport

PREFETCH_MIN_BYTES = 16 << 20
"""Files smaller than this are read in this process: the child's start-up and the copies through the pipe
would cost more than they overlap."""
PIPE_BYTES = 1 << 20


def prefetch_worthwhile(path: str) -> bool:
    """Whether ``path`` is a regular file large enough to read in a second process, and fork is available."""
    if path == "-" or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if multiprocessing.current_process().daemon:
        return False  # a daemonic process (a multiprocessing pool's worker) may not start children
    try:
        return os.stat(path).st_size >= PREFETCH_MIN_BYTES and os.path.isfile(path)
    except OSError:
        return False  # let the in-process reader report it, with its usual message


def iter_capture_prefetched(
    path: str, *, chunk_records: int = DEFAULT_CHUNK_RECORDS
) -> Generator[Capture, None, None]:
    """`iter_capture` of the file at ``path``, read by a forked child process one chunk ahead."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    _widen(receiver)
    child = context.Process(target=_produce, args=(path, chunk_records, sender), daemon=True)
    child.start()
    sender.close()  # the child holds the only writing end: its exit ends the pipe
    try:
        yield from _receive(receiver, child.pid)
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()  # the caller stopped early: nobody reads what the child would send
        child.join()


def _widen(pipe: Pipe) -> None:
    """Ask for a 1 MB pipe buffer (Linux; 64 kB by default): a chunk crosses in fewer wake-ups of each side."""
    with contextlib.suppress(ImportError, AttributeError, OSError):  # not Linux, or over the system's maximum
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _receive(receiver: Pipe, pid: int | None) -> Iterator[Capture]:
    last: ReadReport | None = None
    while True:
        try:
            kind, payload, report = receiver.recv()
        except EOFError:
            raise RuntimeError(f"the capture reader process (pid {pid}) died without a word") from None
        if kind == "chunk":
            last = payload.report
            yield payload
            continue
        if last is not None and report is not None and report != last:
            yield Capture(PacketTable.empty(), [], {}, report)
        if kind == "end":
            return
        if kind == "error":
            raise payload  # CaptureError or OSError, as in-process reading would raise
        raise RuntimeError(f"the capture reader process failed:\n{payload}")


def _produce(path: str, chunk_records: int, sender: Pipe) -> None:
    """Child process: read the capture, send every chunk, then the end or the error that stopped reading."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    report: ReadReport | None = None  # the reader's own, updated until it stops
    message: tuple[str, Any]
    try:
        for chunk in iter_capture(path, chunk_records=chunk_records):
            report = chunk.report
            sender.send(("chunk", chunk, None))
        message = ("end", None)
    except BrokenPipeError:
        return  # the parent is gone
    except (CaptureError, OSError) as exc:
        message = ("error", exc)
    except Exception:  # a reader bug: the parent reports it with this traceback
        message = ("bug", traceback.format_exc())
    try:
        sender.send((*message, report))
    except BrokenPipeError:
        pass
    finally:
        sender.close()
