"""Hand-made IPv4/TCP segments for loopback scenarios (a scanner's SYN, an ACK nobody expects).

The kernel's own stack answers them, so the answer (RST, challenge ACK, silence) is real ground truth. The
path engineer's ``inject.py`` forges segments *on a path*; this module only needs to send one segment from a
namespace.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from whyreset.ingest import craft
from whyreset.lab import nsenter

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass(frozen=True, slots=True)
class Segment:
    """An IPv4 TCP segment to build."""

    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    ttl: int = 64
    window: int = 65535
    ip_id: int = 0
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        """The IPv4 packet (DF set, as Linux sets on TCP) with correct checksums."""
        return craft.tcp_packet(
            self.src,
            self.dst,
            self.sport,
            self.dport,
            seq=self.seq,
            ack=self.ack,
            flags=self.flags,
            window=self.window,
            payload=self.payload,
            ttl=self.ttl,
            ip_id=self.ip_id,
        )


def send_segment(netns: str | None, segment: Segment) -> None:
    """Send one segment from inside ``netns`` (an IPPROTO_RAW socket: we provide the IP header)."""
    with nsenter.entered(netns):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        raw.sendto(segment.to_bytes(), (segment.dst, 0))
