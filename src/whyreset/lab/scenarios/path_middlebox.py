"""RSTs that neither endpoint sent: a middlebox resets idle connections (``middlebox_reset``), or someone on
the path sends RSTs the receiver must not accept (``injected_reset``).

Forged segments come from the router's namespace and carry the router's own TTL, which differs from both
endpoints' (``whyreset.lab.netns`` chooses it from the seed): the tell-tale a capture shows. Two ways to
forge:

* netfilter: conntrack forgets the idle connection, the next segment is INVALID and ``REJECT --reject-with
  tcp-reset`` answers its sender (the other end hears nothing until it sends, and then gets one too);
* a raw socket (``whyreset.lab.inject``): a sniffer on the router follows the connection's sequence numbers,
and the
  injector sends an RST toward each end with an exact, in-window or out-of-window sequence number (RFC 5961).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.inject import (
    ETH_P_ALL,
    Endpoint,
    FlowState,
    RawInjector,
    RstPlacement,
    SeqSniffer,
    bind_packet_socket,
    forge_rst,
)
from whyreset.lab.netns import Verdict
from whyreset.lab.scenario import ConnectionTruth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios.path_base import Connected, PathRun, PathScenario, declare_rst_views, open_path
from whyreset.lab.scenarios.path_reboot import read_reset

if TYPE_CHECKING:
    from whyreset.lab.runner import LabContext

IDLE_TIMEOUT_S = 2
"""The middlebox's idle timeout (conntrack established timeout on the router)."""
SETTLE_S = (0.15, 0.3)
"""Pause that lets the last ACKs of an exchange reach the sniffer before forging from its state."""


def _endpoints(conn: Connected) -> tuple[Endpoint, Endpoint]:
    def parse(text: str) -> Endpoint:
        addr, _, port = text.rpartition(":")
        return Endpoint(addr.strip("[]"), int(port))

    return parse(conn.orig), parse(conn.resp)


class Forger:
    """The router's sniffer and raw injector for one scenario (closed by the lab's cleanup)."""

    def __init__(self, path: PathRun) -> None:
        topo = path.topo
        packet_socket = topo.socket(topo.router, socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        self.sniffer = SeqSniffer(bind_packet_socket(packet_socket, topo.router.iface))
        raw = topo.socket(topo.router, path.family, socket.SOCK_RAW, socket.IPPROTO_RAW)
        v6 = path.family == socket.AF_INET6
        self.injector = RawInjector(None if v6 else raw, raw if v6 else None)
        self.ttl = topo.router.ttl
        self.lab = path.lab
        self.sniffer.__enter__()
        path.lab.defer(self.close)

    def flow(self, conn: Connected) -> FlowState:
        client, server = _endpoints(conn)
        self.sniffer.wait_for(client, server)
        self.lab.pause(*SETTLE_S)
        flow = self.sniffer.table.get(client, server)
        assert flow is not None
        return flow

    def rst(self, flow: FlowState, toward: Endpoint, placement: RstPlacement, offset: int = 1) -> None:
        segment = forge_rst(flow, toward, placement, ttl=self.ttl, offset=offset)
        self.injector.send(segment)
        self.lab.note(
            f"forged RST toward {toward} from {segment.src}: {placement} seq {segment.seq} "
            f"(receiver's RCV.NXT {flow.receiver_next(toward)}), TTL {segment.ttl}"
        )

    def close(self) -> None:
        self.sniffer.close()
        self.injector.close()


def _expect(
    lab: LabContext, conn: Connected, cause: CauseId, outcome: Outcome, rst_senders: tuple[str, ...]
) -> None:
    final = {Side.ORIG: TcpState.CLOSED, Side.RESP: TcpState.CLOSED} if outcome is Outcome.RESET else {}
    lab.expect(ConnectionTruth(conn.orig, conn.resp, cause, outcome, rst_senders, final))


class IdleReject(PathScenario):
    name = "middlebox_reset.idle_reject"
    cause = CauseId.MIDDLEBOX_RESET
    duration_s = 3.5
    summary = (
        f"the router forgets the connection after {IDLE_TIMEOUT_S} s idle and resets each end that speaks"
    )

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family, router_capture=True) as path:
            path.topo.expire_idle_connections(IDLE_TIMEOUT_S, Verdict.TCP_RESET, v6=family == socket.AF_INET6)
            lab.note(
                f"router: conntrack established timeout {IDLE_TIMEOUT_S} s, tcp_loose=0, INVALID -> tcp-reset"
            )
            conn = path.connected_pair(lab.port())
            path.exchange(conn, "before-idle")
            lab.pause(IDLE_TIMEOUT_S + 0.5, IDLE_TIMEOUT_S + 0.8)
            conn.client.sendall(lab.payload(lab.size(60, 300), "after-idle-request"))
            read_reset(conn.client, "the answer after the idle period")
            # The server still believes in the connection; its next segment (here its FIN) is reset too.
            conn.accepted.close("server closes its idle connection")
            lab.pause(0.1, 0.2)
            # Each end sees the RST forged toward it; the router's capture (client side) only the client's.
            declare_rst_views(lab, client=["path"], server=["path"], router=["path"])
            _expect(lab, conn, CauseId.MIDDLEBOX_RESET, Outcome.RESET, ("path", "path"))


class ForgedBoth(PathScenario):
    name = "middlebox_reset.forged_both"
    cause = CauseId.MIDDLEBOX_RESET
    duration_s = 1.5
    summary = "a middlebox's idle timer fires: a raw socket on the router sends an exact RST toward both ends"

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family, router_capture=True) as path:
            forger = Forger(path)
            conn = path.connected_pair(lab.port())
            path.exchange(conn, "before-idle")
            flow = forger.flow(conn)
            lab.pause(0.3, 0.6)
            client, server = _endpoints(conn)
            forger.rst(flow, client, RstPlacement.EXACT)
            forger.rst(flow, server, RstPlacement.EXACT)
            read_reset(conn.client, "the client's next read")
            read_reset(conn.accepted, "the server's next read")
            declare_rst_views(lab, client=["path"], server=["path"], router=["path"])
            _expect(lab, conn, CauseId.MIDDLEBOX_RESET, Outcome.RESET, ("path", "path"))


class BlindRst(PathScenario):
    name = "injected_reset.blind_rst"
    cause = CauseId.INJECTED_RESET
    duration_s = 1.5
    summary = (
        "RSTs forged toward the client out of window (ignored) and in window (challenge ACK); it survives"
    )

    def run(self, lab: LabContext) -> None:
        family = lab.rng.choice((socket.AF_INET, socket.AF_INET6))
        with open_path(lab, family, router_capture=True) as path:
            forger = Forger(path)
            conn = path.connected_pair(lab.port())
            path.exchange(conn, "before")
            flow = forger.flow(conn)
            client, _server = _endpoints(conn)
            forger.rst(flow, client, RstPlacement.OUT_OF_WINDOW, offset=lab.size(1, 1 << 20))
            lab.pause(0.1, 0.2)
            forger.rst(flow, client, RstPlacement.IN_WINDOW, offset=lab.size(1, 1000))
            lab.pause(0.1, 0.2)
            path.exchange(conn, "after")  # the connection survived both
            conn.client.close("clean close after the injected RSTs")
            if conn.accepted.recv(4096, "the client's FIN"):
                raise AssertionError("data after the client's close")
            conn.accepted.close("clean close")
            lab.pause(0.1, 0.2)
            declare_rst_views(lab, client=["path", "path"], server=[], router=["path", "path"])
            _expect(lab, conn, CauseId.INJECTED_RESET, Outcome.CLEAN, ("path", "path"))


register(IdleReject())
register(ForgedBoth())
register(BlindRst())
