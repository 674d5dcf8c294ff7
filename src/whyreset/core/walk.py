"""The control-segment walk of one connection as a pure function of its *shape*, so it can be memoised.

A connection's control segments (SYN, FIN, RST, the ACKs that prove a SYN or FIN arrived, the row where a
mid-stream connection has seen data both ways) are reduced to a `Mark` each: who sent it, its flags, what it
proves and, for an RST, the RFC 5961 verdicts computed from the numbers beforehand. The walk through the two
endpoint machines of `tcpstate` depends on nothing else, so the many connections with the same shape (every
clean HTTP exchange looks alike) share one `WalkTemplate`; the builder then only stamps frames and timestamps
on it. Positions in a template are mark indices; ``on_reply`` events sit on the RST's challenge-ACK reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from whyreset.core.connection import EventKind, RstAcceptability
from whyreset.core.tcpstate import TRANSITIONS, Action, Input
from whyreset.ids import TcpState
from whyreset.model import ACK, FIN, RST, SYN

CACHE_LIMIT = 65_536
ACCEPTED = (RstAcceptability.EXACT, RstAcceptability.SYN_SENT_ACK_OK)
_SYNCHRONISED = (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.CLOSE_WAIT)
_OPENING = (TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.UNKNOWN)
_SYNCHRONISED_ANY = (
    TcpState.ESTABLISHED,
    TcpState.FIN_WAIT_1,
    TcpState.FIN_WAIT_2,
    TcpState.CLOSE_WAIT,
    TcpState.CLOSING,
    TcpState.LAST_ACK,
)


class RstFacts(NamedTuple):
    """What decides an RST's fate, computed from the numbers before the walk."""

    if_syn_sent: RstAcceptability
    """The verdict if the receiver is in SYN_SENT (does the RST acknowledge its SYN?)."""
    otherwise: RstAcceptability
    """The verdict against the receiver's RCV.NXT and window in any other state."""
    receiver_keeps_sending: bool
    """The receiver sends non-RST segments later (an UNKNOWN verdict then means the RST was not accepted)."""
    has_reply: bool
    """The receiver's next segment is a prompt pure ACK (a challenge ACK if the RST was in window)."""


class Mark(NamedTuple):
    """One control row of a connection, reduced to what the walk reads."""

    from_orig: bool
    flags: int
    """SYN/FIN/RST/ACK bits."""
    proves_syn: bool
    """This row acknowledges the peer's SYN (first such row)."""
    proves_fin: bool
    """This row acknowledges the peer's first FIN (first such row)."""
    both_ways: bool
    """Mid-stream: data has now flowed in both directions."""
    rst: RstFacts | None
    syn_reply: bool = False
    """For a SYN without ACK: the peer's next segment is a prompt pure ACK (a challenge ACK if it was
    synchronised, RFC 5961 4.2)."""
    accepts: bool = False
    """The sender, left in SYN_RECEIVED by a retransmitted SYN-ACK (its handshake ACK was lost or dropped),
    shows here that it did establish after all: it sends data or a FIN, or acknowledges the peer's data."""


class EventOp(NamedTuple):
    kind: EventKind
    mark: int
    on_reply: bool
    """The event sits on the reply to the RST at ``mark`` (a challenge ACK)."""
    detail: tuple[tuple[str, object], ...]


class ResetOp(NamedTuple):
    mark: int
    acceptability: RstAcceptability
    receiver_state: TcpState
    sender_state: TcpState


@dataclass(slots=True)
class WalkTemplate:
    """What the walk produced, in mark positions (shared by every connection of the same shape)."""

    timeline: dict[bool, list[tuple[TcpState, int]]]
    """Per side (True = originator): states entered after the initial one, with the mark that caused them."""
    events: list[EventOp] = field(default_factory=list)
    resets: list[ResetOp] = field(default_factory=list)
    accepted_rst_mark: int = -1
    fin_acked_mark: dict[bool, int] = field(default_factory=lambda: {True: -1, False: -1})
    reached_sync: dict[bool, bool] = field(default_factory=lambda: {True: False, False: False})
    syn_ack_mark: int = -1
    handshake_ack_mark: int = -1


_CACHE: dict[tuple[TcpState, TcpState, tuple[Mark, ...]], WalkTemplate] = {}


def walk(initial_orig: TcpState, initial_resp: TcpState, marks: tuple[Mark, ...]) -> WalkTemplate:
    """The (memoised) walk of a connection whose endpoints start in the given states."""
    key = (initial_orig, initial_resp, marks)
    template = _CACHE.get(key)
    if template is None:
        if len(_CACHE) >= CACHE_LIMIT:
            _CACHE.clear()
        template = _CACHE[key] = _Simulation(initial_orig, initial_resp).run(marks)
    return template


_CODED: dict[tuple[TcpState, TcpState, bytes, bytes | None], WalkTemplate] = {}

MARK_FROM_ORIG = 0x10
MARK_PROVES_SYN = 0x20
MARK_PROVES_FIN = 0x40
MARK_SYN_REPLY = 0x80


def mark_code(from_orig: bool, flags: int, proves_syn: bool, proves_fin: bool, syn_reply: bool) -> int:
    """A `Mark` without RST facts, both-ways or accepts flag, in one byte (`walk_coded`'s memo key; an RST
    mark's facts go in a second byte, `rst_code`).

    Bits: FIN 0x1, SYN 0x2, RST 0x4, ACK 0x8, then the constants above.
    """
    return (
        (flags & (FIN | SYN | RST))
        | ((flags & ACK) >> 1)
        | (MARK_FROM_ORIG if from_orig else 0)
        | (MARK_PROVES_SYN if proves_syn else 0)
        | (MARK_PROVES_FIN if proves_fin else 0)
        | (MARK_SYN_REPLY if syn_reply else 0)
    )


def marks_from_codes(codes: bytes) -> list[Mark]:
    """The `Mark`s that `mark_code` packed."""
    return [
        Mark(
            bool(code & MARK_FROM_ORIG),
            (code & (FIN | SYN | RST)) | ((code & 0x08) << 1),
            bool(code & MARK_PROVES_SYN),
            bool(code & MARK_PROVES_FIN),
            False,
            None,
            bool(code & MARK_SYN_REPLY),
        )
        for code in codes
    ]


RST_VERDICTS = tuple(RstAcceptability)
"""`RstFacts.otherwise` packed as its index here (bits 0-2 of an RST code)."""
RST_SYN_SENT_OK = 0x08
RST_RECEIVER_KEEPS_SENDING = 0x10
RST_HAS_REPLY = 0x20


def rst_code(facts: RstFacts) -> int:
    """`RstFacts` in one byte (the second memo key of `walk_coded`): bits 0-2 the index of ``otherwise`` in
    `RST_VERDICTS`, then the constants above (``if_syn_sent`` is SYN_SENT_ACK_OK or SYN_SENT_ACK_BAD)."""
    return (
        RST_VERDICTS.index(facts.otherwise)
        | (RST_SYN_SENT_OK if facts.if_syn_sent is RstAcceptability.SYN_SENT_ACK_OK else 0)
        | (RST_RECEIVER_KEEPS_SENDING if facts.receiver_keeps_sending else 0)
        | (RST_HAS_REPLY if facts.has_reply else 0)
    )


def _rst_facts(code: int) -> RstFacts:
    return RstFacts(
        RstAcceptability.SYN_SENT_ACK_OK if code & RST_SYN_SENT_OK else RstAcceptability.SYN_SENT_ACK_BAD,
        RST_VERDICTS[code & 0x07],
        bool(code & RST_RECEIVER_KEEPS_SENDING),
        bool(code & RST_HAS_REPLY),
    )


def marks_from_rst_codes(codes: bytes, rst_codes: bytes) -> list[Mark]:
    """The `Mark`s of a connection with RSTs: `mark_code` bytes, and for each RST mark its `rst_code` (the
    byte at the same position; ignored on other marks)."""
    marks = marks_from_codes(codes)
    for position, code in enumerate(codes):
        if code & RST:
            marks[position] = marks[position]._replace(rst=_rst_facts(rst_codes[position]))
    return marks


def walk_coded(
    initial_orig: TcpState, initial_resp: TcpState, codes: bytes, rst_codes: bytes | None = None
) -> WalkTemplate:
    """`walk` for a connection whose marks are packed by `mark_code`, with ``rst_codes`` (`rst_code` at each
    RST mark's position) when it has RSTs (no `Mark` objects made unless the shape is new)."""
    key = (initial_orig, initial_resp, codes, rst_codes)
    template = _CODED.get(key)
    if template is None:
        if len(_CODED) >= CACHE_LIMIT:
            _CODED.clear()
        marks = marks_from_codes(codes) if rst_codes is None else marks_from_rst_codes(codes, rst_codes)
        template = _CODED[key] = walk(initial_orig, initial_resp, tuple(marks))
    return template


class _Simulation:
    def __init__(self, initial_orig: TcpState, initial_resp: TcpState) -> None:
        self.state = {True: initial_orig, False: initial_resp}
        self.out = WalkTemplate(timeline={True: [], False: []})

    def run(self, marks: tuple[Mark, ...]) -> WalkTemplate:
        self.marks = marks
        self.fin_sent = {True: False, False: False}
        self.fin_received = {True: False, False: False}
        for index, mark in enumerate(marks):
            self._mark(index, mark)
        return self.out

    def _fin_arrived_before(self, index: int, sender: bool) -> bool:
        """``sender``'s FIN, sent before mark ``index`` (a segment from ``sender`` too), reached the peer first.

        The peer proves the FIN's arrival only later, by its ACK; if ``sender`` sent no FIN again in between, the
        copy that arrived left before this mark, and segments of one direction arrive in order (FIFO). So the
        peer processed the FIN before this mark: in a simultaneous close it went to CLOSING, not FIN_WAIT2.
        """
        if not self.fin_sent[sender] or self.fin_received[not sender]:
            return False
        for later in self.marks[index + 1 :]:
            if later.from_orig == sender and later.flags & FIN:
                return False  # resent: the earlier copies may all have been lost
            if later.from_orig != sender and later.proves_fin:
                return True
        return False

    def _feed(self, side: bool, event: Input, mark: int) -> Action:
        before = self.state[side]
        after, action = TRANSITIONS.get((before, event), (before, Action.UNEXPECTED))
        if after is not before:
            self.state[side] = after
            self.out.timeline[side].append((after, mark))
            if after in _SYNCHRONISED and before in _OPENING:
                self.out.reached_sync[side] = True
        return action

    def _event(self, kind: EventKind, mark: int, detail: dict[str, object] | None = None) -> None:
        self.out.events.append(EventOp(kind, mark, False, tuple((detail or {}).items())))

    def _mark(self, index: int, mark: Mark) -> None:
        side = mark.from_orig
        peer = not side
        if mark.both_ways:
            for endpoint in (True, False):
                if self.state[endpoint] is TcpState.UNKNOWN:
                    self._feed(endpoint, Input.DATA_BOTH_WAYS, index)
        if mark.proves_syn:
            if self.state[side] in (TcpState.SYN_SENT, TcpState.UNKNOWN):
                self._feed(side, Input.RECV_SYNACK, index)
            self._feed(side, Input.SEND_ACK_OF_SYN, index)
            self._feed(peer, Input.RECV_ACK_OF_SYN, index)
            if side and self.out.handshake_ack_mark < 0:
                self.out.handshake_ack_mark = index
                self._event(EventKind.HANDSHAKE_ACK, index)
        if mark.proves_fin:
            if self._fin_arrived_before(index, side):
                self._receive_fin(peer, index)
            if not self.fin_received[side]:
                self._receive_fin(side, index)
            self._feed(peer, Input.FIN_ACKED, index)
            self.out.fin_acked_mark[peer] = index
            self._event(EventKind.FIN_ACKED, index)
        if mark.accepts and self.state[side] is TcpState.SYN_RECEIVED:
            self._feed(side, Input.RECV_ACK_OF_SYN, index)
        flags = mark.flags
        if flags & SYN and not flags & RST:
            self._syn(index, side, flags, mark.syn_reply)
        if flags & FIN and not flags & RST:
            self.fin_sent[side] = True
            self._feed(side, Input.SEND_FIN, index)
            self._event(EventKind.FIN, index)
        if flags & RST and mark.rst is not None:
            self._rst(index, side, mark.rst)

    def _receive_fin(self, side: bool, index: int) -> None:
        self.fin_received[side] = True
        self._feed(side, Input.RECV_FIN, index)

    def _syn(self, index: int, side: bool, flags: int, syn_reply: bool) -> None:
        if not flags & ACK:
            kind = EventKind.SYN_RETRANSMIT if self.state[side] is TcpState.SYN_SENT else EventKind.SYN
            self._feed(side, Input.SEND_SYN, index)
            self._event(kind, index)
            if syn_reply and self.state[not side] in _SYNCHRONISED_ANY:
                # RFC 5961 4.2: a SYN reaching a synchronised endpoint draws a challenge ACK, not a reset.
                self.out.events.append(EventOp(EventKind.CHALLENGE_ACK, index, True, ()))
            return
        if self.state[side] in (TcpState.LISTEN, TcpState.UNKNOWN, TcpState.SYN_SENT):
            self._feed(side, Input.RECV_SYN, index)
        retransmit = self.out.syn_ack_mark >= 0
        action = self._feed(side, Input.SEND_SYNACK, index)
        if self.out.syn_ack_mark < 0:
            self.out.syn_ack_mark = index
        self._event(
            EventKind.SYN_ACK_RETRANSMIT if retransmit else EventKind.SYN_ACK,
            index,
            {"handshake_ack_lost": True} if action is Action.HANDSHAKE_ACK_LOST else None,
        )

    def _rst(self, index: int, side: bool, facts: RstFacts) -> None:
        peer = not side
        receiver_state = self.state[peer]
        sender_state = self.state[side]
        acceptability = facts.if_syn_sent if receiver_state is TcpState.SYN_SENT else facts.otherwise
        accepted = acceptability in ACCEPTED or (
            acceptability is RstAcceptability.UNKNOWN and not facts.receiver_keeps_sending
        )
        self.out.resets.append(ResetOp(index, acceptability, receiver_state, sender_state))
        self._event(EventKind.RST, index, {"acceptability": acceptability.value, "accepted": accepted})
        self._feed(side, Input.SEND_RST, index)
        if accepted and receiver_state not in (TcpState.CLOSED, TcpState.LISTEN):
            self._feed(peer, Input.RECV_RST_ACCEPTED, index)
            if self.out.accepted_rst_mark < 0:
                self.out.accepted_rst_mark = index
        elif acceptability is RstAcceptability.IN_WINDOW and facts.has_reply:
            self.out.events.append(EventOp(EventKind.CHALLENGE_ACK, index, True, ()))
