"""Negatives: connections that end well. The analysis must not diagnose any fault on them."""

from __future__ import annotations

import socket
import threading

from whyreset.ids import Outcome, TcpState
from whyreset.lab.scenario import Scenario
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios._loopback import LoopbackScenario, Stage
from whyreset.lab.scenarios.close import read_until_error, request_bytes, response_bytes


class CleanClose(LoopbackScenario):
    """Request, response, then an orderly close started by one side; the other reads EOF and closes."""

    cause = None

    def __init__(self, client_first: bool) -> None:
        self.client_first = client_first
        first = "client" if client_first else "server"
        self.name = f"negative.clean_close_{first}_first"
        self.summary = f"request/response, the {first} closes first, the other reads EOF and closes: FIN/FIN"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response, "response")
            if not self.client_first:
                conn.close()
                return
            read_until_error(conn, "until the client's FIN")
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response")
        if self.client_first:
            client.close()
        else:
            read_until_error(client, "until the server's FIN")
            client.close()
        lab.join_apps()
        if self.client_first:
            stage.expect(local, None, Outcome.CLEAN, (), TcpState.TIME_WAIT, TcpState.CLOSED)
        else:
            stage.expect(local, None, Outcome.CLEAN, (), TcpState.CLOSED, TcpState.TIME_WAIT)


class HalfClose(LoopbackScenario):
    """The client sends its request and shuts down its sending side; the server reads to EOF, answers,
    closes."""

    name = "negative.half_close"
    cause = None
    summary = "client shutdown(SHUT_WR) after the request, server reads to EOF, answers and closes"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)

        def server() -> None:
            conn = listener.accept("server")
            read_until_error(conn, "request until the client's FIN")
            lab.pause(0.01, 0.05)
            conn.sendall(response, "response after the client's half-close")
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.shutdown(socket.SHUT_WR)
        read_until_error(client, "response until the server's FIN")
        client.close()
        lab.join_apps()
        stage.expect(local, None, Outcome.CLEAN, (), TcpState.TIME_WAIT, TcpState.CLOSED)


class SimultaneousClose(LoopbackScenario):
    """Both sides shut down at the same moment (a barrier on two threads).

    On loopback the FINs cross only when both shutdown() calls overlap (the peer's FIN then waits in the
    socket backlog): the run says in its notes whether both sides ended in TIME_WAIT (crossed) or not. Either
    way the connection is clean.
    """

    name = "negative.simultaneous_close"
    cause = None
    summary = "both sides shutdown(SHUT_WR) at once after the exchange, then close: clean, maybe CLOSING"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        request = request_bytes(lab)
        response = response_bytes(lab)
        barrier = threading.Barrier(2, timeout=5)

        def server() -> None:
            conn = listener.accept("server")
            conn.recv_exactly(len(request), "request")
            conn.sendall(response, "response")
            barrier.wait()
            conn.shutdown(socket.SHUT_WR)
            read_until_error(conn, "until the client's FIN")
            conn.close()

        lab.spawn("server", server)
        client, local = stage.dial()
        client.sendall(request, "request")
        client.recv_exactly(len(response), "response")
        barrier.wait()
        client.shutdown(socket.SHUT_WR)
        read_until_error(client, "until the server's FIN")
        client.close()
        lab.join_apps()
        table = lab.socket_table(stage.host)
        crossed = table.count("TIME-WAIT") >= 2
        lab.note(f"FINs crossed (both sides in TIME_WAIT): {crossed}\n{table}")
        lab.extra("fins_crossed", crossed)
        stage.expect(local, None, Outcome.CLEAN, ())


SCENARIOS: tuple[Scenario, ...] = (
    CleanClose(client_first=True),
    CleanClose(client_first=False),
    HalfClose(),
    SimultaneousClose(),
)
for _scenario in SCENARIOS:
    register(_scenario)
