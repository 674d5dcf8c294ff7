"""Rules for connections that failed around the handshake: refused, unreachable, unanswered, overflowing,
aborted, and listeners that went away with connections still in their accept queue."""

from __future__ import annotations

import itertools

from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts, ResetFacts, Seg
from whyreset.diagnose.finding import EvidenceItem
from whyreset.diagnose.rules.common import (
    NS_PER_S,
    SILENT,
    Candidate,
    clamp,
    describe_rst,
    describe_trigger,
    forgery,
    is_active_shape,
    ms,
    seg_item,
    victim_view_for_reset,
    who,
)
from whyreset.diagnose.symptoms import AppView, Errno, Operation, errno_for_icmp
from whyreset.diagnose.vantage import Vantage
from whyreset.ids import CauseId, Side
from whyreset.model import endpoint_text

ICMP_UNREACHABLE = {4: 3, 6: 1}
"""ICMP type of "destination unreachable" per IP version."""
SYN_RETRY_WAIT_NS = 3 * NS_PER_S
"""A lone SYN followed by this much capture without a retransmission: the client stopped trying (Linux resends
the first SYN after 1 s)."""


def _synacks(f: Facts) -> list[Seg]:
    return [s for s in f.resp.segs if s.syn and s.has_ack]


def _handshake_ack(f: Facts) -> Seg | None:
    synacks = _synacks(f)
    if not synacks:
        return None
    return next((s for s in f.orig.segs if s.index > synacks[0].index and s.has_ack and not s.syn and not s.rst), None)


def refused(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """SYN answered by RST+ACK acknowledging it: no listener (NO_SOCKET), or a firewall REJECT with
    tcp-reset."""
    reset = f.ending_reset
    syn = f.orig.syn
    if reset is None or syn is None or reset.seg.side is not Side.RESP or _synacks(f):
        return None
    if not reset.seg.has_ack or reset.seg.rel_ack != syn.rel_seq + 1:
        return None
    server = (f.conn.resp_h, f.conn.resp_p)
    evidence = [seg_item(f, syn, f"SYN from {who(f, Side.ORIG)}"), describe_rst(f, reset)]
    score = 0.9
    actor: Side | None = Side.RESP
    summary = f"{endpoint_text(f.conn.resp_h, f.conn.resp_p)} refused the connection: nothing listened on the port"
    check = forgery(f, ctx, v, reset)
    if check.score >= 0.4:
        actor = None
        summary = (
            f"a firewall on the path refused the connection to {endpoint_text(f.conn.resp_h, f.conn.resp_p)} "
            "(REJECT --reject-with tcp-reset): the RST does not look like the host's own"
        )
        evidence.extend(check.items)
    if ctx.listened(server):
        evidence.append(
            EvidenceItem(
                f"the same port answered {len(ctx.listening[server])} handshake(s) elsewhere in "
                "the capture: the listener was restarting, crashed, or a rule rejected this "
                "client"
            )
        )
    view = AppView(Errno.ECONNREFUSED, Operation.CONNECT, "RST accepted in SYN_SENT: connect() fails at once")
    return Candidate(
        CauseId.REFUSED,
        score,
        actor,
        summary,
        tuple(evidence),
        {Side.ORIG: view},
        "the server host's `ss -ltn` shows whether anything listens on the port; a server-side "
        "capture shows whether the RST left the host or a firewall",
    )


def icmp_unreachable(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """An ICMP destination unreachable quoting the connection's segments (a REJECT without a reset)."""
    errors = [e for e in ctx.icmp_for(f.conn) if ICMP_UNREACHABLE.get(e.ip_version) == e.icmp_type]
    if not errors:
        return None
    first = errors[0]
    established = bool(_synacks(f))
    reporter = "the server host itself" if first.reporter == f.conn.resp_h else f"router/firewall {first.reporter}"
    errno = errno_for_icmp(first.ip_version, first.icmp_type, first.icmp_code)
    sport = first.quoted_sport if first.quoted_sport is not None else "?"
    unported = " (the input shows no source port: matched by addresses, port and time)" if sport == "?" else ""
    evidence = [
        EvidenceItem(
            f"ICMP{'v6' if first.ip_version == 6 else ''} type {first.icmp_type} code "
            f"{first.icmp_code} from {first.reporter} (TTL {first.ttl}) quoting "
            f"{endpoint_text(first.quoted_src, sport)} > {endpoint_text(first.quoted_dst, first.quoted_dport)}"
            f"{unported}",
            frame=first.frame,
            ts_ns=first.ts_ns,
            data={"type": first.icmp_type, "code": first.icmp_code},
        )
    ]
    if len(errors) > 1:
        evidence.append(EvidenceItem(f"{len(errors)} such ICMP errors in all"))
    if not established:
        view = AppView(errno, Operation.CONNECT, f"connect() fails with {errno.value} (icmp_err_convert)")
        score = 0.9
    else:
        view = AppView(
            Errno.ETIMEDOUT,
            Operation.READ,
            "on an established connection ICMP errors are soft: the "
            "kernel keeps retransmitting and finally reports ETIMEDOUT (or the soft error)",
        )
        score = 0.7
    summary = f"{reporter} answered with ICMP destination unreachable (code {first.icmp_code}) instead of the TCP peer"
    return Candidate(
        CauseId.ICMP_UNREACHABLE,
        score,
        None,
        summary,
        tuple(evidence),
        {Side.ORIG: view},
        "the reporter's address says whether the host (port unreachable / host firewall) or a router "
        "rejected the packet",
    )


def syn_unanswered(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """SYNs retransmitted with nothing coming back: host down, packets filtered, or SYN/accept queue full."""
    syns = [s for s in f.orig.segs if s.syn and not s.has_ack]
    if not syns or f.resp.segs or f.conn.established:
        return None
    capture_after = ctx.capture_end_ns(f.conn) - syns[-1].ts_ns
    if len(syns) >= 2:
        score = 0.85
        gaps = [b.ts_ns - a.ts_ns for a, b in itertools.pairwise(syns)]
        pattern = ", ".join(ms(g) for g in gaps)
        evidence = [
            seg_item(
                f,
                syns[0],
                f"SYN sent {len(syns)} times, intervals {pattern} (Linux: exponential "
                "backoff from 1 s, or linear 1 s with tcp_syn_linear_timeouts), never answered",
            )
        ]
    elif capture_after >= SYN_RETRY_WAIT_NS:
        score = 0.6
        evidence = [
            seg_item(
                f,
                syns[0],
                f"one SYN, then {ms(capture_after)} of capture with no answer and no "
                "retransmission (the client gave up early, or the capture misses the rest)",
            )
        ]
    else:
        return None
    server = (f.conn.resp_h, f.conn.resp_p)
    if ctx.listened(server):
        evidence.append(
            EvidenceItem(
                f"{endpoint_text(f.conn.resp_h, f.conn.resp_p)} answered other handshakes in the capture: "
                "the host is up and listening, so SYNs were dropped (SYN or accept queue "
                "full, or a filter for this client)"
            )
        )
    if v.near is Side.RESP:
        evidence.append(
            EvidenceItem(
                "the capture is next to the server: the SYNs reached its host, which dropped "
                "them (firewall DROP, or a full SYN/accept queue)"
            )
        )
    view = AppView(
        Errno.ETIMEDOUT,
        Operation.CONNECT,
        "connect() times out (kernel ETIMEDOUT after tcp_syn_retries, or the application's own connect timeout first)",
    )
    summary = f"nothing answered the SYNs to {endpoint_text(f.conn.resp_h, f.conn.resp_p)}"
    return Candidate(
        CauseId.SYN_UNANSWERED,
        score,
        None,
        summary,
        tuple(evidence),
        {Side.ORIG: view},
        "a capture next to the server shows whether the SYNs arrive; ListenOverflows/ListenDrops in "
        "/proc/net/netstat on the server tell a full queue",
    )


def backlog_overflow(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """The listener's accept queue was full: the handshake's final ACK was dropped (SYN-ACK retransmitted
    although the client ACKed), or answered by a reset with tcp_abort_on_overflow=1."""
    synacks = _synacks(f)
    ack = _handshake_ack(f)
    if ack is None:
        return _syn_drop_overflow(f, ctx, v)
    retransmitted = [s for s in synacks if s.index > ack.index]
    if retransmitted:
        return _dropped_final_ack(f, v, ack, retransmitted)
    return _abort_on_overflow(f, ack)


def _syn_drop_overflow(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    syns = [s for s in f.orig.segs if s.syn and not s.has_ack]
    server = (f.conn.resp_h, f.conn.resp_p)
    if len(syns) < 2 or f.resp.segs or not ctx.listened(server):
        return None
    evidence = (
        seg_item(
            f,
            syns[0],
            "SYNs unanswered while the port accepted other handshakes in the capture: "
            "a listener drops SYNs while its accept queue is full",
        ),
    )
    view = AppView(Errno.ETIMEDOUT, Operation.CONNECT, "connect() is slow (SYN retransmitted) or times out")
    return Candidate(
        CauseId.BACKLOG_OVERFLOW,
        0.5,
        Side.RESP,
        "the listener dropped the SYNs (queue full)",
        evidence,
        {Side.ORIG: view},
        "ListenOverflows/ListenDrops on the server, `ss -ltn` Recv-Q against Send-Q (the backlog)",
    )


def _dropped_final_ack(f: Facts, v: Vantage, ack: Seg, retransmitted: list[Seg]) -> Candidate:
    evidence = [
        seg_item(f, ack, f"the client completed the handshake (ACK from {who(f, Side.ORIG)})"),
        seg_item(
            f,
            retransmitted[0],
            f"yet the server retransmitted its SYN-ACK {len(retransmitted)} time(s) after "
            "it: the listener never turned the ACK into an accepted connection",
        ),
    ]
    client_retx = [s for s in f.orig.data if s.index > ack.index]
    if len(client_retx) >= 2:
        evidence.append(seg_item(f, client_retx[0], "the client's first data went unacknowledged meanwhile"))
    score = 0.75
    if v.can_see_sender(Side.RESP):
        score = 0.85
        evidence.append(EvidenceItem("the capture is next to the server: the ACK reached its host"))
    view = AppView(
        Errno.ETIMEDOUT,
        Operation.READ,
        "connect() succeeded, but the first request is slow (waits for the accept queue to drain) or times out",
    )
    return Candidate(
        CauseId.BACKLOG_OVERFLOW,
        score,
        Side.RESP,
        "the server's accept queue was full: it dropped the client's handshake ACK and retransmitted its SYN-ACK",
        tuple(evidence),
        {
            Side.ORIG: view,
            Side.RESP: AppView(None, None, "nothing: accept() never returned this connection while the queue was full"),
        },
        "ListenOverflows in /proc/net/netstat on the server; a capture next to the server rules out "
        "the ACK being lost on the way",
    )


def _abort_on_overflow(f: Facts, ack: Seg) -> Candidate | None:
    reset = f.ending_reset
    if reset is None or reset.seg.side is not Side.RESP or f.resp.data or f.resp.fin is not None:
        return None
    trigger = reset.trigger
    if trigger is None or not reset.answers_trigger or reset.seg.has_ack:
        return None
    first_data = f.orig.data[0] if f.orig.data else None
    answered = {ack.index} | ({first_data.index} if first_data is not None else set())
    if trigger.index not in answered:
        return None  # the reset must answer the handshake ACK itself or the client's first data
    evidence = [seg_item(f, ack, "handshake completed by the client"), describe_rst(f, reset)]
    if (item := describe_trigger(f, reset)) is not None:
        evidence.append(item)
    victim = victim_view_for_reset(reset, f.orig)
    return Candidate(
        CauseId.BACKLOG_OVERFLOW,
        0.7,
        Side.RESP,
        "the server's accept queue was full and "
        "tcp_abort_on_overflow=1 made the listener reset the completed handshake",
        tuple(evidence),
        {Side.ORIG: victim},
        "net.ipv4.tcp_abort_on_overflow on the server; ListenOverflows counter",
    )


def handshake_aborted(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """The SYN sender reset instead of completing the handshake (connect timeout fired, scanner, or its socket
    was gone when the SYN-ACK arrived)."""
    reset = f.ending_reset or (f.resets[0] if f.resets else None)
    synacks = _synacks(f)
    server_gave_up = reset is None or reset.seg.side is Side.RESP
    if f.orig.syn is not None and len(synacks) >= 2 and _handshake_ack(f) is None and server_gave_up:
        return _synack_unanswered(f, synacks, reset)
    if reset is None or reset.seg.side is not Side.ORIG or not synacks or f.orig.syn is None:
        return None
    final_ack = _handshake_ack(f)
    if final_ack is not None and final_ack.index < reset.seg.index:
        return None
    synack = synacks[0]
    if synack.rel_ack != f.orig.syn.rel_seq + 1:
        return None  # a SYN-ACK for another SYN: invalid_segment
    delay = synack.ts_ns - f.orig.syn.ts_ns
    syn_count = sum(1 for s in f.orig.segs if s.syn)
    evidence = [
        seg_item(f, synack, f"SYN-ACK arrived {ms(delay)} after the first SYN ({syn_count} SYN(s) sent)"),
        describe_rst(f, reset),
    ]
    why = "its connect timeout had fired or it only probed the port (SYN scan)"
    if syn_count >= 2 or delay >= NS_PER_S:
        why = "the SYN-ACK came late: its connect timeout had most likely fired and the socket was gone"
    summary = f"the client {endpoint_text(f.conn.orig_h, f.conn.orig_p)} abandoned the handshake: {why}"
    view = AppView(
        Errno.ETIMEDOUT,
        Operation.CONNECT,
        "its connect() had already failed (timeout) or it was a "
        "scanner; the server's half-open entry is simply dropped",
    )
    return Candidate(
        CauseId.HANDSHAKE_ABORTED,
        0.85,
        Side.ORIG,
        summary,
        tuple(evidence),
        {Side.ORIG: view, Side.RESP: AppView(None, None, "nothing: accept() never sees the connection")},
        "the client's connect timeout compared with the SYN-ACK delay",
    )


def _synack_unanswered(f: Facts, synacks: list[Seg], reset: ResetFacts | None) -> Candidate:
    """The client never completed the handshake: the server's SYN-ACKs went unanswered until it gave up."""
    evidence: list[EvidenceItem] = [
        seg_item(
            f,
            synacks[0],
            f"SYN-ACK sent {len(synacks)} times over {ms(synacks[-1].ts_ns - synacks[0].ts_ns)}"
            f", never acknowledged by {who(f, Side.ORIG)}",
        ),
    ]
    if reset is not None:
        evidence.append(describe_rst(f, reset))
    summary = (
        f"the client {endpoint_text(f.conn.orig_h, f.conn.orig_p)} never completed the handshake (it gave up, or a "
        "filter on "
        "its side dropped the SYN-ACKs); the server"
        + (" finally reset the half-open connection" if reset is not None else " gave up")
    )
    view = AppView(
        Errno.ETIMEDOUT,
        Operation.CONNECT,
        "connect() times out: the SYN-ACKs never reached it, or it had already given up",
    )
    return Candidate(
        CauseId.HANDSHAKE_ABORTED,
        0.6,
        Side.ORIG,
        summary,
        tuple(evidence),
        {Side.ORIG: view, Side.RESP: AppView(None, None, "nothing: accept() never sees the connection")},
        "a capture next to the client shows whether the SYN-ACKs arrive; its firewall's drop counters",
    )


def listener_closed(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """Handshaken connections still in the accept queue reset together when the listener closes."""
    reset = f.ending_reset
    if reset is None or reset.seg.side is not Side.RESP or not f.conn.established:
        return None
    if f.resp.data or f.resp.fin is not None or not _synacks(f):
        return None
    server = (f.conn.resp_h, f.conn.resp_p)
    burst = ctx.reset_burst(server, reset.seg.ts_ns, f.conn.uid)
    refused_after = ctx.refusals_after(server, reset.seg.ts_ns)
    accepted_after = ctx.synacks_after(server, reset.seg.ts_ns)
    score = 0.3 if is_active_shape(reset) else 0.15
    if burst:
        score += 0.3 if len(burst) == 1 else 0.4
    if refused_after:
        score += 0.25 if accepted_after == 0 else 0.1

    def evidence() -> tuple[EvidenceItem, ...]:  # deferred: written only when it is the primary cause
        items = [describe_rst(f, reset), EvidenceItem("the server sent no data and no FIN after the handshake")]
        if burst:
            items.append(
                EvidenceItem(
                    f"{len(burst)} other connection(s) to {server[0]}:{server[1]} were reset the "
                    "same way within 2 ms: the accept queue was flushed at once"
                )
            )
        if refused_after:
            items.append(EvidenceItem(f"later SYNs to the port were refused ({refused_after}): the listener was gone"))
        return tuple(items)

    summary = (
        f"the server's listening socket on port {f.conn.resp_p} closed while this connection waited in its "
        "accept queue; the kernel reset it"
    )
    return Candidate(
        CauseId.LISTENER_CLOSED,
        clamp(score),
        Side.RESP,
        summary,
        evidence,
        {Side.ORIG: victim_view_for_reset(reset, f.orig), Side.RESP: SILENT},
        "several connections reset at the same instant, and refusals afterwards, mark a listener "
        "that closed (restart, crash, deploy)",
    )
