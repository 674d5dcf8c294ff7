"""How an application's close turns into a reset: unread data, SO_LINGER {1,0}, TCP_LINGER2 < 0, a peer that
writes after our FIN, queued connections of a closed listener, a CLOSE_WAIT that never ends, a harmless
abort."""

from __future__ import annotations

import contextlib
import socket
import time

from whyreset.ids import CauseId, Outcome, TcpState
from whyreset.lab.runner import AppSocket, LabContext
from whyreset.lab.scenario import Scenario
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios._loopback import LINGER_ABORT, LoopbackScenario, Stage

TCP_LINGER2 = getattr(socket, "TCP_LINGER2", 8)


def request_bytes(lab: LabContext, label: str = "req") -> bytes:
    """A small HTTP-like request of seeded length."""
    body = lab.payload(lab.size(8, 120), label)
    return b"POST /%s HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (label.encode(), len(body), body)


def response_bytes(lab: LabContext, size: int | None = None) -> bytes:
    body = lab.payload(size if size is not None else lab.size(16, 600), "resp")
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def read_until_error(sock: AppSocket, note: str = "") -> None:
    """Read until EOF or an error (both recorded); the error itself is the observation."""
    with contextlib.suppress(OSError):
        while sock.recv(65536, note):
            pass


class UnreadDataServer(LoopbackScenario):
    """Pipelined requests; the server reads only the first, answers it and closes: RST instead of FIN."""

    name = "close_with_unread_data.server"
    cause = CauseId.CLOSE_WITH_UNREAD_DATA
    summary = "client pipelines requests, server reads one, answers, closes with the rest unread: server RST"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        requests = [request_bytes(lab, f"r{index}") for index in range(lab.size(2, 4))]
        response = response_bytes(lab)

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(requests[0]), "first request only")
            lab.pause(0.01, 0.05)  # the other requests are in the receive queue by now
            conn.sendall(response, "response to the first request")
            conn.close(f"{conn.pending()} request bytes unread")

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(b"".join(requests), f"{len(requests)} pipelined requests")
        client.recv_exactly(len(response), "response")
        read_until_error(client)
        client.close()
        stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)


class UnreadDataClient(LoopbackScenario):
    """The server sends more than the client reads; the client closes with that data unread: client RST."""

    name = "close_with_unread_data.client"
    cause = CauseId.CLOSE_WITH_UNREAD_DATA
    summary = "server sends a trailer the client never reads, client closes: client RST, server ECONNRESET"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)
        trailer = lab.payload(lab.size(10, 300), "trailer")

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response + trailer, "response plus an unexpected trailer")
            read_until_error(conn, "waiting for the next request")
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response (by Content-Length)")
        lab.pause(0.01, 0.05)
        client.close(f"{client.pending()} bytes unread")
        stage.expect(local, self.cause, Outcome.RESET, ("orig",), TcpState.CLOSED, TcpState.CLOSED)


class LingerZeroAbort(LoopbackScenario):
    """The server reads a request and aborts with SO_LINGER {1,0} instead of answering."""

    name = "abortive_close.linger0"
    cause = CauseId.ABORTIVE_CLOSE
    summary = "server reads the request, sets SO_LINGER {1,0} and closes: RST, request unanswered"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            lab.pause(0.01, 0.05)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT, "SO_LINGER {1,0}")
            conn.close("abort")

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        read_until_error(client, "waiting for the response")
        client.close()
        stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)


class LingerZeroUnsent(LoopbackScenario):
    """The server aborts with SO_LINGER {1,0} while part of its response is still unsent (the client is
    slow)."""

    name = "abortive_close.linger0_unsent"
    cause = CauseId.ABORTIVE_CLOSE
    summary = "server aborts (SO_LINGER {1,0}) with response data still unsent: RST, data discarded"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        big = lab.payload(lab.size(300_000, 600_000), "bulk")
        client, local = stage.client_socket()
        # A small receive buffer, set before connect so the window is small: the server's data backs up.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096, "SO_RCVBUF=4096")

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.settimeout(lab.duration(0.2, 0.4))
            with contextlib.suppress(TimeoutError):
                conn.sendall(big, "large response (blocks: the client does not read)")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT, "SO_LINGER {1,0}")
            conn.close("abort with unsent data")

        lab.spawn("server", server)
        client.connect(stage.server_addr, stage.server_port)
        client.sendall(request, "request")
        lab.pause(0.6, 0.8)
        read_until_error(client, "reading the response late")
        client.close()
        stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)


class Linger2Orphan(LoopbackScenario):
    """TCP_LINGER2 < 0: the orphaned socket resets instead of waiting in FIN_WAIT2.

    Two paths, two reasons (observed on 6.18): ``close()`` while the FIN is still unacknowledged leaves an
    orphan in FIN_WAIT1 whose FIN's ACK is answered by RST (tcp_rcv_state_process counts TCPAbortOnData and
    reports TCP_ABORT_ON_DATA); ``shutdown(SHUT_WR)``, the FIN acknowledged, then ``close()`` in FIN_WAIT2
    resets at once from __tcp_close (TCPAbortOnLinger, TCP_ABORT_ON_LINGER).
    """

    cause = CauseId.ABORTIVE_CLOSE

    def __init__(self, shutdown_first: bool) -> None:
        self.shutdown_first = shutdown_first
        if shutdown_first:
            self.name = "abortive_close.linger2_fin_wait2"
            self.summary = "TCP_LINGER2=-1, shutdown(SHUT_WR), FIN acked, close() in FIN_WAIT2: immediate RST"
        else:
            self.name = "abortive_close.linger2_orphan"
            self.summary = "TCP_LINGER2=-1, close() right after the response: the ACK of its FIN draws an RST"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)
        # Longer than the client's delayed-ACK timer: its FIN's ACK comes as a pure ACK, not with the client's
        # FIN.
        ack_wait = lab.duration(0.3, 0.4)

        def server() -> None:
            conn = listener.accept("server")
            conn.setsockopt(socket.IPPROTO_TCP, TCP_LINGER2, -1, "TCP_LINGER2=-1")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response, "response")
            if self.shutdown_first:
                conn.shutdown(socket.SHUT_WR)
                time.sleep(ack_wait)
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response")
        read_until_error(client, "after the response")
        time.sleep(ack_wait + 0.1)
        client.close()
        stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)


class DataAfterClose(LoopbackScenario):
    """The server answers and closes; the client, in CLOSE_WAIT, keeps writing: the server's orphan resets."""

    name = "data_after_close.close_wait_writer"
    cause = CauseId.DATA_AFTER_CLOSE
    summary = "server closes; client ignores the FIN and writes again: RST, the client then gets EPIPE"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab, "first")
        response = response_bytes(lab)

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response, "response")
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response")
        lab.pause(0.05, 0.1)  # the FIN has arrived: the client is in CLOSE_WAIT and does not look
        with contextlib.suppress(OSError):
            for index in range(3):
                client.sendall(request_bytes(lab, f"more{index}"), "writes after the peer's FIN")
                lab.pause(0.02, 0.05)
        client.close()
        stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)


class ListenerClosed(LoopbackScenario):
    """Connections wait in the accept queue (requests sent); the server closes its listening socket."""

    name = "listener_closed.accept_queue"
    cause = CauseId.LISTENER_CLOSED
    summary = "clients queued in the accept backlog when the listener closes: each one gets an RST"
    duration_s = 1.0

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen(backlog=8)
        clients: list[tuple[AppSocket, str]] = []
        for index in range(lab.size(2, 4)):
            client, local = stage.dial(f"client{index + 1}")
            client.sendall(request_bytes(lab, f"q{index}"), "request (never accepted)")
            clients.append((client, local))
        lab.pause(0.05, 0.15)
        listener.close("listener closed with connections queued")
        for client, local in clients:
            read_until_error(client, "waiting for the response")
            client.close()
            stage.expect(local, self.cause, Outcome.RESET, ("resp",), TcpState.CLOSED, TcpState.CLOSED)


class CloseWaitLeak(LoopbackScenario):
    """The client closes after its response; the server application never closes: CLOSE_WAIT forever."""

    name = "close_wait_leak.server"
    cause = CauseId.CLOSE_WAIT_LEAK
    summary = "client closes, server reads EOF but never closes: server stuck in CLOSE_WAIT (ss snapshot)"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)
        leaked: list[AppSocket] = []

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response, "response")
            conn.recv(65536, "EOF from the client, ignored")
            leaked.append(conn)  # the bug: never closed

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response")
        client.close()
        lab.join_apps()
        lab.pause(0.1, 0.2)
        lab.note("ss -tanp at the end of the capture:\n" + lab.socket_table(stage.host))
        stage.expect(local, self.cause, Outcome.HALF_CLOSED, (), TcpState.FIN_WAIT_2, TcpState.CLOSE_WAIT)


class BenignReset(LoopbackScenario):
    """The client reads the whole response, then aborts with SO_LINGER {1,0}: nothing outstanding either
    way."""

    name = "benign_reset.client_abort"
    cause = CauseId.BENIGN_RESET
    summary = "client reads the full response, closes with SO_LINGER {1,0}: RST with nothing outstanding"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response, "response")
            read_until_error(conn, "waiting for the next request")
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response")
        lab.pause(0.02, 0.06)  # everything acknowledged
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT, "SO_LINGER {1,0}")
        client.close("abort after the full response")
        stage.expect(local, self.cause, Outcome.RESET, ("orig",), TcpState.CLOSED, TcpState.CLOSED)


SCENARIOS: tuple[Scenario, ...] = (
    UnreadDataServer(),
    UnreadDataClient(),
    LingerZeroAbort(),
    LingerZeroUnsent(),
    Linger2Orphan(shutdown_first=False),
    Linger2Orphan(shutdown_first=True),
    DataAfterClose(),
    ListenerClosed(),
    CloseWaitLeak(),
    BenignReset(),
)
for _scenario in SCENARIOS:
    register(_scenario)
