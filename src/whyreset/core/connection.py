"""What the core says about one TCP connection: frozen results, one docstring per field.

The core (``core/``) builds these from a `PacketTable`; the diagnosis (``diagnose/``), the reports and the lab
only read them. ``Side.ORIG`` is the originator (SYN sender, or the heuristic's pick: see
`Connection.orig_inferred_by`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import SYN, Array, IcmpError, PacketTable

MAX_WINDOW_SHIFT = 14
"""RFC 7323 2.3: a shift count above 14 is used as 14."""


class RstAcceptability(StrEnum):
    """Whether the RST's receiver could accept it (RFC 5961 3.2, against its RCV.NXT and window)."""

    EXACT = "exact"
    """seq == RCV.NXT: accepted, the connection is aborted."""
    IN_WINDOW = "in_window"
    """In the window but not exact: RFC 5961 receivers answer with a challenge ACK and keep the connection."""
    OUT_OF_WINDOW = "out_of_window"
    """Outside the window: silently dropped by the receiver."""
    SYN_SENT_ACK_OK = "syn_sent_ack_ok"
    """Receiver in SYN_SENT and the RST acknowledges its SYN: accepted (connection refused)."""
    SYN_SENT_ACK_BAD = "syn_sent_ack_bad"
    """Receiver in SYN_SENT and the RST does not acknowledge its SYN: dropped."""
    UNKNOWN = "unknown"
    """The receiver's window is not known from the capture (e.g. it starts mid-connection)."""


class EventKind(StrEnum):
    """Notable things on a connection. Bulk data is summarised in `DirectionStats`, not listed per packet."""

    SYN = "syn"
    SYN_ACK = "syn_ack"
    HANDSHAKE_ACK = "handshake_ack"
    SYN_RETRANSMIT = "syn_retransmit"
    SYN_ACK_RETRANSMIT = "syn_ack_retransmit"
    FIRST_DATA = "first_data"
    LAST_DATA = "last_data"
    RETRANSMISSION = "retransmission"
    KEEPALIVE_PROBE = "keepalive_probe"
    ZERO_WINDOW = "zero_window"
    IDLE_GAP = "idle_gap"
    FIN = "fin"
    FIN_ACKED = "fin_acked"
    RST = "rst"
    DATA_AFTER_FIN = "data_after_fin"
    """Data sent by a side after it received (and acknowledged) the other side's FIN, or after its own FIN."""
    ICMP_ERROR = "icmp_error"
    CHALLENGE_ACK = "challenge_ack"


@dataclass(frozen=True, slots=True)
class Event:
    """One notable event, anchored on a packet of the capture."""

    kind: EventKind
    """What happened."""
    side: Side
    """Which endpoint sent the packet (for IDLE_GAP: the sender of the packet that ended the gap)."""
    frame: int
    """Capture record number of the packet."""
    ts_ns: int
    """Capture timestamp of the packet, integer ns."""
    rel_seq: int
    """Sequence number relative to the sender's ISN (unwrapped, may exceed 2**32)."""
    rel_ack: int | None
    """Acknowledgment relative to the receiver's ISN, None when the ACK bit is clear."""
    length: int
    """Payload length."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Kind-specific facts (gap_ns for IDLE_GAP, icmp type/code for ICMP_ERROR...)."""


@dataclass(frozen=True, slots=True)
class ResetInfo:
    """One RST segment and what it meant to its receiver."""

    sender: Side
    """Endpoint whose address sent the RST (it may still be forged by a middlebox: see the diagnosis)."""
    frame: int
    """Capture record number."""
    ts_ns: int
    """Capture timestamp, integer ns."""
    seq: int
    """Absolute sequence number."""
    ack: int | None
    """Absolute acknowledgment number, None when the ACK bit is clear."""
    rel_seq: int | None
    """Sequence number relative to the sender's ISN, None when the ISN is unknown."""
    ttl: int
    """TTL / hop limit of the RST."""
    ip_id: int
    """IPv4 identification of the RST (0 for IPv6)."""
    acceptability: RstAcceptability
    """RFC 5961 check against the receiver's state."""
    receiver_state: TcpState
    """Receiver's state when the RST arrived."""
    sender_state: TcpState
    """Sender's state when it sent the RST."""
    payload_text: str | None
    """Printable text carried in the RST's payload (RFC 1122 4.2.2.12), when present."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """An endpoint entering a state, and the packet that made it so."""

    state: TcpState
    """The new state."""
    frame: int
    """Packet that caused the transition (sent or received by this endpoint)."""
    ts_ns: int
    """Capture timestamp of that packet."""


@dataclass(frozen=True, slots=True)
class DirectionStats:
    """Counters for the segments one endpoint sent."""

    packets: int
    """Segments sent."""
    payload_bytes: int
    """TCP payload bytes sent (including retransmissions, as Zeek's *_bytes does not: see `bytes_acked`)."""
    frame_bytes: int
    """Frame lengths summed (what tshark's conversation table counts)."""
    ip_bytes: int
    """IP lengths summed (Zeek's orig_ip_bytes / resp_ip_bytes)."""
    isn: int | None
    """Initial sequence number (None when the SYN was not seen)."""
    data_bytes: int
    """Distinct sequence space sent (highest seq end - ISN, without SYN/FIN); Zeek's own count is
    `Connection.zeek_orig_bytes` / `zeek_resp_bytes`."""
    bytes_acked: int
    """Of `data_bytes`, how many the other side acknowledged."""
    unacked_bytes: int
    """Payload bytes sent that the other side never acknowledged in the capture."""
    retransmissions: int
    """Segments carrying sequence space already sent."""
    out_of_order: int
    """Segments that arrived (at the capture point) below the highest sequence seen, into a hole not seen."""
    lost_segments: int
    """Sequence gaps: a segment starting beyond the highest sequence seen (earlier data missed by capture)."""
    dup_acks: int
    """Pure ACKs repeating the previous ACK with no window change (RFC 5681 duplicate ACK)."""
    zero_windows: int
    """Segments advertising a zero window."""
    keepalive_probes: int
    """Keep-alive probes (seq = SND.NXT - 1, 0 or 1 byte, after idle)."""
    max_idle_ns: int
    """Longest silence between two consecutive packets of the connection ended by this side's packet."""
    wscale: int | None
    """Window scale announced in the SYN, None when absent or unseen."""
    mss: int | None
    """MSS announced in the SYN."""
    ttls: tuple[int, ...]
    """Distinct TTL / hop-limit values seen on this side's packets, most frequent first."""
    fin_frame: int | None
    """First FIN sent."""
    rst_frames: tuple[int, ...]
    """RSTs sent."""


@dataclass(frozen=True, slots=True)
class Connection:
    """One TCP connection rebuilt from a capture."""

    index: int
    """Position in capture order (like tshark's tcp.stream)."""
    uid: str
    """Zeek-style unique id (``C`` + base62), stable for the same capture."""
    community_id: str
    """Community ID v1 of the 5-tuple (``1:...``)."""
    ip_version: int
    """4 or 6."""
    orig_h: str
    """Originator address, canonical text."""
    orig_p: int
    """Originator port."""
    resp_h: str
    """Responder address, canonical text."""
    resp_p: int
    """Responder port."""
    orig_inferred_by: str
    """How the originator was chosen: ``syn``, ``syn_ack`` (SYN missed), ``port`` (lower port is the server),
    ``first_packet``. Anything but ``syn`` means the roles are a guess (flagged in outputs)."""
    ts_first_ns: int
    """Timestamp of the first packet."""
    ts_last_ns: int
    """Timestamp of the last packet."""
    first_frame: int
    """Capture record number of the first packet."""
    last_frame: int
    """Capture record number of the last packet."""
    orig: DirectionStats
    """What the originator sent."""
    resp: DirectionStats
    """What the responder sent."""
    orig_states: tuple[StateChange, ...]
    """Originator's state timeline (first entry is its state at the first packet)."""
    resp_states: tuple[StateChange, ...]
    """Responder's state timeline."""
    outcome: Outcome
    """How the connection ended (design/causes.md outcomes)."""
    conn_state: str
    """Zeek's conn_state (S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH)."""
    history: str
    """Zeek's history string."""
    resets: tuple[ResetInfo, ...]
    """Every RST on the connection, in capture order."""
    events: tuple[Event, ...]
    """Notable events in capture order."""
    established: bool
    """A complete three-way handshake was seen (or implied by data both ways in mid-stream captures)."""
    midstream: bool
    """The capture starts after the handshake (no SYN seen)."""
    port_reuse: bool
    """This connection reuses the 4-tuple of an earlier one in the capture."""
    truncated_packets: int
    """Packets of this connection cut by snaplen."""
    packets: PacketTable = field(repr=False, compare=False)
    """This connection's rows of the packet table, in capture order."""
    from_orig: Array = field(repr=False, compare=False)
    """Per row of `packets`: True when the originator sent it."""
    zeek_orig_bytes: int = 0
    """Zeek's orig_bytes: originator sequence space, from its highest sequence or acknowledged number."""
    zeek_resp_bytes: int = 0
    """Zeek's resp_bytes."""
    missed_bytes: int = 0
    """Zeek's missed_bytes: bytes in content gaps (acknowledged by the peer, never seen in the capture)."""
    icmp_errors: tuple[IcmpError, ...] = field(default=(), compare=False)
    """The ICMP errors matched to this connection, as the reader gave them. They are the ICMP_ERROR events
    (which equality compares), but reading them does not build the event list."""

    @property
    def duration_ns(self) -> int:
        return self.ts_last_ns - self.ts_first_ns

    def stats(self, side: Side) -> DirectionStats:
        return self.orig if side is Side.ORIG else self.resp

    def states(self, side: Side) -> tuple[StateChange, ...]:
        return self.orig_states if side is Side.ORIG else self.resp_states

    def final_state(self, side: Side) -> TcpState:
        name = "orig_states" if side is Side.ORIG else "resp_states"
        raw = _SLOTS[name].__get__(self, Connection)
        if isinstance(raw, Deferred):
            return raw.details.final_state(side is Side.ORIG)
        return raw[-1].state if raw else TcpState.UNKNOWN

    def address(self, side: Side) -> tuple[str, int]:
        return (self.orig_h, self.orig_p) if side is Side.ORIG else (self.resp_h, self.resp_p)

    @property
    def icmp_events(self) -> tuple[Event, ...]:
        """The ICMP_ERROR events of `events`, without building the event list while it is still deferred."""
        raw = _SLOTS["events"].__get__(self, Connection)
        if isinstance(raw, Deferred):
            return raw.details.icmp_events()
        return tuple(event for event in raw if event.kind is EventKind.ICMP_ERROR)

    @property
    def first_reset(self) -> ResetInfo | None:
        return self.resets[0] if self.resets else None

    @property
    def window_scale_known(self) -> bool:
        """Whether both SYNs were captured, so each side's window scale is known (RFC 7323: none when either
        SYN lacks the option)."""
        return self.orig.isn is not None and self.resp.isn is not None

    def scaled_windows(self) -> Array:
        """Each segment's receive window in bytes, in `packets` order: the window field shifted by its sender's
        window scale (RFC 7323 2.3: the shift count a side announced in its SYN scales the windows it sends,
        once both SYNs carried the option; capped at 14). A SYN's own window is never scaled. When a SYN was
        not captured (`window_scale_known` is False) the raw field is returned: the scale cannot be told."""
        windows = self.packets["window"].astype(np.int64)
        orig_shift, resp_shift = self.orig.wscale, self.resp.wscale
        if not self.window_scale_known or orig_shift is None or resp_shift is None:
            return windows
        shift = np.where(self.from_orig, min(orig_shift, MAX_WINDOW_SHIFT), min(resp_shift, MAX_WINDOW_SHIFT))
        return np.where((self.packets["flags"] & SYN) != 0, windows, windows << shift)


class DeferredDetails:
    """What a builder leaves on a `Connection` to make its detailed fields later (see `Deferred`)."""

    def materialise(self, name: str) -> dict[str, object]:
        """The value of deferred field ``name``, with any other deferred field made along with it, by field
        name (each field is asked for at most once per connection)."""
        raise NotImplementedError

    def final_state(self, from_orig: bool) -> TcpState:
        """The endpoint's last state, without building the timeline."""
        raise NotImplementedError

    def icmp_events(self) -> tuple[Event, ...]:
        """The ICMP_ERROR events the event list will hold, in its order, without building it."""
        raise NotImplementedError


class Deferred:
    """Placeholder stored in a `Connection` slot until the field is first read.

    The core rebuilds tens of thousands of connections per second, and most of them are never looked at in
    detail: their events and state timelines are made on first read instead (the result is the same object
    an eager build gives, stored in the slot for later reads). The builder must not let `details` hold
    anything large (the whole chunk): it lives as long as the connection is not fully read.
    """

    __slots__ = ("details",)

    def __init__(self, details: DeferredDetails) -> None:
        self.details = details


DEFERRED_FIELDS = ("orig_states", "resp_states", "events")
_SLOTS: dict[str, Any] = {name: Connection.__dict__[name] for name in DEFERRED_FIELDS}


class _ResolvingSlot:
    """Wraps a slot of `Connection`: reading a `Deferred` placeholder builds the deferred fields first."""

    __slots__ = ("name", "slot")

    def __init__(self, name: str, slot: Any) -> None:
        self.name = name
        self.slot = slot

    def __get__(self, instance: Connection | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.slot.__get__(instance, owner)
        if isinstance(value, Deferred):
            values = value.details.materialise(self.name)
            for name, made in values.items():
                _SLOTS[name].__set__(instance, made)
            value = values[self.name]
        return value

    def __set__(self, instance: Connection, value: Any) -> None:
        self.slot.__set__(instance, value)

    def __delete__(self, instance: Connection) -> None:
        self.slot.__delete__(instance)


for _name in DEFERRED_FIELDS:
    setattr(Connection, _name, _ResolvingSlot(_name, _SLOTS[_name]))


def pending_details(conn: Connection) -> DeferredDetails | None:
    """The details a connection's deferred fields are still to be made from (None once all are made)."""
    for name in DEFERRED_FIELDS:
        raw = _SLOTS[name].__get__(conn, Connection)
        if isinstance(raw, Deferred):
            return raw.details
    return None
