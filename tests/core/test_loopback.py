"""Real kernel sockets on loopback, captured with tcpdump, read back and rebuilt by the tracker.

Each test starts ``tcpdump -i lo -U -w FILE 'tcp port P'``, waits until it is listening, runs a short socket
exchange, stops tcpdump and checks who sent the RST, the final states, the outcome and Zeek's conn_state.
Skipped without root or tcpdump; every exchange is bounded by socket timeouts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from whyreset.core.connection import Connection, EventKind
from whyreset.core.tracker import ConnectionTracker
from whyreset.ids import Outcome, Side, TcpState

pytestmark = pytest.mark.root

TCPDUMP = shutil.which("tcpdump")
SETTLE_S = 0.5
START_S = 0.5


def _require_capture() -> None:
    if TCPDUMP is None:
        pytest.skip("tcpdump is not installed")
    if os.geteuid() != 0:
        pytest.skip("capturing on loopback needs root")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Capture:
    """tcpdump running on lo for one port, written to a pcap file."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        assert TCPDUMP is not None
        self.process = subprocess.Popen(
            [TCPDUMP, "-i", "lo", "-n", "-U", "-s", "256", "-w", str(self.path), f"tcp port {self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.process.stderr is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = self.process.stderr.readline().decode(errors="replace")
            if "listening on" in line:
                time.sleep(START_S)  # the filter is attached a moment after the banner
                return self
            if not line and self.process.poll() is not None:
                break
        self.__exit__(None, None, None)
        pytest.skip("tcpdump did not start listening on lo")

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        time.sleep(SETTLE_S)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


def _connections(path: Path) -> list[Connection]:
    from whyreset.ingest.reader import iter_capture

    tracker = ConnectionTracker()
    connections: list[Connection] = []
    for chunk in iter_capture(str(path)):
        connections += tracker.feed(chunk)
    return connections + tracker.finish()


@pytest.fixture
def capture(tmp_path: Path) -> Iterator[Callable[[int], Capture]]:
    _require_capture()
    yield lambda port: Capture(tmp_path / f"lo-{port}.pcap", port)


def _listener(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    server.settimeout(5)
    return server


def _pair(port: int) -> tuple[socket.socket, socket.socket, socket.socket]:
    server = _listener(port)
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    accepted, _ = server.accept()
    accepted.settimeout(5)
    return server, client, accepted


def _only(connections: list[Connection]) -> Connection:
    assert len(connections) == 1, connections
    return connections[0]


def test_refused(capture: Callable[[int], Capture]) -> None:
    port = _free_port()
    with capture(port) as cap, pytest.raises(ConnectionRefusedError), socket.socket() as client:
        client.settimeout(5)
        client.connect(("127.0.0.1", port))
    c = _only(_connections(cap.path))
    assert c.resp_p == port and c.orig_inferred_by == "syn"
    assert c.conn_state == "REJ" and c.outcome is Outcome.NOT_ESTABLISHED
    assert [r.sender for r in c.resets] == [Side.RESP]
    assert c.final_state(Side.ORIG) is TcpState.CLOSED


@pytest.mark.parametrize("client_first", [True, False])
def test_clean_close(capture: Callable[[int], Capture], client_first: bool) -> None:
    port = _free_port()
    with capture(port) as cap:
        server, client, accepted = _pair(port)
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert accepted.recv(100)
        accepted.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
        assert client.recv(100)
        first, second = (client, accepted) if client_first else (accepted, client)
        first.shutdown(socket.SHUT_WR)
        assert second.recv(100) == b""
        second.close()
        assert first.recv(100) == b""
        first.close()
        server.close()
    c = _only(_connections(cap.path))
    assert c.outcome is Outcome.CLEAN and c.conn_state == "SF" and not c.resets
    closer, other = (Side.ORIG, Side.RESP) if client_first else (Side.RESP, Side.ORIG)
    assert c.final_state(closer) is TcpState.TIME_WAIT
    assert c.final_state(other) is TcpState.CLOSED
    assert c.orig.data_bytes == 18 and c.resp.data_bytes == 24
    assert c.history.startswith("ShAD")


def test_close_with_unread_data(capture: Callable[[int], Capture]) -> None:
    port = _free_port()
    with capture(port) as cap:
        server, client, accepted = _pair(port)
        client.sendall(b"request the server never reads")
        time.sleep(0.05)
        accepted.close()  # unread data: the kernel answers with RST instead of FIN (RFC 2525 2.17)
        with pytest.raises(ConnectionResetError):
            client.recv(100)
        client.close()
        server.close()
    c = _only(_connections(cap.path))
    assert [r.sender for r in c.resets] == [Side.RESP]
    assert c.resp.fin_frame is None and c.outcome is Outcome.RESET and c.conn_state == "RSTR"
    assert c.resets[0].receiver_state is TcpState.ESTABLISHED
    assert c.final_state(Side.ORIG) is TcpState.CLOSED


def test_so_linger_zero(capture: Callable[[int], Capture]) -> None:
    port = _free_port()
    with capture(port) as cap:
        server, client, accepted = _pair(port)
        client.sendall(b"ping")
        assert accepted.recv(10) == b"ping"
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        with pytest.raises(ConnectionResetError):
            accepted.recv(10)
        accepted.close()
        server.close()
    c = _only(_connections(cap.path))
    assert [r.sender for r in c.resets] == [Side.ORIG]
    assert c.orig.fin_frame is None and c.outcome is Outcome.RESET and c.conn_state == "RSTO"
    assert c.final_state(Side.RESP) is TcpState.CLOSED


def test_write_after_peer_fin(capture: Callable[[int], Capture]) -> None:
    port = _free_port()
    with capture(port) as cap:
        server, client, accepted = _pair(port)
        accepted.close()  # the server closes first: FIN
        assert client.recv(10) == b""
        client.sendall(b"late write")  # the peer is closed: its kernel answers with RST
        time.sleep(0.1)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            client.sendall(b"again")
        client.close()
        server.close()
    c = _only(_connections(cap.path))
    assert [r.sender for r in c.resets] == [Side.RESP]
    assert any(e.kind is EventKind.DATA_AFTER_FIN and e.side is Side.ORIG for e in c.events)
    assert c.resets[0].receiver_state is TcpState.CLOSE_WAIT
    assert c.outcome is Outcome.RESET and c.conn_state == "RSTR"
