"""Absolute sequence numbers from tcpdump's relative ones, and the sequence number of pure ACKs.

How tcpdump prints them (print-tcp.c, unchanged from 3.x to 4.99): without ``-S``, for a segment *with the ACK
bit*, it looks up the conversation (both directions share one entry). If there is none, or the segment has
SYN, the segment is printed as is and its ``seq`` and ``ack - 1`` become the bases of its own and the other
direction. Every later ACK-bearing segment prints ``seq - base(own)`` and ``ack - base(other)``, and its SACK
blocks relative to ``base(other)``. Segments without ACK (SYN, a bare RST) are always absolute and touch
nothing. So the first ACK-bearing segment of each conversation *in tcpdump's run* carries the bases, usually
the SYN-ACK, and adding them back is exact.

Each tcpdump run has its own table: a banner in the text (``reading from file``, ``listening on``) starts
afresh. Three things text may not tell, handled here:

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
VOTE_SEGMENTS = 20_000
"""Segments of the first chunk that vote on -S (plenty: in real text the decisive votes all agree)."""

Endpoint = tuple[str, str]


class SeqMode(Enum):
    RELATIVE = "relative"
    ABSOLUTE = "absolute"


def _distance(a: int, b: int) -> int:
    gap = (a - b) % MOD
    return min(gap, MOD - gap)


@dataclass(slots=True)
class _Conversation:
    """Both directions of one conversation; index 0 is the direction of the lower (host, port) endpoint."""

    base: list[int | None] = field(default_factory=lambda: [None, None])
    """Per direction, what to add to its printed seq; None until tcpdump's base segment is seen."""
    next_seq: list[int | None] = field(default_factory=lambda: [None, None])
    """Per direction, the next sequence number the sender will use, as far as the text shows."""
    last_ack: list[int | None] = field(default_factory=lambda: [None, None])
    """Per direction, the last ack it sent (absolute)."""


FlowKey = tuple[str, str, str, str]


@dataclass(slots=True)
class SequenceResolver:
    """Restores absolute seq/ack/SACK numbers chunk after chunk of one read (state carries across chunks)."""

    limits: list[str]
    mode: SeqMode | None = None
    _flows: dict[FlowKey, tuple[_Conversation, int]] = field(default_factory=dict)
    """(src, sport, dst, dport) as printed -> its conversation and its direction there (0 or 1)."""
    _noted: set[str] = field(default_factory=set)
    _run: int = 0

    def resolve(self, segments: list[TcpFields]) -> None:
        """Rewrite ``seq``, ``ack`` and ``sack`` of ``segments`` (capture order) to absolute values."""
        if self.mode is None:
            self.mode = self._vote(segments)
        restore = self.mode is not SeqMode.ABSOLUTE
        flows = self._flows
        for segment in segments:
            if segment.run != self._run:
                # A new tcpdump run (a banner in the text): tcpdump starts its relative bases afresh.
                self._run = segment.run
                flows.clear()
            key = (segment.src, segment.sport, segment.dst, segment.dport)
            found = flows.get(key)
            if found is None:
                found = self._new_flow(key)
            conversation, own = found
            if restore and segment.flags & ACK:
                self._unrelative(segment, conversation, own)
            if segment.quoted:
                continue  # a quote may lack its seq, and tells nothing of what the sender sends next
            if segment.seq is None:
                segment.seq = self._infer_seq(conversation, own)
            self._remember(segment, conversation, own)

    def _new_flow(self, key: FlowKey) -> tuple[_Conversation, int]:
        reverse = (key[2], key[3], key[0], key[1])
        found = self._flows.get(reverse)
        if found is not None:
            conversation, direction = found[0], 1 - found[1]
        else:
            conversation, direction = _Conversation(), 0 if key[:2] <= key[2:] else 1
        self._flows[key] = (conversation, direction)
        return conversation, direction

    def _unrelative(self, segment: TcpFields, conversation: _Conversation, own: int) -> None:
        other = 1 - own
        base = conversation.base
        if base[own] is None or segment.flags & SYN:
            self._open(segment, conversation, own)
            # tcpdump prints the base segment as is, but its SACK blocks already relative to the other base.
            base_other = base[other] or 0
            if segment.sack:
                segment.sack = [
                    ((left + base_other) % MOD, (right + base_other) % MOD) for left, right in segment.sack
                ]
            return
        own_base, other_base = base[own] or 0, base[other] or 0
        if segment.seq is not None:
            segment.seq = (segment.seq + own_base) % MOD
        if segment.ack is not None:
            segment.ack = (segment.ack + other_base) % MOD
        if segment.sack:
            segment.sack = [
                ((left + other_base) % MOD, (right + other_base) % MOD) for left, right in segment.sack
            ]

    def _open(self, segment: TcpFields, conversation: _Conversation, own: int) -> None:
        other = 1 - own
        ack = segment.ack if segment.ack is not None else 0
        if not segment.flags & SYN and ack < EXCERPT_LIMIT and (segment.seq or 0) < EXCERPT_LIMIT:
            self._note_relative(segment)
            conversation.base[own] = conversation.base[other] = 0
            return
        own_base = segment.seq if segment.seq is not None else conversation.next_seq[own]
        if own_base is None:
            self._note_relative(segment)
            own_base = 0
        conversation.base[own] = own_base
        conversation.base[other] = (ack - 1) % MOD

    def _infer_seq(self, conversation: _Conversation, own: int) -> int:
        self._note_once(
            "pure ACKs print no seq without -vv: their seq is inferred from the sender's earlier segments"
        )
        known = conversation.next_seq[own]
        if known is not None:
            return known
        peer_ack = conversation.last_ack[1 - own]
        return peer_ack if peer_ack is not None else 0

    @staticmethod
    def _remember(segment: TcpFields, conversation: _Conversation, own: int) -> None:
        flags = segment.flags
        seq = segment.seq or 0
        end = (seq + segment.payload_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)) % MOD
        previous = conversation.next_seq[own]
        if previous is None or flags & SYN or 0 < (end - previous) % MOD < HALF:
            conversation.next_seq[own] = end
        if flags & ACK and segment.ack is not None:
            conversation.last_ack[own] = segment.ack

    def _vote(self, segments: list[TcpFields]) -> SeqMode | None:
        bases: dict[tuple[Endpoint, Endpoint], dict[Endpoint, int]] = {}
        relative_votes = absolute_votes = 0
        for segment in segments[:VOTE_SEGMENTS]:
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

    def _note_relative(self, segment: TcpFields) -> None:
        first, second = sorted(((segment.src, segment.sport), (segment.dst, segment.dport)))
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
