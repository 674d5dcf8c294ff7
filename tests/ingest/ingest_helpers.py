"""Helpers for the capture reader tests: small packets built with craft, and readers of bytes."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable

import pytest

from whyreset.ingest import craft, iter_capture, read_capture
from whyreset.model import Capture

T0 = 1_700_000_000_123_456_789
"""A capture timestamp with all nine sub-second digits in use."""


def handshake(
    src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 40000, dport: int = 80
) -> list[bytes]:
    """SYN, SYN-ACK, ACK, data, RST with a payload: five IP packets of one connection."""
    return [
        craft.tcp_packet(src, dst, sport, dport, seq=1000, flags="S", mss=1460, wscale=7, sack_perm=True,
                         timestamps=(11, 0), ip_id=1),
        craft.tcp_packet(dst, src, dport, sport, seq=5000, ack=1001, flags="SA", mss=1400, wscale=9,
                         sack_perm=True, timestamps=(22, 11), ttl=57),
        craft.tcp_packet(src, dst, sport, dport, seq=1001, ack=5001, flags="A", timestamps=(12, 22)),
        craft.tcp_packet(src, dst, sport, dport, seq=1001, ack=5001, flags="PA",
                         payload=b"GET / HTTP/1.0\r\n\r\n", timestamps=(13, 22),
                         sack_blocks=[(7000, 8000), (9000, 9500)]),
        craft.tcp_packet(dst, src, dport, sport, seq=5001, ack=1019, flags="RA", payload=b"connection reset"),
    ]  # fmt: skip


def records(
    packets: Iterable[bytes], linktype: int = craft.LINKTYPE_ETHERNET, **frame_kwargs: object
) -> list:
    """(ts_ns, frame) records one microsecond apart, wrapping IP packets for ``linktype``."""
    return [(T0 + i * 1000, craft.frame(linktype, p, **frame_kwargs)) for i, p in enumerate(packets)]  # type: ignore[arg-type]


def read_bytes(data: bytes, **kwargs: object) -> Capture:
    """Read a capture held in memory (the stream path)."""
    chunks = list(iter_capture(io.BytesIO(data), **kwargs))  # type: ignore[arg-type]
    return merge(chunks)


def merge(chunks: list[Capture]) -> Capture:
    from whyreset.model import PacketTable

    return Capture(
        PacketTable.concat([c.packets for c in chunks]),
        [e for c in chunks for e in c.icmp_errors],
        {k: v for c in chunks for k, v in c.rst_payloads.items()},
        chunks[-1].report,
    )


def read_path(path: object) -> Capture:
    return read_capture(path)  # type: ignore[arg-type]


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
