"""Captures for the CLI tests, written with whyreset.ingest.craft (and one from real kernel sockets)."""

from __future__ import annotations

from pathlib import Path

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
HOSTILE_RST_TEXT = b"[bold red]pwned[/bold red] \x1b[2J\x1b]0;evil\x07 reason"


def write_mixed_capture(path: Path) -> Path:
    """Four connections: a clean exchange, a refused SYN, an IPv6 reset after a request, and a server RST that
    carries diagnostic text (hostile: rich markup and terminal escape sequences)."""
    from whyreset.ingest import craft

    packets: list[tuple[int, bytes]] = []

    def add(t_ms: float, ip: bytes) -> None:
        packets.append((T0 + int(t_ms * MS), craft.frame(craft.LINKTYPE_ETHERNET, ip)))

    c, s = "10.2.0.1", "10.2.0.2"
    add(0, craft.tcp_packet(c, s, 41000, 80, seq=100, flags="S", mss=1460))
    add(1, craft.tcp_packet(s, c, 80, 41000, seq=500, ack=101, flags="SA", mss=1460, ttl=57))
    add(2, craft.tcp_packet(c, s, 41000, 80, seq=101, ack=501, flags="A"))
    add(3, craft.tcp_packet(c, s, 41000, 80, seq=101, ack=501, flags="PA", payload=b"GET / HTTP/1.1\r\n\r\n"))
    add(4, craft.tcp_packet(s, c, 80, 41000, seq=501, ack=119, flags="PA", payload=b"y" * 700, ttl=57))
    add(5, craft.tcp_packet(c, s, 41000, 80, seq=119, ack=1201, flags="FA"))
    add(6, craft.tcp_packet(s, c, 80, 41000, seq=1201, ack=120, flags="FA", ttl=57))
    add(7, craft.tcp_packet(c, s, 41000, 80, seq=120, ack=1202, flags="A"))
    add(10, craft.tcp_packet(c, s, 41001, 81, seq=7, flags="S"))
    add(11, craft.tcp_packet(s, c, 81, 41001, seq=0, ack=8, flags="RA", ttl=57))
    c6, s6 = "2001:db8::10", "2001:db8::20"
    add(20, craft.tcp_packet(c6, s6, 50000, 443, seq=1000, flags="S"))
    add(21, craft.tcp_packet(s6, c6, 443, 50000, seq=9000, ack=1001, flags="SA", ttl=57))
    add(22, craft.tcp_packet(c6, s6, 50000, 443, seq=1001, ack=9001, flags="A"))
    add(23, craft.tcp_packet(c6, s6, 50000, 443, seq=1001, ack=9001, flags="PA", payload=b"hello"))
    add(24, craft.tcp_packet(s6, c6, 443, 50000, seq=9001, ack=1006, flags="RA", ttl=57))
    add(30, craft.tcp_packet(c, s, 41002, 8080, seq=300, flags="S"))
    add(31, craft.tcp_packet(s, c, 8080, 41002, seq=800, ack=301, flags="SA", ttl=57))
    add(32, craft.tcp_packet(c, s, 41002, 8080, seq=301, ack=801, flags="A"))
    add(33, craft.tcp_packet(c, s, 41002, 8080, seq=301, ack=801, flags="PA", payload=b"ping"))
    add(
        34,
        craft.tcp_packet(s, c, 8080, 41002, seq=801, ack=305, flags="RA", payload=HOSTILE_RST_TEXT, ttl=57),
    )
    craft.write_pcap(path, packets, nanosecond=True)
    return path

