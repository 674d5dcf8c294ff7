"""The path goes silent and a timer decides: keep-alive probes unanswered (``keepalive_timeout``), data never
acknowledged (``retransmission_timeout``), or a stateful middlebox that forgot an idle connection and now
drops its packets (``idle_state_dropped``).

The black hole is a DROP rule on the router for every TCP segment in both directions; the forgetful middlebox
is conntrack with a short established timeout and ``nf_conntrack_tcp_loose=0``
(``Topology.expire_idle_connections``). Timers are shrunk on the client's socket (keep-alive options,
TCP_USER_TIMEOUT) or in its namespace (``tcp_retries2``), so each scenario lasts a few seconds.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.netns import Verdict
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.path_base import Connected, PathRun, PathScenario, declare_rst_views, open_path

if TYPE_CHECKING:
    from whyreset.lab.runner import AppSocket, LabContext

TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 1, 1, 2
USER_TIMEOUT_MS = 2000
RETRIES2 = 2
"""tcp_retries2 is turned into a time budget as if the RTO started at 200 ms and doubled (tcp_model_timeout):
2 gives 1.4 s, checked when the RTO timer fires, so the sender gives up about 3 s after its first send."""
IDLE_TIMEOUT_S = 2
"""The middlebox's idle timeout (conntrack established timeout on the router)."""


def black_hole(path: PathRun) -> None:
    """From now on the router drops every TCP segment of the family, both ways, silently."""
    path.topo.black_hole(v6=path.family == socket.AF_INET6)
    path.lab.note("router: DROP every TCP segment in both directions from here on")


def wait_for_error(sock: AppSocket, what: str) -> None:
    """Block in recv() until the kernel reports the connection dead (the error is recorded, not raised)."""
    try:
        data = sock.recv(4096, what)
    except OSError:
        return
    raise AssertionError(f"recv() returned {data!r} while waiting for {what}")


def _expect(
    path: PathRun, conn: Connected, cause: CauseId, outcome: Outcome, rst_senders: tuple[str, ...]
) -> None:
    # Final states only where the capture can show them: the client's own RST closes it on the wire; a kernel
    # that gives up silently leaves no trace of its CLOSED state.
    final = {Side.ORIG: TcpState.CLOSED} if rst_senders else {}
    # Only the client's link sees what the client sends: the router drops everything before the server's.
    declare_rst_views(path.lab, client=list(rst_senders), server=[])
    path.lab.expect(ConnectionTruth(conn.orig, conn.resp, cause, outcome, rst_senders, final))


class KeepaliveTimeout(PathScenario):
    name = "keepalive_timeout.black_hole"
    cause = CauseId.KEEPALIVE_TIMEOUT
    duration_s = 4.0
    summary = "an idle connection with short keep-alive timers loses its path; probes go unanswered, then RST"

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family) as path:
            conn = path.connected_pair(lab.port())
            client = conn.client
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1, "SO_KEEPALIVE=1")
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S, "TCP_KEEPIDLE=1")
            client.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S, "TCP_KEEPINTVL=1"
            )
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES, "TCP_KEEPCNT=2")
            path.exchange(conn, "keepalive")
            black_hole(path)
            wait_for_error(client, "keep-alive verdict")  # ETIMEDOUT after idle + probes
            client.close()
            # The client's RST dies at the router: only the client's capture and tracepoint show it.
            _expect(path, conn, CauseId.KEEPALIVE_TIMEOUT, Outcome.RESET, ("orig",))


class RetransmissionTimeout(PathScenario):
    """Data sent into a black hole; the sender gives up by TCP_USER_TIMEOUT or by ``tcp_retries2``."""

    cause = CauseId.RETRANSMISSION_TIMEOUT
    duration_s = 3.5

    def __init__(self, limit: str) -> None:
        self.limit = limit
        self.name = f"retransmission_timeout.{limit}"
        self.summary = {
            "user_timeout": f"request into a black hole; TCP_USER_TIMEOUT={USER_TIMEOUT_MS} ms ends it",
            "retries2": f"request into a black hole; tcp_retries2={RETRIES2} (client namespace) ends it",
        }[limit]

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family) as path:
            conn = path.connected_pair(lab.port())
            if self.limit == "user_timeout":
                conn.client.setsockopt(
                    socket.IPPROTO_TCP,
                    TCP_USER_TIMEOUT,
                    USER_TIMEOUT_MS,
                    f"TCP_USER_TIMEOUT={USER_TIMEOUT_MS}",
                )
            else:
                lab.set_sysctl(path.topo.client.netns, "net.ipv4.tcp_retries2", str(RETRIES2), restore=False)
            path.exchange(conn, "before")
            black_hole(path)
            conn.client.sendall(lab.payload(lab.size(100, 400), "lost-request"))
            wait_for_error(conn.client, "the retransmission verdict")  # ETIMEDOUT
            conn.client.close()
            _expect(path, conn, CauseId.RETRANSMISSION_TIMEOUT, Outcome.TIMEOUT, ())


class IdleStateDropped(PathScenario):
    name = "idle_state_dropped.conntrack_expiry"
    cause = CauseId.IDLE_STATE_DROPPED
    duration_s = 6.0
    summary = (
        f"the router's conntrack forgets the connection after {IDLE_TIMEOUT_S} s idle and drops its packets"
    )

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family) as path:
            path.topo.expire_idle_connections(IDLE_TIMEOUT_S, Verdict.DROP, v6=family == socket.AF_INET6)
            lab.note(
                f"router: conntrack established timeout {IDLE_TIMEOUT_S} s, tcp_loose=0, INVALID -> DROP"
            )
            conn = path.connected_pair(lab.port())
            conn.client.setsockopt(
                socket.IPPROTO_TCP, TCP_USER_TIMEOUT, USER_TIMEOUT_MS, f"TCP_USER_TIMEOUT={USER_TIMEOUT_MS}"
            )
            path.exchange(conn, "before-idle")
            lab.pause(IDLE_TIMEOUT_S + 0.6, IDLE_TIMEOUT_S + 1.0)
            conn.client.sendall(lab.payload(lab.size(100, 400), "after-idle-request"))
            wait_for_error(conn.client, "the retransmission verdict")  # ETIMEDOUT
            conn.client.close()
            _expect(path, conn, CauseId.IDLE_STATE_DROPPED, Outcome.TIMEOUT, ())


register(KeepaliveTimeout())
register(RetransmissionTimeout("user_timeout"))
register(RetransmissionTimeout("retries2"))
register(IdleStateDropped())
