"""Forge TCP segments on the lab's path: a raw-socket injector and a sniffer that knows each connection's
sequence numbers.

A middlebox that resets a connection (or an attacker who tries to) must guess the receiver's ``RCV.NXT``: RFC
5961 section 3 makes a receiver accept an RST only when its sequence number is exactly ``RCV.NXT``; one
elsewhere in the window draws a *challenge ACK*, and one outside the window is dropped. ``RstPlacement`` names
those three cases and
``SeqSniffer`` (an AF_PACKET socket on the router) or ``flow_table_from_pcap`` supplies the numbers.

Segments are sent from a raw socket created inside a namespace (``Topology.socket(router, AF_INET, SOCK_RAW,
IPPROTO_RAW)``): with IPPROTO_RAW the kernel takes our IP header as is (IP_HDRINCL), so the forged source
address and TTL/hop limit are exactly the ones chosen here, and the router's routing table picks the output
interface.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from whyreset.errors import LabError
from whyreset.ingest import craft

# TCP flag bits (same values as whyreset.model).
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
PCAP_MAGIC_US, PCAP_MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL = 1, 101, 113
SEQ_MOD = 1 << 32


# ------------------------------------------------------------------------------------------------------------
# Building segments


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An ``addr:port`` pair."""

    addr: str
    port: int

    def __str__(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


@dataclass(frozen=True, slots=True)
class Segment:
    """A TCP segment to forge (or one that was seen)."""

    src: Endpoint
    dst: Endpoint
    seq: int
    ack: int
    flags: int
    window: int = 0
    ttl: int = 64
    """IPv4 TTL / IPv6 hop limit."""
    ip_id: int = 0
    payload: bytes = b""
    options: bytes = b""
    """TCP options, raw (padded to a multiple of 4 bytes when the segment is built)."""

    @property
    def v6(self) -> bool:
        return ":" in self.src.addr

    def packet(self) -> bytes:
        """The whole IP packet (IPv4 with DF set, or IPv6) with correct checksums."""
        return craft.tcp_packet(
            self.src.addr,
            self.dst.addr,
            self.src.port,
            self.dst.port,
            seq=self.seq % SEQ_MOD,
            ack=self.ack % SEQ_MOD,
            flags=self.flags,
            window=self.window,
            payload=self.payload,
            raw_options=self.options + b"\0" * (-len(self.options) % 4),
            ttl=self.ttl,
            ip_id=self.ip_id,
        )


class RawInjector:
    """Sends forged segments through a raw IPPROTO_RAW socket (the caller creates it in the right
    namespace)."""

    def __init__(self, raw_v4: socket.socket | None = None, raw_v6: socket.socket | None = None) -> None:
        self.raw_v4 = raw_v4
        self.raw_v6 = raw_v6
        self.sent: list[tuple[int, Segment]] = []
        """(time.time_ns(), segment) for each segment sent: the ground truth of what was forged."""

    def send(self, segment: Segment) -> None:
        raw = self.raw_v6 if segment.v6 else self.raw_v4
        if raw is None:
            raise LabError(f"no raw socket for IPv{6 if segment.v6 else 4}")
        # For IPPROTO_RAW the port in the address must be 0 (the kernel reads the protocol from our header).
        raw.sendto(segment.packet(), (segment.dst.addr, 0))
        self.sent.append((time.time_ns(), segment))

    def close(self) -> None:
        for raw in (self.raw_v4, self.raw_v6):
            if raw is not None:
                raw.close()


# ------------------------------------------------------------------------------------------------------------
# Parsing segments (from a sniffing socket or a pcap file)


def parse_ip_tcp(packet: bytes) -> Segment | None:
    """Decode an IPv4/IPv6 packet carrying TCP (no IPv6 extension headers); None for anything else."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        total_len, ip_id, _frag, ttl, proto = struct.unpack_from("!HHHBB", packet, 2)
        if proto != socket.IPPROTO_TCP:
            return None
        src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
        return _parse_tcp(packet[ihl:total_len], src, dst, ttl, ip_id)
    if version == 6 and len(packet) >= 40:
        payload_len, next_header, hop_limit = struct.unpack_from("!HBB", packet, 4)
        if next_header != socket.IPPROTO_TCP:
            return None
        src, dst = str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
        return _parse_tcp(packet[40 : 40 + payload_len], src, dst, hop_limit, 0)
    return None


def _parse_tcp(tcp: bytes, src: str, dst: str, ttl: int, ip_id: int) -> Segment | None:
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, offset_flags, window = struct.unpack_from("!HHIIHH", tcp)
    data_offset = (offset_flags >> 12) * 4
    return Segment(
        Endpoint(src, sport), Endpoint(dst, dport), seq, ack, offset_flags & 0x1FF, window, ttl, ip_id,
        tcp[data_offset:], tcp[20:data_offset],
    )  # fmt: skip


def _window_scale(tcp_options: bytes) -> int | None:
    i = 0
    while i < len(tcp_options):
        kind = tcp_options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(tcp_options):
            break
        length = tcp_options[i + 1]
        if kind == 3 and length == 3 and i + 2 < len(tcp_options):
            return tcp_options[i + 2]
        i += max(length, 2)
    return None


def read_pcap_packets(path: Path) -> list[tuple[int, bytes]]:
    """(timestamp ns, IP packet) for each record of a classic pcap file (Ethernet, raw IP or Linux cooked)."""
    data = path.read_bytes()
    if len(data) < 24:
        raise LabError(f"{path}: not a pcap file")
    magic_le = struct.unpack_from("<I", data)[0]
    endian = "<" if magic_le in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
    magic, _vmaj, _vmin, _tz, _sig, _snap, linktype = struct.unpack_from(endian + "IHHiIII", data)
    if magic not in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        raise LabError(f"{path}: not a classic pcap file")
    scale = 1 if magic == PCAP_MAGIC_NS else 1000
    link_header = {LINKTYPE_ETHERNET: 14, LINKTYPE_RAW: 0, LINKTYPE_LINUX_SLL: 16}.get(linktype)
    if link_header is None:
        raise LabError(f"{path}: link type {linktype} not supported")
    packets: list[tuple[int, bytes]] = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(endian + "IIII", data, offset)
        record = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if link_header and len(record) >= link_header:
            ethertype = struct.unpack_from("!H", record, link_header - 2)[0]
            if ethertype not in (ETH_P_IP, ETH_P_IPV6):
                continue
        packets.append((sec * 1_000_000_000 + frac * scale, record[link_header:]))
    return packets


# ------------------------------------------------------------------------------------------------------------
# What the path knows about a connection


@dataclass(frozen=True, slots=True)
class HalfState:
    """One direction of a connection as seen on the path (the sender's side of it)."""

    snd_nxt: int | None = None
    """Highest sequence number sent + 1 (SYN and FIN count one)."""
    ack: int | None = None
    """Last acknowledgment number the sender put on the wire = what it expects next from the other side."""
    window: int = 0
    """Last advertised window, scaled."""
    wscale: int = 0
    ttl: int | None = None
    """TTL / hop limit of the sender's last segment as seen at the observation point."""


@dataclass(frozen=True, slots=True)
class FlowState:
    """Both directions of one connection: ``a`` is the client (SYN sender), ``b`` the server."""

    a: Endpoint
    b: Endpoint
    from_a: HalfState
    from_b: HalfState

    def receiver_next(self, receiver: Endpoint) -> int:
        """Best estimate of the receiver's RCV.NXT: what it last acknowledged, or what the other side sent."""
        own, other = (self.from_a, self.from_b) if receiver == self.a else (self.from_b, self.from_a)
        candidates = [value for value in (own.ack, other.snd_nxt) if value is not None]
        if not candidates:
            raise LabError(f"nothing seen from or to {receiver}")
        # Later in sequence space wins (comparisons modulo 2**32).
        best = candidates[0]
        for value in candidates[1:]:
            if (value - best) % SEQ_MOD < SEQ_MOD // 2:
                best = value
        return best

    def receiver_window(self, receiver: Endpoint) -> int:
        return (self.from_a if receiver == self.a else self.from_b).window

    def sender_next(self, sender: Endpoint) -> int:
        half = self.from_a if sender == self.a else self.from_b
        if half.snd_nxt is None:
            raise LabError(f"nothing seen from {sender}")
        return half.snd_nxt


def _advance(half: HalfState, segment: Segment, syn_wscale: int | None) -> HalfState:
    length = len(segment.payload) + (1 if segment.flags & SYN else 0) + (1 if segment.flags & FIN else 0)
    end = (segment.seq + length) % SEQ_MOD
    snd_nxt = end if half.snd_nxt is None or (end - half.snd_nxt) % SEQ_MOD < SEQ_MOD // 2 else half.snd_nxt
    wscale = syn_wscale if syn_wscale is not None else half.wscale
    scale = 0 if segment.flags & SYN else wscale  # the window of a SYN is never scaled (RFC 7323 2.2)
    return replace(
        half,
        snd_nxt=snd_nxt,
        ack=segment.ack if segment.flags & ACK else half.ack,
        window=segment.window << scale,
        wscale=wscale,
        ttl=segment.ttl,
    )


class FlowTable:
    """Follows the TCP connections in a stream of segments (latest state per connection)."""

    def __init__(self) -> None:
        self._flows: dict[tuple[Endpoint, Endpoint], FlowState] = {}
        self._lock = threading.Lock()

    def feed(self, segment: Segment) -> None:
        if segment.flags & RST:
            return  # an RST changes no sequence state on the path (and may itself be forged)
        syn_wscale = _window_scale(segment.options) if segment.flags & SYN else None
        with self._lock:
            key = self._key(segment)
            if key is None:
                if not segment.flags & SYN or segment.flags & ACK:
                    return  # only follow connections whose SYN we saw: the SYN tells who the client is
                key = (segment.src, segment.dst)
                self._flows[key] = FlowState(segment.src, segment.dst, HalfState(), HalfState())
            flow = self._flows[key]
            if segment.src == flow.a:
                flow = replace(flow, from_a=_advance(flow.from_a, segment, syn_wscale))
            else:
                flow = replace(flow, from_b=_advance(flow.from_b, segment, syn_wscale))
            self._flows[key] = flow

    def _key(self, segment: Segment) -> tuple[Endpoint, Endpoint] | None:
        for key in ((segment.src, segment.dst), (segment.dst, segment.src)):
            if key in self._flows:
                return key
        return None

    def get(self, client: Endpoint, server: Endpoint) -> FlowState | None:
        with self._lock:
            return self._flows.get((client, server))

    def flows(self) -> list[FlowState]:
        with self._lock:
            return list(self._flows.values())


def flow_table_from_pcap(path: Path) -> FlowTable:
    """Replay a capture file into a FlowTable (the state at the end of the capture)."""
    table = FlowTable()
    for _ts, packet in read_pcap_packets(path):
        segment = parse_ip_tcp(packet)
        if segment is not None:
            table.feed(segment)
    return table


class SeqSniffer:
    """Watches an interface through an AF_PACKET socket (created by the caller in the router's namespace) and
    keeps a FlowTable up to date from a background thread. Use as a context manager."""

    def __init__(self, packet_socket: socket.socket) -> None:
        self._socket = packet_socket
        self.table = FlowTable()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="seq-sniffer", daemon=True)

    def __enter__(self) -> SeqSniffer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not select.select([self._socket], [], [], 0.05)[0]:
                continue
            try:
                packet = self._socket.recv(65535)
            except OSError:
                return
            segment = parse_ip_tcp(packet)
            if segment is not None:
                self.table.feed(segment)

    def wait_for(self, client: Endpoint, server: Endpoint, timeout: float = 2.0) -> FlowState:
        """The connection's state once both directions have been seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flow = self.table.get(client, server)
            if flow is not None and flow.from_a.snd_nxt is not None and flow.from_b.snd_nxt is not None:
                return flow
            time.sleep(0.01)
        raise LabError(f"the sniffer saw no connection {client} -> {server}")


def bind_packet_socket(packet_socket: socket.socket, iface: str) -> socket.socket:
    """Bind an AF_PACKET/SOCK_DGRAM socket (made with protocol ETH_P_ALL) to ``iface``: it then yields IP
    packets in both directions."""
    packet_socket.bind((iface, ETH_P_ALL))
    return packet_socket


# ------------------------------------------------------------------------------------------------------------
# Forging resets


class RstPlacement(StrEnum):
    """Where a forged RST's sequence number falls in the receiver's window (RFC 5961 section 3)."""

    EXACT = "exact"
    """seq = RCV.NXT: accepted, the connection is reset."""
    IN_WINDOW = "in_window"
    """RCV.NXT < seq < RCV.NXT + RCV.WND: not accepted; the receiver sends a challenge ACK."""
    OUT_OF_WINDOW = "out_of_window"
    """seq outside the window: silently dropped."""


def rst_seq(flow: FlowState, receiver: Endpoint, placement: RstPlacement, *, offset: int = 1) -> int:
    """The sequence number for an RST toward ``receiver`` with the given placement.

    ``offset`` picks the point inside the window (IN_WINDOW, clamped below the window's end) or how far past
    the window (OUT_OF_WINDOW: window + offset, so never inside it).
    """
    rcv_nxt = flow.receiver_next(receiver)
    window = max(flow.receiver_window(receiver), 2)
    if placement is RstPlacement.EXACT:
        return rcv_nxt
    if placement is RstPlacement.IN_WINDOW:
        return (rcv_nxt + min(max(offset, 1), window - 1)) % SEQ_MOD
    return (rcv_nxt + window + max(offset, 1) + (1 << 20)) % SEQ_MOD


def forge_rst(
    flow: FlowState,
    toward: Endpoint,
    placement: RstPlacement,
    *,
    ttl: int,
    offset: int = 1,
    with_ack: bool = True,
) -> Segment:
    """An RST that pretends to come from ``toward``'s peer, as a middlebox or an attacker would make it."""
    source = flow.b if toward == flow.a else flow.a
    seq = rst_seq(flow, toward, placement, offset=offset)
    ack = flow.sender_next(toward) if with_ack else 0
    return Segment(source, toward, seq, ack, RST | (ACK if with_ack else 0), 0, ttl)
