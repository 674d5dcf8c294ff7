"""Handshake failures on loopback: refused, accept-queue overflow (drop and abort), a handshake aborted by its
initiator, and an ACK that fits no connection (invalid_segment)."""

from __future__ import annotations

import contextlib
import socket

from whyreset.ids import CauseId, Outcome, Side, TcpState
from whyreset.lab.rawtcp import ACK, SYN, Segment, send_segment
from whyreset.lab.scenario import Scenario
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios._loopback import LoopbackScenario, Stage, endpoint


class Refused(LoopbackScenario):
    """connect() to a port nobody listens on."""

    name = "refused"
    cause = CauseId.REFUSED
    summary = "connect() to a closed port: SYN answered by RST+ACK, ECONNREFUSED"

    def exercise(self, stage: Stage) -> None:
        client, local = stage.client_socket()
        with contextlib.suppress(ConnectionRefusedError):
            client.connect(stage.server_addr, stage.server_port)
        client.close()
        stage.expect(
            local, CauseId.REFUSED, Outcome.NOT_ESTABLISHED, ("resp",), TcpState.CLOSED, TcpState.CLOSED
        )


class BacklogOverflow(LoopbackScenario):
    """The accept queue is full when a client's handshake ACK (carrying its request) arrives.

    How it is made deterministic: the listener has backlog 0 and never accepts. The victim sets TCP_QUICKACK=0
    before connecting, so its kernel delays the handshake's final ACK (tcp_rcv_synsent_state_process: pingpong
    mode) and folds it into the first data segment. A second client completes its handshake in between and
    fills the queue. The victim's request then hits a full queue: dropped (SYN-ACK retransmitted, the client
    waits), or reset with ``tcp_abort_on_overflow=1``.
    """

    cause = CauseId.BACKLOG_OVERFLOW
    duration_s = 2.0

    def __init__(self, abort_on_overflow: bool) -> None:
        self.abort = abort_on_overflow
        self.name = "backlog_overflow.abort" if abort_on_overflow else "backlog_overflow.drop"
        self.summary = (
            "accept queue full, tcp_abort_on_overflow=1: the request draws an RST (INVALID_SYN)"
            if abort_on_overflow
            else "accept queue full, tcp_abort_on_overflow=0: the request is dropped, SYN-ACK retransmitted"
        )

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        lab.set_sysctl(stage.host.netns, "net.ipv4.tcp_abort_on_overflow", "1" if self.abort else "0")
        listener = stage.listen(backlog=0)
        victim, victim_local = stage.client_socket("client")
        victim.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0, "TCP_QUICKACK=0 (delays the handshake ACK)"
        )
        victim.connect(stage.server_addr, stage.server_port)
        filler, filler_local = stage.dial("client2")
        lab.pause(0.01, 0.05)
        victim.settimeout(lab.duration(1.2, 1.6))
        request = b"GET /%d HTTP/1.1\r\nHost: lab\r\n\r\n" % lab.size(1, 9999)
        victim.sendall(request, "request (carries the delayed handshake ACK)")
        with contextlib.suppress(OSError):
            victim.recv(4096)
        lab.note(lab.socket_table(stage.host))
        if self.abort:
            stage.expect(victim_local, CauseId.BACKLOG_OVERFLOW, Outcome.RESET, ("resp",), TcpState.CLOSED)
        else:
            # The server never created the connection: from the capture, the handshake never completed on its
            # side.
            stage.expect(
                victim_local,
                CauseId.BACKLOG_OVERFLOW,
                Outcome.NOT_ESTABLISHED,
                (),
                resp_state=TcpState.SYN_RECEIVED,
            )
        stage.expect(filler_local, None, Outcome.OPEN, (), TcpState.ESTABLISHED, TcpState.ESTABLISHED)
        del listener, filler


class HandshakeAborted(LoopbackScenario):
    """A half-open scan: a SYN from a raw socket; the initiator's kernel knows no such connection and
    resets."""

    name = "handshake_aborted.syn_scan"
    cause = CauseId.HANDSHAKE_ABORTED
    summary = "raw SYN, SYN-ACK, RST from the initiator (NO_SOCKET): a scanner or a client that gave up"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        port = lab.port()
        isn = lab.rng.getrandbits(32)
        ttl = lab.rng.randint(40, 250)
        send_segment(
            stage.host.netns,
            Segment(stage.client_addr, port, stage.server_addr, stage.server_port, isn, 0, SYN, ttl=ttl),
        )
        lab.record_app("scanner", Side.ORIG, "send_raw", "ok", note=f"SYN seq={isn}", nbytes=0)
        lab.pause(0.05, 0.1)
        listener.close()
        stage.expect(
            endpoint(stage.client_addr, port),
            CauseId.HANDSHAKE_ABORTED,
            Outcome.NOT_ESTABLISHED,
            ("orig",),
            TcpState.CLOSED,
        )


class AckToListener(LoopbackScenario):
    """An ACK for a connection the listener never saw (the server restarted, a stale flow): RST seq = its
    ACK."""

    name = "invalid_segment.ack_to_listener"
    cause = CauseId.INVALID_SEGMENT
    summary = "bare ACK to a listening port with no such connection: RST with seq = the offending ACK"

    def exercise(self, stage: Stage) -> None:
        lab = stage.lab
        listener = stage.listen()
        port = lab.port()
        seq, ack = lab.rng.getrandbits(32), lab.rng.getrandbits(32)
        payload = lab.payload(lab.size(20, 80), "stale")
        segment = Segment(
            stage.client_addr, port, stage.server_addr, stage.server_port, seq, ack, ACK, payload=payload
        )
        send_segment(stage.host.netns, segment)
        lab.record_app(
            "stale_client", Side.ORIG, "send_raw", "ok", note=f"ACK seq={seq} ack={ack}", nbytes=len(payload)
        )
        lab.pause(0.05, 0.1)
        listener.close()
        # No handshake on the wire: by the outcome table's definition the connection was never established.
        stage.expect(
            endpoint(stage.client_addr, port), CauseId.INVALID_SEGMENT, Outcome.NOT_ESTABLISHED, ("resp",)
        )


SCENARIOS: tuple[Scenario, ...] = (
    Refused(),
    BacklogOverflow(abort_on_overflow=False),
    BacklogOverflow(abort_on_overflow=True),
    HandshakeAborted(),
    AckToListener(),
)
for _scenario in SCENARIOS:
    register(_scenario)
