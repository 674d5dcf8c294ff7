"""Hand-made IPv4/TCP segments for loopback scenarios (a scanner's SYN, an ACK nobody expects).

The kernel's own stack answers them, so the answer (RST, challenge ACK, silence) is real ground truth. The
path engineer's ``inject.py`` forges segments *on a path*; this module only needs to send one segment from a
namespace.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from whyreset.lab import nsenter

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


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

    def tcp_header(self) -> bytes:
        offset_flags = (5 << 12) | self.flags
        header = struct.pack(
            "!HHIIHHHH", self.sport, self.dport, self.seq, self.ack, offset_flags, self.window, 0, 0
        )
        pseudo = struct.pack(
            "!4s4sBBH",
            socket.inet_aton(self.src),
            socket.inet_aton(self.dst),
            0,
            socket.IPPROTO_TCP,
            len(header) + len(self.payload),
        )
        check = checksum(pseudo + header + self.payload)
        return header[:16] + struct.pack("!H", check) + header[18:]

    def to_bytes(self) -> bytes:
        tcp = self.tcp_header() + self.payload
        ip = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(tcp),
            self.ip_id,
            0x4000,  # DF, as Linux sets on TCP
            self.ttl,
            socket.IPPROTO_TCP,
            0,
            socket.inet_aton(self.src),
            socket.inet_aton(self.dst),
        )
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        return ip + tcp


def send_segment(netns: str | None, segment: Segment) -> None:
    """Send one segment from inside ``netns`` (an IPPROTO_RAW socket: we provide the IP header)."""
    with nsenter.entered(netns):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        raw.sendto(segment.to_bytes(), (segment.dst, 0))
