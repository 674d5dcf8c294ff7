"""Real captures for the text reader's tests: loopback traffic of real kernel sockets, recorded by tcpdump.

Three exchanges, each on its own port: a refused connection (the kernel answers RST to a SYN on a closed
port), a clean close with data both ways, and a reset after data (the server closes with unread data, so the
kernel sends RST). Also an IPv6 clean exchange. Needs root and tcpdump; callers skip otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

CORPUS = Path("/work/shared/corpus")
"""Public traces from other projects (see its SOURCES.md)."""
SEEDS = Path("/work/shared/seeds")
"""The background reading: blog posts quoting tcpdump output."""

_READY_TIMEOUT_S = 10.0


def _listener(family: int, host: str) -> socket.socket:
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen(4)
    server.settimeout(5)
    return server


def _closed_port() -> int:
    """A port nobody listens on: bound, never listened, so the kernel refuses connections to it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port: int = holder.getsockname()[1]
    holder.close()
    return port


def _clean_close(server: socket.socket, family: int, host: str) -> None:
    port = server.getsockname()[1]
    client = socket.create_connection((host, port), timeout=5)
    accepted, _ = server.accept()
    client.sendall(b"GET / HTTP/1.0\r\n\r\n")
    accepted.recv(100)
    accepted.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
    accepted.close()
    client.recv(100)
    client.close()
    del family


def _reset_after_data(server: socket.socket) -> None:
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    accepted, _ = server.accept()
    client.sendall(b"request one")
    time.sleep(0.05)
    accepted.close()  # unread data in the receive queue: the kernel sends RST instead of FIN (RFC 2525 2.17)
    time.sleep(0.05)
    try:
        client.sendall(b"more")
        client.recv(10)
    except OSError:
        pass
    client.close()


def _refused(port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return
    raise AssertionError("connection to a closed port was accepted")


def record_loopback_capture(path: Path, interface: str = "lo") -> Path:
    """Run the exchanges on loopback while tcpdump records them to ``path``.

    ``interface="any"`` records Linux cooked v2 frames, which tcpdump prints with the interface name and the
    direction first (``lo    In  IP ...``).
    """
    v4_clean = _listener(socket.AF_INET, "127.0.0.1")
    v4_reset = _listener(socket.AF_INET, "127.0.0.1")
    v6_clean = _listener(socket.AF_INET6, "::1")
    refused_port = _closed_port()
    ports = [refused_port, v4_clean.getsockname()[1], v4_reset.getsockname()[1], v6_clean.getsockname()[1]]
    capture_filter = " or ".join(f"tcp port {port}" for port in ports)
    # A small snaplen and a big buffer: with -i any and 256 KiB slots the kernel drops loopback bursts.
    command = [
        "tcpdump",
        "-i",
        interface,
        "--immediate-mode",
        "-U",
        "-B",
        "16384",
        "-s",
        "512",
        "-w",
        str(path),
    ]
    tcpdump = subprocess.Popen(
        [*command, capture_filter],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_listening(tcpdump)
        _refused(refused_port)
        _clean_close(v4_clean, socket.AF_INET, "127.0.0.1")
        _reset_after_data(v4_reset)
        _clean_close(v6_clean, socket.AF_INET6, "::1")
        _wait_written(path)
    finally:
        os.kill(tcpdump.pid, signal.SIGINT)
        try:
            tcpdump.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tcpdump.kill()
            tcpdump.wait()
        for server in (v4_clean, v4_reset, v6_clean):
            server.close()
    _check_nothing_dropped(tcpdump)
    return path


def _check_nothing_dropped(tcpdump: subprocess.Popen[str]) -> None:
    """A capture that lost packets would test the text reader against a different exchange: refuse it."""
    assert tcpdump.stderr is not None
    summary = tcpdump.stderr.read()
    dropped = re.search(r"(\d+) packets? dropped by kernel", summary)
    if dropped is not None and int(dropped[1]) > 0:
        raise RuntimeError(f"tcpdump lost packets: {summary.strip()}")


def _wait_written(path: Path) -> None:
    """Wait until the capture file stops growing: tcpdump drops what it has not written when interrupted."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    last_size, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size != last_size:
            last_size, stable_since = size, time.monotonic()
        elif time.monotonic() - stable_since > 1.0:
            return
        time.sleep(0.1)


def _wait_listening(tcpdump: subprocess.Popen[str]) -> None:
    assert tcpdump.stderr is not None
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = tcpdump.stderr.readline()
        if "listening on" in line:
            return
        if not line and tcpdump.poll() is not None:
            raise RuntimeError(f"tcpdump exited with status {tcpdump.returncode}")
    raise RuntimeError("tcpdump did not start listening")
