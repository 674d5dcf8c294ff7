"""Absolute sequence numbers from tcpdump's relative ones, and the sequence number of pure ACKs.

How tcpdump prints them (print-tcp.c, unchanged from 3.x to 4.99): without ``-S``, for a segment *with the ACK
bit*, it looks up the conversation (both directions share one entry). If there is none, or the segment has
SYN, the segment is printed as is and its ``seq`` and ``ack - 1`` become the bases of its own and the other
direction. Every later ACK-bearing segment prints ``seq - base(own)`` and ``ack - base(other)``, and its SACK
blocks relative to ``base(other)``. Segments without ACK (SYN, a bare RST) are always absolute and touch
nothing. So the first ACK-bearing segment of each conversation *in tcpdump's run* carries the bases, usually
the SYN-ACK, and adding them back is exact.

Three things text may not tell, handled here:

- ``-S`` or not: decided once per read by votes. After a conversation's base segment, each later ACK-bearing
  segment votes for the reading whose numbers sit closer, in sequence space, to what is expected (relative:
  near 0; absolute: near the bases).
- An excerpt that starts after tcpdump's base segment: its first ACK-bearing segment of a conversation already
  looks relative (non-SYN, seq and ack below `EXCERPT_LIMIT`). Its numbers are kept relative and the
  conversation is noted.
- Pure ACKs print no ``seq`` unless ``-vv``: their seq is the sender's next sequence number as seen so far
  (highest seq + length + SYN + FIN sent), else the last ack from the other direction, else 0 (relative),
  noted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from whyreset.ingest.text.fields import TcpFields
from whyreset.model import ACK, FIN, SYN

MOD = 1 << 32
HALF = 1 << 31
EXCERPT_LIMIT = 1_000_000
DECISIVE_FACTOR = 4

Endpoint = tuple[str, str]


class SeqMode(Enum):
    RELATIVE = "relative"
    ABSOLUTE = "absolute"


def _distance(a: int, b: int) -> int:
    gap = (a - b) % MOD
    return min(gap, MOD - gap)


def _after(a: int, b: int) -> bool:
    """Whether ``a`` is later than ``b`` in sequence space (RFC 9293 3.4 comparisons)."""
    return 0 < (a - b) % MOD < HALF


@dataclass(slots=True)
class _Conversation:
    base: dict[Endpoint, int]
    """Sender endpoint -> base added to its printed seq (0 when unknown: numbers stay relative)."""


@dataclass(slots=True)
class SequenceResolver:
    """Restores absolute seq/ack/SACK numbers chunk after chunk of one read (state carries across chunks)."""

    limits: list[str]
    mode: SeqMode | None = None
    _conversations: dict[tuple[Endpoint, Endpoint], _Conversation] = field(default_factory=dict)
    _next_seq: dict[tuple[Endpoint, Endpoint], int] = field(default_factory=dict)
    _last_ack: dict[tuple[Endpoint, Endpoint], int] = field(default_factory=dict)
    _noted: set[str] = field(default_factory=set)

    def resolve(self, segments: list[TcpFields]) -> None:
        """Rewrite ``seq``, ``ack`` and ``sack`` of ``segments`` (capture order) to absolute values."""
        if self.mode is None:
            self.mode = self._vote(segments)
        for segment in segments:
            sender = (segment.src, segment.sport)
            receiver = (segment.dst, segment.dport)
            if self.mode is not SeqMode.ABSOLUTE and segment.flags & ACK:
                self._unrelative(segment, sender, receiver)
            if segment.quoted:
                continue  # a quote may lack its seq, and tells nothing of what the sender sends next
            if segment.seq is None:
                segment.seq = self._infer_seq(sender, receiver)
            self._remember(segment, sender, receiver)

    def _unrelative(self, segment: TcpFields, sender: Endpoint, receiver: Endpoint) -> None:
        key = _conversation_key(sender, receiver)
        conversation = self._conversations.get(key)
        if conversation is None or segment.flags & SYN:
            self._conversations[key] = self._open(segment, sender, receiver)
            # tcpdump prints the base segment as is, but its SACK blocks already relative to the other base.
            base_other = self._conversations[key].base[receiver]
            segment.sack = [
                ((left + base_other) % MOD, (right + base_other) % MOD) for left, right in segment.sack
            ]
            return
        own, other = conversation.base[sender], conversation.base[receiver]
        if segment.seq is not None:
            segment.seq = (segment.seq + own) % MOD
        if segment.ack is not None:
            segment.ack = (segment.ack + other) % MOD
        segment.sack = [((left + other) % MOD, (right + other) % MOD) for left, right in segment.sack]

    def _open(self, segment: TcpFields, sender: Endpoint, receiver: Endpoint) -> _Conversation:
        ack = segment.ack if segment.ack is not None else 0
        if not segment.flags & SYN and ack < EXCERPT_LIMIT and (segment.seq or 0) < EXCERPT_LIMIT:
            self._note_relative(sender, receiver)
            return _Conversation({sender: 0, receiver: 0})
        own = segment.seq if segment.seq is not None else self._known_next(sender, receiver)
        if own is None:
            self._note_relative(sender, receiver)
            own = 0
        return _Conversation({sender: own, receiver: (ack - 1) % MOD})

    def _known_next(self, sender: Endpoint, receiver: Endpoint) -> int | None:
        return self._next_seq.get((sender, receiver))

    def _infer_seq(self, sender: Endpoint, receiver: Endpoint) -> int:
        self._note_once(
            "pure ACKs print no seq without -vv: their seq is inferred from the sender's earlier segments"
        )
        known = self._next_seq.get((sender, receiver))
        if known is not None:
            return known
        peer_ack = self._last_ack.get((receiver, sender))
        return peer_ack if peer_ack is not None else 0

    def _remember(self, segment: TcpFields, sender: Endpoint, receiver: Endpoint) -> None:
        direction = (sender, receiver)
        seq = segment.seq if segment.seq is not None else 0
        end = (seq + segment.payload_len + bool(segment.flags & SYN) + bool(segment.flags & FIN)) % MOD
        previous = self._next_seq.get(direction)
        if previous is None or _after(end, previous) or segment.flags & SYN:
            self._next_seq[direction] = end
        if segment.ack is not None and segment.flags & ACK:
            self._last_ack[direction] = segment.ack

    def _vote(self, segments: list[TcpFields]) -> SeqMode | None:
        bases: dict[tuple[Endpoint, Endpoint], dict[Endpoint, int]] = {}
        relative_votes = absolute_votes = 0
        for segment in segments:
            if not segment.flags & ACK or segment.ack is None or segment.quoted:
                continue
            sender, receiver = (segment.src, segment.sport), (segment.dst, segment.dport)
            key = _conversation_key(sender, receiver)
            base = bases.get(key)
            if base is None or segment.flags & SYN:
                bases[key] = {sender: segment.seq or 0, receiver: (segment.ack - 1) % MOD}
                continue
            relative_cost = _distance(segment.ack, 0)
            absolute_cost = _distance(segment.ack, base[receiver])
            if segment.seq is not None:
                relative_cost += _distance(segment.seq, 0)
                absolute_cost += _distance(segment.seq, base[sender])
            # Only a clear difference votes: with tiny ISNs (crafted captures) both readings can fit.
            if relative_cost * DECISIVE_FACTOR < absolute_cost:
                relative_votes += 1
            elif absolute_cost * DECISIVE_FACTOR < relative_cost:
                absolute_votes += 1
        if relative_votes == absolute_votes == 0:
            return None
        if absolute_votes > relative_votes:
            self._note_once("sequence numbers printed absolute (tcpdump -S)")
            return SeqMode.ABSOLUTE
        return SeqMode.RELATIVE

    def _note_relative(self, sender: Endpoint, receiver: Endpoint) -> None:
        first, second = sorted((sender, receiver))
        self._note_once(
            f"{first[0]}.{first[1]} <-> {second[0]}.{second[1]}: tcpdump's base segment is not in the text, "
            "sequence numbers kept relative"
        )

    def _note_once(self, text: str) -> None:
        if text not in self._noted:
            self._noted.add(text)
            self.limits.append(text)


def _conversation_key(a: Endpoint, b: Endpoint) -> tuple[Endpoint, Endpoint]:
    return (a, b) if a <= b else (b, a)
