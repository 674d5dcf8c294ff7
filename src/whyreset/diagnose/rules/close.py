"""Rules for connections an application ended: resets instead of FINs, writes after close, keep-alive races,
sockets never closed, and resets that lost nothing.

The kernel facts behind them (net/ipv4/tcp.c, __tcp_close and tcp_rcv_state_process):

* ``close()`` with unread bytes in the receive queue sends RST+ACK instead of FIN (RFC 2525 2.17;
  TCPAbortOnClose, reason TCP_ABORT_ON_CLOSE) and throws away whatever was still queued for sending;
* ``close()`` with SO_LINGER {1, 0} does the same on purpose (TCP_STATE); ``connect(AF_UNSPEC)`` and ``ss -K``
  too;
* after a full ``close()`` (not ``shutdown(SHUT_WR)``) the socket refuses new data: data arriving in
  FIN_WAIT1/2 is answered by a reply reset (TCPAbortOnData, TCP_ABORT_ON_DATA; TCP_TIMEWAIT_SOCKET once it is
  a timewait socket);
* the peer that received the FIN sits in CLOSE_WAIT until its application closes: an RST accepted there gives
  EPIPE on the next write, and its reads return EOF.
"""

from __future__ import annotations

from dataclasses import dataclass

from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts, ResetFacts, Seg, SideFacts, memoized
from whyreset.diagnose.finding import EvidenceItem, fast_init
from whyreset.diagnose.rules.common import (
    NS_PER_MS,
    NS_PER_S,
    SILENT,
    Candidate,
    capture_gap_item,
    clamp,
    closing_reset,
    describe_rst,
    describe_trigger,
    forgery,
    is_active_shape,
    is_idle_gap,
    ms,
    seg_item,
    unacked_at,
    victim_view_for_reset,
    who,
)
from whyreset.diagnose.symptoms import AppView, Errno, Operation
from whyreset.diagnose.vantage import Vantage
from whyreset.ids import CauseId, Side

RACE_WINDOW_MIN_NS = 50 * NS_PER_MS
"""A request written this soon after the FIN reached the client was written before its application could have
noticed the FIN (a pool handing out a connection it had not yet read EOF on)."""
RACE_WINDOW_RTTS = 4
LEAK_MIN_NS = 20 * NS_PER_MS
"""Applications close within a scheduling delay of reading EOF: their FIN usually rides on the ACK of the
peer's FIN. Tens of milliseconds without it (and hundreds of RTTs) are already suspicious; confidence grows
with the duration the capture shows."""
LEAK_RTTS = 200
DELAYED_ACK_NS = 30 * NS_PER_MS
"""Linux's minimum delayed-ACK timeout is 40 ms (TCP_DELACK_MIN); other stacks use up to 200 ms."""


@fast_init
@dataclass(frozen=True, slots=True)
class AbortShape:
    """An RST sent by an endpoint that never sent a FIN first, with what was pending at that moment."""

    reset: ResetFacts
    closer: SideFacts
    peer: SideFacts
    received: int
    """Peer bytes the closer had received (acknowledged): all of them may still sit unread in its socket."""
    unread: int
    """Of those, the bytes received after the closer last sent data (nothing it sent can be a reply to
    them)."""
    closer_unacked: int
    """Bytes the closer had sent that the peer had not acknowledged (in flight, discarded)."""
    peer_unacked: int
    """Bytes the peer had sent that the closer had not acknowledged when it reset."""
    peer_awaits_reply: bool
    """The peer spoke last: its last data came after the closer's last data, so it was waiting for an
    answer."""
    window_drop: tuple[int, int] | None = None
    """(widest, last) receive window the closer advertised after the handshake, when its last advertisement
    before the RST was narrower: received bytes were sitting unread in its socket at that moment."""

    @property
    def wire_identical(self) -> bool:
        """Nothing on the wire separates close() with unread data, an SO_LINGER {1, 0} close and an abort after
        reading everything: the same RST+ACK (seq = SND.NXT, ack = RCV.NXT, tcp_send_active_reset), no FIN,
        none of the closer's own data discarded in flight, and no shrunken window betraying unread bytes."""
        return is_active_shape(self.reset) and self.closer_unacked == 0 and self.window_drop is None


def _abort_shape(f: Facts) -> AbortShape | None:
    """The ending RST as an abort by an endpoint that sent no FIN (shared by three rules: computed once)."""
    return memoized(f, "abort_shape", _measure_abort, f)


def _measure_abort(f: Facts) -> AbortShape | None:
    reset = f.ending_reset
    if reset is None:
        return None
    closer = f.side(reset.seg.side)
    peer = f.side(reset.seg.side.other)
    if closer.fin is not None and closer.fin.index < reset.seg.index:
        return None
    if not f.conn.established:
        return None
    before = reset.seg.index
    last_own = closer.last_data
    answered_up_to = last_own.rel_ack if last_own is not None and last_own.rel_ack is not None else None
    if answered_up_to is None:
        handshake_ack = next((s.rel_ack for s in closer.segs if s.rel_ack is not None and not s.rst), None)
        answered_up_to = handshake_ack if handshake_ack is not None else 1
    received = reset.seg.rel_ack if reset.seg.rel_ack is not None else closer.highest_ack_before(before)
    peer_data_before = [s for s in peer.data if s.index < before]
    peer_end, peer_start = _payload_span(peer_data_before)
    seen_data = bool(peer_data_before)
    if reset.capture_gap is not None and received is not None and received > max(peer_end, 1) and peer.isn_seen:
        # The RST acknowledges peer data the capture missed: the closer did receive it (its ACK is the proof).
        peer_end = received
        peer_start = peer_start if seen_data else 1
        seen_data = True
    unread = max(0, min(received or 0, peer_end) - answered_up_to) if seen_data else 0
    received_total = max(0, min(received or 0, peer_end) - peer_start) if seen_data else 0
    last_peer = peer_data_before[-1] if peer_data_before else None
    # The peer waits for an answer when it spoke last and it is the side that opened the exchange (its data
    # are requests, the closer's are responses): a TCP capture cannot read the protocol, the first speaker is
    # the usual requester.
    first_data = next((s for s in f.segs if s.length > 0 and not s.rst), None)
    peer_requests = first_data is not None and first_data.side is peer.side
    awaits = (
        last_peer is not None
        and (last_own is None or last_peer.index > last_own.index)
        and (peer_requests or last_own is None)
    )
    peer_unacked = max(0, peer_end - (received or 0)) if seen_data else 0
    return AbortShape(
        reset=reset,
        closer=closer,
        peer=peer,
        received=received_total,
        unread=unread,
        closer_unacked=unacked_at(closer, peer, before),
        peer_unacked=peer_unacked,
        peer_awaits_reply=awaits,
        window_drop=_window_drop(closer, before) if received_total else None,
    )


def _payload_span(data: list[Seg]) -> tuple[int, int]:
    """(highest end, lowest start) of the payload of ``data`` ((0, 0) when empty), in one loop."""
    if not data:
        return 0, 0
    end, start = data[0].rel_seq + data[0].length, data[0].rel_seq
    for seg in data:
        if seg.rel_seq + seg.length > end:
            end = seg.rel_seq + seg.length
        if seg.rel_seq < start:
            start = seg.rel_seq
    return end, start


def _window_drop(closer: SideFacts, before: int) -> tuple[int, int] | None:
    """(widest, last) window field of the closer's segments after its SYN and before the RST, when the last is
    narrower. The window is the free space of its receive buffer (tcp_select_window), so it narrows when
    received data is not read; the scale factor is fixed after the handshake, so raw fields compare. A window
    that narrows only by rounding (fewer bytes than one scaled unit) does not show: no drop is no proof of the
    opposite."""
    windows = [s.window for s in closer.segs if s.index < before and not s.syn and not s.rst]
    if len(windows) < 2:
        return None
    widest, last = max(windows), windows[-1]
    return (widest, last) if last < widest else None


WIRE_IDENTICAL_NOTE = (
    "the capture cannot tell this from an SO_LINGER {1, 0} close (abortive_close) or an abort after the "
    "application had read everything (benign_reset): all three send the same RST+ACK at SND.NXT / RCV.NXT with no "
    "FIN; what would tell: the closer's code (does it read everything before close()? set SO_LINGER {1, 0}?), "
    "its TcpExt counters (close() with unread data counts TCPAbortOnClose, a zero-linger close TCPAbortOnData), "
    "or the kernel's reset reason in `whyreset live` (TCP_ABORT_ON_CLOSE vs TCP_STATE)"
)
"""Said by the primary finding when `AbortShape.wire_identical` holds (Linux __tcp_close: unread data ->
tcp_send_active_reset, TCP_ABORT_ON_CLOSE; zero linger -> tcp_disconnect -> tcp_send_active_reset, TCP_STATE)."""


def _pending_text(shape: AbortShape) -> str:
    return (
        f"at the RST: {shape.received} peer byte(s) received by the closer, {shape.unread} of them after "
        "it last "
        "sent data, "
        f"{shape.closer_unacked} of its own byte(s) unacknowledged, {shape.peer_unacked} peer byte(s) not "
        "yet "
        f"acknowledged; the peer {'was' if shape.peer_awaits_reply else 'was not'} waiting for a reply"
    )


def _shape_factor(shape: AbortShape) -> float:
    """Active closes send RST+ACK on their own; a reply-shaped RST points to a socket that was already
    gone."""
    return 1.0 if is_active_shape(shape.reset) else 0.4


def _abort_evidence(f: Facts, shape: AbortShape) -> tuple[EvidenceItem, ...]:
    """The evidence of an abort (the same for the three rules that read the shape: built once)."""
    return memoized(f, "abort_evidence", _describe_abort, f, shape)


def _describe_abort(f: Facts, shape: AbortShape) -> tuple[EvidenceItem, ...]:
    items = [
        describe_rst(f, shape.reset),
        EvidenceItem(
            _pending_text(shape),
            data={
                "unread": shape.unread,
                "closer_unacked": shape.closer_unacked,
                "peer_unacked": shape.peer_unacked,
            },
        ),
    ]
    if shape.closer.fin is None:
        items.append(EvidenceItem(f"no FIN from {who(f, shape.closer.side)} before its RST"))
    if shape.window_drop is not None:
        widest, last = shape.window_drop
        items.append(
            EvidenceItem(
                f"{who(f, shape.closer.side)} advertised a receive window of {last} (window field) before its RST, "
                f"down from {widest}: received bytes were sitting unread in its socket at that moment",
                data={"window_widest": widest, "window_last": last},
            )
        )
    if (gap := capture_gap_item(f, shape.reset)) is not None:
        items.append(gap)
    return tuple(items)


def close_with_unread_data(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """close() while received data was still unread: RST instead of FIN."""
    shape = _abort_shape(f)
    if shape is None or shape.received == 0:
        return None
    # The wire cannot show whether the application read what it received; an RST without FIN after receiving
    # data is what the kernel does on close() with unread data, so this is the default reading. A peer still
    # waiting for its answer makes it likelier; the closer's own data in flight points to a deliberate abort
    # instead.
    # A peer still waiting for its answer, or data still arriving when the closer reset, make unread bytes
    # likelier; a window that narrowed as data arrived shows them. Without such a sign the capture cannot tell
    # this from an SO_LINGER 0 abort or an abort after reading everything (see AbortShape.wire_identical), and
    # the confidence stays just above theirs.
    score = 0.45 + (0.05 if shape.peer_awaits_reply else 0.0) + (0.05 if shape.peer_unacked else 0.0)
    if shape.window_drop is not None:
        score += 0.15 if shape.window_drop[1] == 0 else 0.1
    score -= forgery(f, ctx, v, shape.reset).score * 0.5
    closer = shape.closer.side
    summary = (
        f"the {'server' if closer is Side.RESP else 'client'} application closed its socket with "
        f"received data still unread ({shape.received} byte(s) received), so its kernel sent RST instead "
        "of FIN"
    )
    if shape.wire_identical:
        summary += "; " + WIRE_IDENTICAL_NOTE
    return Candidate(
        CauseId.CLOSE_WITH_UNREAD_DATA,
        clamp(score * _shape_factor(shape)),
        closer,
        summary,
        lambda: _abort_evidence(f, shape),  # deferred: written only when it is the primary cause
        {shape.peer.side: victim_view_for_reset(shape.reset, shape.peer), closer: SILENT},
        "TCPAbortOnClose in the closer's /proc/net/netstat (or reset reason TCP_ABORT_ON_CLOSE); "
        "does the application read the whole request before closing?",
    )


def _orphan_abort(f: Facts) -> tuple[ResetFacts, Seg] | None:
    """(RST, the closer's FIN) when the closer sent FIN, the peer acknowledged it without closing or sending
    more, and the closer then reset: its orphan gave up (TCP_LINGER2 < 0, TCP_ABORT_ON_LINGER)."""
    reset = f.ending_reset
    if reset is None:
        return None
    closer = f.side(reset.seg.side)
    peer = f.side(reset.seg.side.other)
    fin = closer.fin
    if fin is None or fin.index > reset.seg.index:
        return None
    if peer.fin is not None and peer.fin.index < reset.seg.index:
        return None
    if any(s.index > fin.index and s.index < reset.seg.index for s in peer.data):
        return None
    acked = peer.highest_ack_before(reset.seg.index)
    if acked is None or acked < fin.end_seq:
        return None
    return reset, fin


def abortive_close(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """A deliberate abort: SO_LINGER {1, 0}, connect(AF_UNSPEC), ss -K, or an expired linger timeout."""
    orphan = _orphan_abort(f)
    if orphan is not None:
        return _linger_abort(f, ctx, v, *orphan)
    shape = _abort_shape(f)
    if shape is None:
        return None
    if shape.closer_unacked > 0:
        score = 0.6  # its own data still in flight was thrown away: the signature of a deliberate abort
    elif shape.wire_identical:
        # Same packets as close() with unread data; a request left unanswered fits a deliberate abort (an
        # abort after a complete exchange is benign_reset).
        score = 0.42 if shape.peer_awaits_reply else 0.38
    elif shape.peer_awaits_reply or shape.peer_unacked > 0:
        score = 0.45
    else:
        score = 0.35
    score -= forgery(f, ctx, v, shape.reset).score * 0.5
    closer = shape.closer.side
    summary = (
        f"the {'server' if closer is Side.RESP else 'client'} aborted the connection (RST without FIN: "
        "SO_LINGER 0 close or a forced abort)"
        + (f", discarding {shape.closer_unacked} unacknowledged byte(s)" if shape.closer_unacked else "")
    )
    return Candidate(
        CauseId.ABORTIVE_CLOSE,
        clamp(score * _shape_factor(shape)),
        closer,
        summary,
        lambda: _abort_evidence(f, shape),  # deferred: written only when it is the primary cause
        {shape.peer.side: victim_view_for_reset(shape.reset, shape.peer), closer: SILENT},
        "look for setsockopt(SO_LINGER, {1, 0}) in the closer, or reset reason TCP_STATE / "
        "TCPAbortOnLinger; unread data (TCPAbortOnClose) would make it close_with_unread_data",
    )


def _linger_abort(f: Facts, ctx: DiagnosisContext, v: Vantage, reset: ResetFacts, fin: Seg) -> Candidate:
    closer, peer = reset.seg.side, reset.seg.side.other
    wait = reset.seg.ts_ns - fin.ts_ns
    evidence = [
        seg_item(f, fin, f"FIN from {who(f, closer)}: its application closed"),
        EvidenceItem(f"{who(f, peer)} acknowledged the FIN but had not closed its side (no FIN, no more data)"),
        describe_rst(f, reset),
        EvidenceItem(
            f"{ms(wait)} after its FIN the closer reset instead of waiting for the peer's FIN: an orphan "
            "whose "
            "FIN_WAIT2 time was cut (TCP_LINGER2 < 0) or a linger timeout"
        ),
    ]
    score = 0.6 - forgery(f, ctx, v, reset).score * 0.5
    summary = (
        f"{who(f, closer)} aborted its half-closed connection: after its FIN it reset instead of waiting for "
        f"{who(f, peer)} to close"
    )
    return Candidate(
        CauseId.ABORTIVE_CLOSE,
        clamp(score),
        closer,
        summary,
        tuple(evidence),
        {peer: victim_view_for_reset(reset, f.side(peer), after_sender_fin=True), closer: SILENT},
        "TCPAbortOnLinger on the closer's host (reset reason TCP_ABORT_ON_LINGER); TCP_LINGER2 set on its socket",
    )


NOTHING_PENDING = EvidenceItem(
    "every byte in both directions was acknowledged and no request was pending when the RST was sent"
)


def benign_reset(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """An RST after everything was delivered and acknowledged: nothing lost."""
    reset = f.ending_reset
    if reset is None or not f.conn.established:
        return None
    closer = f.side(reset.seg.side)
    peer = f.side(reset.seg.side.other)
    before = reset.seg.index
    if closer.fin is not None and any(s.index > closer.fin.index for s in peer.data if s.index < before):
        return None  # data after the closer's FIN: data_after_close
    shape = _abort_shape(f)
    closer_unacked = unacked_at(closer, peer, before)
    peer_unacked = shape.peer_unacked if shape is not None else unacked_at(peer, closer, before)
    awaits = shape.peer_awaits_reply if shape is not None else False
    if closer_unacked or peer_unacked or awaits:
        return None
    both_closed = closer.fin is not None and peer.fin is not None
    peer_done = peer.fin is not None and peer.fin.index < before
    if shape is not None and shape.received == 0 and is_active_shape(reset):
        score = 0.65  # nothing was ever received: nothing can have been unread (probe, health check)
    elif both_closed or peer_done:
        score = 0.6  # the peer had finished (its FIN) and got everything: the RST ends what was already over
    elif _orphan_abort(f) is not None:
        score = 0.4  # the peer could still have sent: abortive_close is likelier
    elif is_active_shape(reset):
        # A complete exchange; unread leftovers (close_with_unread_data) cannot be excluded, and when the
        # packets are those of an abort with unread data (AbortShape.wire_identical) just below it.
        score = 0.42 if shape is not None and shape.wire_identical else 0.45
    else:
        score = 0.3
    score -= forgery(f, ctx, v, reset).score * 0.6
    exchanged = f.orig.data or f.resp.data or reset.capture_gap is not None
    what = "after the exchange completed" if exchanged else "right after the handshake, with no data (a probe)"

    def evidence() -> tuple[EvidenceItem, ...]:  # deferred: written only when it is the primary cause
        return (describe_rst(f, reset), NOTHING_PENDING)

    summary = f"{who(f, closer.side)} reset the connection {what}: nothing was lost"
    peer_view = AppView(
        None,
        None,
        "usually nothing (it already had everything); a read after the last byte returns ECONNRESET instead of EOF",
    )
    return Candidate(
        CauseId.BENIGN_RESET,
        clamp(score),
        closer.side,
        summary,
        evidence,
        {peer.side: peer_view, closer.side: SILENT},
        "harmless unless the peer logs the ECONNRESET; the closer uses SO_LINGER 0 (load balancer "
        "nolinger, health checks) or aborts after reading",
    )


def _data_after_fin(f: Facts, reset: ResetFacts) -> tuple[Seg, Seg] | None:
    """(closer's FIN, first peer data the closed socket received after closing), before the RST.

    Next to the closer the data is captured after its FIN; next to the writer, data that crossed the FIN in
    flight is captured *before* the FIN, which then does not acknowledge it."""
    closer = f.side(reset.seg.side)
    peer = f.side(reset.seg.side.other)
    fin = closer.fin
    if fin is None or fin.index > reset.seg.index:
        return None
    fin_covers = fin.rel_ack if fin.rel_ack is not None else 0
    late = [
        s for s in peer.data if s.index < reset.seg.index and (s.index > fin.index or s.rel_seq + s.length > fin_covers)
    ]
    if not late:
        return None
    first = late[0]
    # A half-closed socket (shutdown(SHUT_WR)) would acknowledge that data and carry on: the closer must not
    # have.
    accepted = closer.highest_ack_before(reset.seg.index)
    if accepted is not None and accepted >= first.rel_seq + first.length and reset.seg.rel_seq != first.rel_ack:
        return None
    return fin, first


def _delivery_view(reset: ResetFacts, peer: SideFacts) -> AppView:
    return victim_view_for_reset(reset, peer, after_sender_fin=True)


def data_after_close(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """Data reached a side whose application had closed (FIN sent): its kernel answered with RST."""
    reset = closing_reset(f)
    if reset is None:
        return None
    found = _data_after_fin(f, reset)
    if found is None:
        return None
    fin, data = found
    delay = data.ts_ns - fin.ts_ns
    closer, peer = reset.seg.side, reset.seg.side.other
    score = 0.7 if reset.answers_trigger or not reset.seg.has_ack else 0.55

    def evidence() -> tuple[EvidenceItem, ...]:  # deferred: written only when it is the primary cause
        items = [
            seg_item(f, fin, f"FIN from {who(f, closer)}: its application closed"),
            seg_item(f, data, f"{data.length} byte(s) of data from {who(f, peer)} {ms(delay)} later"),
            describe_rst(f, reset),
        ]
        if delay >= LEAK_MIN_NS:
            items.append(
                EvidenceItem(f"the peer kept writing {ms(delay)} after the FIN: it sat in CLOSE_WAIT without closing")
            )
        return tuple(items)

    summary = (
        f"{who(f, peer)} wrote after {who(f, closer)} had closed the connection (FIN); the closed side's "
        "kernel answered with RST"
    )
    return Candidate(
        CauseId.DATA_AFTER_CLOSE,
        clamp(score),
        closer,
        summary,
        evidence,
        {peer: _delivery_view(reset, f.side(peer)), closer: SILENT},
        "TCPAbortOnData (or reset reason TCP_ABORT_ON_DATA / TCP_TIMEWAIT_SOCKET) on the closer's "
        "host; the writer should stop writing when it reads EOF",
    )


def keepalive_race(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """A server closed an idle keep-alive connection just as the client sent a new request on it."""
    reset = closing_reset(f)
    found = None if reset is None else _data_after_fin(f, reset)
    if reset is None or found is None:
        return _race_with_fin_in_flight(f, ctx, v)
    fin, data = found
    closer, peer = reset.seg.side, reset.seg.side.other
    # The silence before the close: before the FIN, or before the request when that crossed it and was
    # captured first (next to the client).
    first = fin if fin.index < data.index else data
    idle = f.gap_before(first)
    crossed = data.rel_ack is not None and data.rel_ack < fin.end_seq
    delay = data.ts_ns - fin.ts_ns
    window = max(RACE_WINDOW_MIN_NS, RACE_WINDOW_RTTS * (f.rtt_ns or 0))
    idle_close = is_idle_gap(f, idle) and unacked_at(f.side(peer), f.side(closer), first.index) == 0
    if not crossed and delay > window:
        return None
    peer_fin = f.side(peer).fin
    if peer_fin is not None and peer_fin.index < reset.seg.index and not crossed:
        return None  # the peer answered the FIN with its own goodbye and FIN (e.g. TLS close_notify): no reuse
    # Servers time out idle keep-alive connections; a client closing while the server pushes is rarer.
    role = 0.1 if closer is Side.RESP else -0.15
    # Without an idle period before the FIN this is a server closing mid-conversation (data_after_close), not
    # a keep-alive timeout racing a reused connection.
    score = 0.4 + (0.35 if idle_close else 0.0) + (0.1 if crossed else 0.0) + role

    def evidence() -> tuple[EvidenceItem, ...]:  # deferred: written only when it is the primary cause
        return (
            seg_item(f, fin, f"FIN from {who(f, closer)} after {ms(idle)} of idle"),
            seg_item(
                f,
                data,
                f"request from {who(f, peer)} "
                + (
                    "sent before the FIN reached it (its ACK does not cover the FIN)"
                    if crossed
                    else f"only {ms(delay)} after the FIN: before its application could notice it"
                ),
            ),
            describe_rst(f, reset),
        )

    summary = (
        f"keep-alive race: {who(f, closer)} closed the idle connection after {ms(idle)} just as "
        f"{who(f, peer)} reused it for a new request"
    )
    views = {peer: _delivery_view(reset, f.side(peer)), closer: SILENT}
    return Candidate(
        CauseId.KEEPALIVE_RACE,
        clamp(score),
        closer,
        summary,
        evidence,
        views,
        "compare the client's idle timeout with the server's keep-alive timeout: the client's must be shorter",
    )


RACE_IN_FLIGHT_SCORE = 0.45
"""Below a lost-state peer's reading of the same packets: without the server's side, both explain them."""


def _race_with_fin_in_flight(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """The race seen from the client's side when the request crossed the server's FIN in flight.

    The server's idle timeout closed the socket; its FIN was still on the path when the reused connection's
    request reached the server, whose kernel answered with a reply-shaped RST (TCP_ABORT_ON_DATA). The FIN reaches
    the client after the RST, or never: this capture shows only idle, request, RST, exactly like a server that lost
    the connection (peer_lost_state). Only a capture next to the server, or its keep-alive timeout against the idle
    time here, decides.
    """
    reset = f.ending_reset
    if reset is None or not f.conn.established:
        return None
    closer, peer = reset.seg.side, reset.seg.side.other
    trigger = reset.trigger
    if closer is not Side.RESP or f.side(closer).fin is not None or not f.side(closer).data:
        return None  # servers time out keep-alive connections they have already answered on
    if trigger is None or trigger.rst or not trigger.length or trigger.side is not peer:
        return None
    if not (reset.answers_trigger and not reset.seg.has_ack) or not is_idle_gap(f, reset.idle_before_ns):
        return None
    score = RACE_IN_FLIGHT_SCORE - forgery(f, ctx, v, reset).score * 0.8
    evidence = (
        seg_item(f, trigger, f"request from {who(f, peer)} after {ms(reset.idle_before_ns)} of idle"),
        describe_rst(f, reset),
        EvidenceItem(
            "no FIN from the server in this capture: if its keep-alive timeout had just fired, the FIN was still "
            "in flight when the request crossed it, and the server's kernel answered the request with this RST"
        ),
    )
    summary = (
        f"keep-alive race with the FIN in flight: {who(f, closer)} may have timed out the idle connection just as "
        f"{who(f, peer)} reused it, its FIN crossing the request on the path"
    )
    return Candidate(
        CauseId.KEEPALIVE_RACE,
        clamp(score),
        closer,
        summary,
        evidence,
        {peer: _delivery_view(reset, f.side(peer)), closer: SILENT},
        "a capture next to the server shows whether its FIN left before the request arrived (keep-alive race) or "
        f"it had no socket at all; compare the idle time here ({ms(reset.idle_before_ns)}) with the server's "
        "keep-alive timeout",
    )


def close_wait_leak(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """A side received the FIN and acknowledged it, but its application never closed the socket."""
    for closer in (f.orig, f.resp):
        found = _leak(f, ctx, closer)
        if found is not None:
            return found
    return None


def _leak(f: Facts, ctx: DiagnosisContext, closer: SideFacts) -> Candidate | None:
    fin = closer.fin
    if fin is None:
        return None
    leaker = f.side(closer.side.other)
    if leaker.fin is not None:
        return None
    ack = next(
        (s for s in leaker.segs if s.index > fin.index and s.rel_ack is not None and s.rel_ack >= fin.end_seq),
        None,
    )
    if ack is None:
        return None
    last_from_leaker = leaker.segs[-1]
    end = ctx.capture_end_ns(f.conn)
    silent = end - last_from_leaker.ts_ns
    threshold = max(LEAK_MIN_NS, LEAK_RTTS * f.rtt_ns) if f.rtt_ns else NS_PER_S
    reset_later = f.ending_reset
    waited = (reset_later.seg.ts_ns - fin.ts_ns) if reset_later is not None else end - fin.ts_ns
    if waited < threshold or (reset_later is not None and waited < NS_PER_S):
        return None  # too short to tell, or a reset ended it before a leak could show
    score = 0.4 + min(0.45, 0.1 * (waited / NS_PER_S) ** 0.5)
    if reset_later is not None:
        score -= 0.2  # the reset is the ending; the leak is the background
    evidence = [
        seg_item(f, fin, f"FIN from {who(f, closer.side)}"),
        seg_item(f, ack, f"acknowledged by {who(f, leaker.side)}: it entered CLOSE_WAIT"),
        EvidenceItem(
            f"no FIN from {who(f, leaker.side)} for the next {ms(waited)} "
            f"(silent for the last {ms(silent)} of the capture)"
        ),
    ]
    if not ack.fin and ack.length == 0 and ack.ts_ns - fin.ts_ns >= DELAYED_ACK_NS:
        evidence.append(
            seg_item(
                f,
                ack,
                f"its ACK of the FIN went out alone {ms(ack.ts_ns - fin.ts_ns)} later (delayed ACK): had the "
                "application closed on EOF, its FIN would have ridden on that ACK",
            )
        )
    if waited < NS_PER_S:
        evidence.append(
            EvidenceItem(
                f"the capture ends {ms(end - fin.ts_ns)} after the FIN: a longer capture would make this certain"
            )
        )
    summary = (
        f"{who(f, leaker.side)} read EOF (or never read) but its application never closed the socket: "
        "it sits in CLOSE_WAIT"
    )
    views = {
        leaker.side: AppView(
            Errno.EOF,
            Operation.READ,
            "reads return EOF; the socket stays open (file descriptor "
            "leak); a later write gets EPIPE once the peer resets",
        ),
        closer.side: AppView(None, None, "nothing: its socket waits in FIN_WAIT2 until tcp_fin_timeout"),
    }
    return Candidate(
        CauseId.CLOSE_WAIT_LEAK,
        clamp(score),
        leaker.side,
        summary,
        tuple(evidence),
        views,
        "`ss -tan state close-wait` on the leaking host grows over time",
    )


def trigger_text(f: Facts, reset: ResetFacts) -> EvidenceItem | None:
    return describe_trigger(f, reset)
