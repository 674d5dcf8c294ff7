"""Packets the corpus lacks, built with `whyreset.ingest.craft` and printed by tcpdump.

ICMP errors that quote TCP (whole, and cut after the ports), ICMPv6, 802.1Q tags under -e, UDP and ARP.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from test_text_formats import read_text
from test_text_vs_tshark import assert_agrees
from text_oracle import require_tools, tcpdump_text

from whyreset.ingest import craft
from whyreset.ingest.tcpdump_text import iter_text_capture
from whyreset.model import ReadReport

BASE_NS = 1_700_000_000 * 10**9


def _arp_request() -> bytes:
    sender, target = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    return struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\x02\x00\x00\x00\x00\x01", sender, b"\0" * 6, target
    )


@pytest.fixture(scope="module")
def crafted_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    syn_v4 = craft.tcp_packet("10.0.0.1", "10.0.0.2", 40000, 80, seq=1_000_000, flags="S", mss=1460, ttl=61)
    syn_v6 = craft.tcp_packet("2001:db8::1", "2001:db8::2", 40001, 443, seq=2_000_000, flags="S", wscale=7)
    data_v4 = craft.tcp_packet(
        "10.0.0.1", "10.0.0.3", 40002, 25, seq=3_000_000, ack=4_000_000, flags="PA", payload=b"x" * 100
    )
    fin_v4 = craft.tcp_packet(
        "10.0.0.1", "10.0.0.3", 40002, 25, seq=3_000_100, ack=4_000_000, flags="FA", timestamps=(5, 6)
    )
    packets = [
        craft.frame(craft.LINKTYPE_ETHERNET, syn_v4, vlan=[100]),
        craft.frame(craft.LINKTYPE_ETHERNET, craft.icmp_error("10.0.0.9", syn_v4, code=3, ttl=250)),
        craft.frame(craft.LINKTYPE_ETHERNET, craft.icmp_error("10.0.0.9", data_v4, code=1, quote_bytes=28)),
        craft.frame(craft.LINKTYPE_ETHERNET, syn_v6),
        craft.frame(craft.LINKTYPE_ETHERNET, craft.icmp_error("2001:db8::9", syn_v6, code=4, ttl=60)),
        craft.frame(craft.LINKTYPE_ETHERNET, craft.udp_packet("10.0.0.1", "10.0.0.2", 5353, 53, b"\0" * 12)),
        craft.frame(craft.LINKTYPE_ETHERNET, _arp_request(), ethertype=0x0806),
        craft.frame(craft.LINKTYPE_ETHERNET, data_v4),
        craft.frame(craft.LINKTYPE_ETHERNET, fin_v4, vlan=[(craft.TPID_8021AD, 100), 200]),
    ]
    path = tmp_path_factory.mktemp("crafted") / "crafted.pcap"
    craft.write_pcap(path, [(BASE_NS + index * 1000, packet) for index, packet in enumerate(packets)])
    return path


@pytest.mark.parametrize("options", [("-nn", "-v", "-e"), ("-nn", "-vv"), ("-nn",), ("-e",)])
def test_crafted_tcp_rows_agree_with_tshark(crafted_pcap: Path, options: tuple[str, ...]) -> None:
    report = assert_agrees(crafted_pcap, options)
    assert report.records == 9
    assert report.non_ip == 1
    assert report.non_tcp == 4  # three ICMP errors and the UDP datagram


def test_icmp_errors_quoting_tcp_under_v(crafted_pcap: Path) -> None:
    require_tools("tcpdump")
    report = ReadReport()
    captures = list(iter_text_capture(_stream(tcpdump_text(crafted_pcap, "-nn", "-v")), report))
    errors = [error for capture in captures for error in capture.icmp_errors]
    port, host = errors
    assert (port.frame, port.reporter, port.ttl, port.ip_version) == (2, "10.0.0.9", 250, 4)
    assert (port.icmp_type, port.icmp_code) == (3, 3)
    assert (port.quoted_src, port.quoted_sport) == ("10.0.0.1", 40000)
    assert (port.quoted_dst, port.quoted_dport, port.quoted_seq) == ("10.0.0.2", 80, 1_000_000)
    # Quoted to the RFC 792 minimum: tcpdump prints the ports, then "[|tcp]".
    assert (host.frame, host.icmp_type, host.icmp_code, host.quoted_dport, host.quoted_seq) == (
        3,
        3,
        1,
        25,
        None,
    )
    day_ns = 86_400 * 10**9  # the default timestamps carry the time of day only
    assert [error.ts_ns for error in errors] == [(BASE_NS + 1000) % day_ns, (BASE_NS + 2000) % day_ns]
    # tcpdump never prints the segment an ICMPv6 error quotes, only "2001:db8::2 tcp port 443": not linkable.
    assert any("ICMP errors printed without -v" in limit for limit in report.limits)


def test_icmp_errors_without_v_are_counted_not_linked(crafted_pcap: Path) -> None:
    require_tools("tcpdump")
    report = ReadReport()
    captures = list(iter_text_capture(_stream(tcpdump_text(crafted_pcap, "-nn")), report))
    assert [error for capture in captures for error in capture.icmp_errors] == []
    assert report.non_tcp == 4
    assert any("ICMP errors printed without -v" in limit for limit in report.limits)


def test_vlan_frames_keep_their_frame_length(crafted_pcap: Path) -> None:
    require_tools("tcpdump")
    table, _ = read_text(tcpdump_text(crafted_pcap, "-nn", "-e"))
    assert int(table["frame"][0]) == 1
    assert int(table["frame_len"][0]) == 14 + 4 + 44  # Ethernet + 802.1Q tag + IPv4/TCP with MSS
    assert int(table["frame"][-1]) == 9
    assert int(table["frame_len"][-1]) == 14 + 8 + 52  # Ethernet + QinQ tags + IPv4/TCP with timestamps
    assert int(table["flags"][-1]) == 0x011


def _stream(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)
