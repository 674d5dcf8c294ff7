"""Rules for resets whose sender did not know the connection, or was not the endpoint at all: a peer that lost
its state, a middlebox that forged the RST, an RST the receiver could not accept, and replies to invalid
segments."""

from __future__ import annotations

from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts, ResetFacts, Seg
from whyreset.diagnose.finding import EvidenceItem
from whyreset.diagnose.rules.common import (
    SILENT,
    Candidate,
    clamp,
    describe_rst,
    describe_trigger,
    forgery,
    how_to_tell_sender,
    is_idle_gap,
    ms,
    seg_item,
    victim_view_for_reset,
    who,
)
from whyreset.diagnose.symptoms import AppView
from whyreset.diagnose.vantage import Vantage
from whyreset.ids import CauseId, Side


def _no_fin_before(f: Facts, reset: ResetFacts) -> bool:
    fin = f.side(reset.seg.side).fin
    return fin is None or fin.index > reset.seg.index


def _answers_first_segment(reset: ResetFacts) -> bool:
    """The RST is a reply reset (no ACK bit, seq = the segment's ACK) to the very first captured segment,
    itself an ordinary mid-connection segment: the capture began when a host with no socket for it got it."""
    trigger = reset.trigger
    return (
        trigger is not None
        and trigger.index == 0
        and not trigger.syn
        and trigger.has_ack
        and reset.answers_trigger
        and not reset.seg.has_ack
    )


RACE_LOOKALIKE_PENALTY = 0.15


def peer_lost_state(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """The peer no longer knew the connection (crash, reboot, VIP moved, NAT rebinding): it answers the next
    segment with a reply reset (NO_SOCKET), without any FIN before."""
    reset = f.ending_reset
    if reset is None or not _no_fin_before(f, reset):
        return None
    trigger = reset.trigger
    if trigger is None or trigger.rst:
        return None
    from_scratch = _answers_first_segment(reset)
    if not f.conn.established and not from_scratch:
        return None
    check = forgery(f, ctx, v, reset)
    reply_without_ack = reset.answers_trigger and not reset.seg.has_ack
    idle = is_idle_gap(f, reset.idle_before_ns)
    score = 0.35 + (0.3 if reply_without_ack else 0.15 if reset.answers_trigger else 0.0)
    if idle:
        score += 0.1
    if trigger.length:
        score += 0.05
    sender_quiet = all(s.index < trigger.index or s.rst for s in f.side(reset.seg.side).segs)
    if not sender_quiet:
        score -= 0.2
    score -= check.score * 0.8
    if reply_without_ack and idle and sender_quiet and reset.seg.side is Side.RESP and f.resp.data and trigger.length:
        # A server whose keep-alive timeout fired as this request crossed its FIN on the path sends the very same
        # reply reset (keepalive_race): this capture alone cannot prefer a lost state over that.
        score -= RACE_LOOKALIKE_PENALTY
    if from_scratch:
        # Whether the sender lost the connection or never had it (a stray or crafted segment: invalid_segment)
        # is not in this capture: stay just below that reading, which names the segment as what went wrong.
        score = min(score, 0.45)

    def evidence() -> tuple[EvidenceItem, ...]:
        # Written only if this cause is the finding's primary one (usually it is an alternative).
        items = [describe_rst(f, reset)]
        if (item := describe_trigger(f, reset)) is not None:
            items.append(item)
        if reply_without_ack:
            items.append(
                EvidenceItem(
                    "a reply reset with no ACK bit: the answer of a stack that had no socket for "
                    "this 4-tuple (RFC 9293 3.10.7.1), not of a live socket"
                )
            )
        if idle:
            items.append(
                EvidenceItem(
                    f"the connection had been idle {ms(reset.idle_before_ns)} before: time for "
                    "the peer to restart, fail over or lose its NAT entry"
                )
            )
        if from_scratch:
            items.append(
                seg_item(
                    f,
                    trigger,
                    "the capture starts with this ordinary segment of an established connection (ACK, no SYN), "
                    "and the RST answers it at once: the RST's sender held no socket for the 4-tuple any more "
                    "(a capture on a host that had rebooted or lost the connection looks exactly like this)",
                )
            )
        return (*items, *check.consistent)

    sender = reset.seg.side
    summary = (
        f"{who(f, sender)} no longer knew the connection (process or host restarted, VIP moved or NAT "
        "entry lost) and answered the next segment with RST"
    )
    return Candidate(
        CauseId.PEER_LOST_STATE,
        clamp(score),
        sender,
        summary,
        evidence,
        {
            sender.other: victim_view_for_reset(reset, f.side(sender.other)),
            sender: LOST_STATE_VIEW,
        },
        how_to_tell_sender(v, sender) + "; uptime / restarts of the peer at that time",
    )


LOST_STATE_VIEW = AppView(None, None, "nothing: the process or host that owned the connection was gone")


def middlebox_reset(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """An RST forged by a device on the path (LB/firewall/NAT idle timeout, IPS)."""
    ending = f.ending_reset or (f.resets[0] if f.resets else None)
    if ending is None:
        return None
    # The most suspicious RST of the connection: a forged one may also come after the real ending (an IPS
    # resetting a connection the endpoints already tore down).
    checks = [(forgery(f, ctx, v, r), r) for r in f.resets]
    check, reset = max(checks, key=lambda pair: (pair[0].score, pair[1] is ending))
    if check.score < 0.2:
        return None
    score = 0.25 + 0.65 * check.score
    if reset is not ending:
        score *= 0.6  # a device took part, but something else ended the connection first
    evidence = [describe_rst(f, reset), *check.items]
    if is_idle_gap(f, reset.idle_before_ns):
        score += 0.1
        evidence.append(
            EvidenceItem(f"after {ms(reset.idle_before_ns)} of idle: typical of a session table idle timeout")
        )
    if reset.info.payload_text:
        evidence.append(seg_item(f, reset.seg, f"RST payload: {reset.info.payload_text!r}"))
    sender = reset.seg.side
    summary = (
        f"a device on the path forged an RST in the name of {who(f, sender)} (TTL/timing do not match that endpoint)"
    )
    victims = {
        side: victim_view_for_reset(r, f.side(side)) for r in f.resets if r.accepted for side in (r.seg.side.other,)
    }
    if not victims:
        victims = {sender.other: victim_view_for_reset(reset, f.side(sender.other))}
    return Candidate(
        CauseId.MIDDLEBOX_RESET,
        clamp(score),
        None,
        summary,
        tuple(evidence),
        victims,
        how_to_tell_sender(v, sender) + "; the middlebox's idle timeout and logs",
    )


def injected_reset(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """An RST the receiver could not accept (out of window, or in window but not exact: RFC 5961 challenge
    ACK)."""
    ending = f.ending_reset
    rejected = [r for r in f.unaccepted_resets if ending is None or r.seg.index < ending.seg.index]
    if not rejected:
        return None
    reset = rejected[0]
    receiver = reset.seg.side.other
    after = [s for s in f.segs_after(reset.seg.index) if s.side is receiver and not s.rst]
    evidence: list[EvidenceItem] = [describe_rst(f, reset)]
    score = 0.45
    if after:
        score += 0.2
        challenge = after[0]
        kind = "challenge ACK / continued" if challenge.length == 0 else "continued sending data"
        evidence.append(
            seg_item(
                f,
                challenge,
                f"the receiver {kind} {ms(challenge.ts_ns - reset.seg.ts_ns)} later: it did not accept the RST",
            )
        )
    check = forgery(f, ctx, v, reset)
    score += 0.3 * check.score
    evidence.extend(check.items)
    if reset.answers_trigger and check.score < 0.2:
        # A reply reset from the endpoint itself (its TTL) that missed RCV.NXT, typically because it crossed a
        # FIN or more data in flight: not an injection. The ending reset tells the real story.
        score -= 0.3
        evidence.append(
            EvidenceItem(
                "but it is shaped as the endpoint's own reply to a segment and carries its TTL: more "
                "likely a genuine RST that crossed other segments in flight"
            )
        )
    if len(rejected) > 1:
        evidence.append(
            EvidenceItem(
                f"{len(rejected)} unacceptable RSTs in all (a spoofer guessing sequence numbers sends several)"
            )
        )
    summary = (
        f"an RST in the name of {who(f, reset.seg.side)} did not fit the receiver's window "
        f"({reset.info.acceptability.value}): spoofed or from a broken middlebox; ignored"
    )
    return Candidate(
        CauseId.INJECTED_RESET,
        clamp(score),
        None,
        summary,
        tuple(evidence),
        {
            receiver: AppView(
                None,
                None,
                "nothing, if its stack follows RFC 5961 (Linux does): the RST "
                "is dropped or answered with a challenge ACK",
            )
        },
        "the RST's sequence number against the receiver's RCV.NXT; its TTL against the sender's",
    )


def _misfit(f: Facts, reset: ResetFacts, trig: Seg) -> str | None:
    """Why the trigger did not fit the RST sender's connection, or None when it did."""
    sender = f.side(reset.seg.side)
    if trig.syn and trig.has_ack and sender.syn is not None and trig.rel_ack != sender.syn.rel_seq + 1:
        return (
            f"the SYN-ACK acknowledges {trig.rel_ack} but the SYN was at {sender.syn.rel_seq}: it answers an "
            "older SYN (old duplicate, RFC 9293 figure 9)"
        )
    if trig.rel_ack is not None and sender.isn_seen:
        sent = sender.snd_nxt_before(trig.ts_ns, trig.index)
        if trig.rel_ack > sent > 0:
            return f"it acknowledges {trig.rel_ack} but {who(f, sender.side)} had only sent up to {sent}"
    if trig.syn and not trig.has_ack and f.conn.established and trig.index > 2:
        return "a SYN on an already established 4-tuple"
    if not trig.syn and trig.index == 0 and not f.conn.established:
        return (
            "a segment out of the blue: no handshake and no earlier traffic of this connection in the "
            "capture, and "
            "the receiver had no connection for it (a stale or stray segment)"
        )
    return None


def invalid_segment(f: Facts, ctx: DiagnosisContext, v: Vantage) -> Candidate | None:
    """A reply reset to a segment that did not fit the connection (bad ACK, old duplicate SYN, PAWS)."""
    reset = f.ending_reset or (f.resets[0] if f.resets else None)
    if reset is None or reset.trigger is None or not reset.answers_trigger:
        return None
    why = _misfit(f, reset, reset.trigger)
    if why is None:
        return None
    evidence = [seg_item(f, reset.trigger, why), describe_rst(f, reset)]
    sender = reset.seg.side
    score = 0.5 if reset.trigger.index == 0 and not reset.trigger.syn else 0.8
    summary = f"{who(f, sender)} rejected a segment that did not fit the connection: {why}"
    return Candidate(
        CauseId.INVALID_SEGMENT,
        score,
        sender,
        summary,
        tuple(evidence),
        {sender.other: victim_view_for_reset(reset, f.side(sender.other)), sender: SILENT},
        "the offending segment's ACK against what the RST's sender had sent",
    )
