"""Streaming: chunks arrive while the producer is still writing (a slow pipe, stdin, a live tcpdump)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_helpers import handshake, records
from test_ingest_property import VALID

from whyreset.errors import CaptureError, TruncatedCaptureError
from whyreset.ingest import craft, iter_capture
from whyreset.ingest import source as source_module

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


@contextmanager
def pipe_writer(
    pieces: list[bytes], gates: dict[int, threading.Event]
) -> Iterator[tuple[object, threading.Thread]]:
    """A pipe whose writer sends ``pieces`` in order, waiting at piece i for ``gates[i]`` when present."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as out:
            for i, piece in enumerate(pieces):
                gate = gates.get(i)
                if gate is not None and not gate.wait(TIMEOUT):
                    return
                out.write(piece)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with os.fdopen(read_fd, "rb") as reader:
        yield reader, writer
    for gate in gates.values():
        gate.set()
    writer.join(TIMEOUT)


def test_chunks_arrive_while_the_writer_waits() -> None:
    data = craft.pcap_bytes(records(handshake()), nanosecond=True)
    first_end = 24 + 16 + len(craft.frame(1, handshake()[0]))
    # Piece 0: header and first record. Then the rest one byte at a time, but only once the reader has
    # seen the first record: a reader that waited for EOF (or for a full buffer) would deadlock.
    pieces = [data[:first_end]] + [data[i : i + 1] for i in range(first_end, len(data))]
    released = threading.Event()
    with pipe_writer(pieces, {1: released}) as (reader, writer):
        chunks = iter_capture(reader)  # type: ignore[arg-type]
        first = next(chunks)
        assert [int(seq) for seq in first.packets["seq"]] == [1000]
        assert writer.is_alive()  # the writer is still blocked on the gate: we did not wait for EOF
        released.set()
        rest = list(chunks)
    seqs = [int(s) for chunk in rest for s in chunk.packets["seq"]]
    assert seqs == [5000, 1001, 1001, 5001]
    assert rest[-1].report.records == 5


def test_pipe_closed_mid_record_is_truncation() -> None:
    data = craft.pcap_bytes(records(handshake()), nanosecond=True)
    with pipe_writer([data[:-5]], {}) as (reader, _):
        seen = []
        with pytest.raises(TruncatedCaptureError) as raised:
            for chunk in iter_capture(reader):  # type: ignore[arg-type]
                seen.extend(int(s) for s in chunk.packets["seq"])
    assert seen == [1000, 5000, 1001, 1001]
    assert raised.value.record == 5


def test_pcapng_over_a_slow_pipe() -> None:
    data = craft.pcapng_bytes([(i, craft.frame(1, p), 0) for i, p in enumerate(handshake())])
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    with pipe_writer(pieces, {}) as (reader, _):
        chunks = list(iter_capture(reader))  # type: ignore[arg-type]
    assert sum(len(c.packets) for c in chunks) == 5


def test_standard_input_dash(tmp_path: Path) -> None:
    data = craft.pcap_bytes(records(handshake()), nanosecond=True)
    program = (
        "import sys\n"
        "from whyreset.ingest import iter_capture\n"
        "chunks = list(iter_capture('-'))\n"
        "print(chunks[-1].report.source, sum(len(c.packets) for c in chunks), chunks[-1].report.format)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run(
        [sys.executable, "-c", program], input=data, capture_output=True, env=env, timeout=60, check=True
    )
    assert result.stdout.decode().split() == ["-", "5", "pcap"]


def _can_capture_on_loopback() -> str | None:
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    if os.geteuid() != 0:
        return "capturing needs root"
    return None


@pytest.mark.root
@pytest.mark.skipif(_can_capture_on_loopback() is not None, reason=str(_can_capture_on_loopback()))
def test_live_tcpdump_pipe_yields_while_capturing() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    tcpdump = subprocess.Popen(
        ["tcpdump", "-i", "lo", "-n", "-U", "-w", "-", "-s", "200", f"tcp port {port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()
    watchdog = threading.Timer(TIMEOUT, tcpdump.kill)
    watchdog.start()

    def traffic() -> None:
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
                peer, _ = server.accept()
                client.sendall(b"hello")
                peer.recv(5)
                peer.close()
            time.sleep(0.05)

    try:
        assert tcpdump.stderr is not None and tcpdump.stdout is not None
        tcpdump.stderr.readline()  # "listening on lo ...": the capture is armed
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        ports: set[int] = set()
        for chunk in iter_capture(tcpdump.stdout):
            ports.update(int(p) for p in chunk.packets["dport"])
            if port in ports:
                break
        assert port in ports
        assert tcpdump.poll() is None  # the capture is still running: we streamed, we did not wait for EOF
    finally:
        stop.set()
        watchdog.cancel()
        tcpdump.terminate()
        tcpdump.wait(TIMEOUT)
        server.close()


class Dribble(io.RawIOBase):
    """A file object that hands out its bytes in the given read sizes (cycling), like a slow producer."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        super().__init__()
        self.data, self.sizes, self.pos, self.calls = data, sizes, 0, 0

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        step = min(size, self.sizes[self.calls % len(self.sizes)])
        self.calls += 1
        piece = self.data[self.pos : self.pos + step]
        self.pos += len(piece)
        return piece

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        piece = self.read1(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


def _summary(chunks: list) -> list[tuple[int, int, int, int]]:  # type: ignore[type-arg]
    return [
        (int(f), int(s), int(t), int(o))
        for c in chunks
        for f, s, t, o in zip(
            c.packets["frame"], c.packets["seq"], c.packets["ts_ns"], c.packets["opt_ts_val"], strict=True
        )
    ]


@settings(max_examples=60, deadline=4000)
@given(
    which=st.integers(0, len(VALID) - 1),
    sizes=st.lists(st.integers(1, 70), min_size=1, max_size=8),
    cut=st.none() | st.integers(0, 10_000),
)
def test_any_split_of_the_stream_reads_the_same(which: int, sizes: list[int], cut: int | None) -> None:
    data = VALID[which] if cut is None else VALID[which][:cut]

    def read(source: object) -> tuple[list, str | None]:  # type: ignore[type-arg]
        chunks = []
        try:
            for chunk in iter_capture(source, chunk_records=2):  # type: ignore[arg-type]
                chunks.append(chunk)
        except CaptureError as exc:
            return _summary(chunks), f"{type(exc).__name__} {exc.record} {exc.offset}"
        return _summary(chunks), None

    expected = read(io.BytesIO(data))
    with pytest.MonkeyPatch.context() as patch:
        # The producer is never "ready": every read goes straight to the walker, split wherever it fell.
        patch.setattr(source_module.RawStream, "more_ready", lambda self, wait=0.0: False)
        assert read(Dribble(data, sizes)) == expected
