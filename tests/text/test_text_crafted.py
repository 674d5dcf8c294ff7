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
    return struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, b"\x02\x00\x00\x00\x00\x01", sender, b"\0" * 6, target)


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
    port, host, v6 = errors
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
    assert [error.ts_ns for error in errors] == [(BASE_NS + at) % day_ns for at in (1000, 2000, 4000)]
    # tcpdump never prints the segment an ICMPv6 error quotes, only "2001:db8::2 tcp port 443": the error names
    # its victim's destination, and its sender is the host the error went to; the source port stays unknown.
    assert (v6.quoted_src, v6.quoted_sport, v6.quoted_dst, v6.quoted_dport) == ("2001:db8::1", None, "2001:db8::2", 443)
    assert (v6.icmp_type, v6.icmp_code, v6.quoted_seq) == (1, 4, None)
    assert any("name only the destination port" in limit for limit in report.limits)


def test_icmp_errors_without_v_name_only_the_destination_port(crafted_pcap: Path) -> None:
    """Without -v a port unreachable names the quoted destination and port ("ICMP 10.0.0.2 tcp port 80
    unreachable"); a host unreachable names neither protocol nor port: counted, not linked."""
    require_tools("tcpdump")
    report = ReadReport()
    captures = list(iter_text_capture(_stream(tcpdump_text(crafted_pcap, "-nn")), report))
    errors = [error for capture in captures for error in capture.icmp_errors]
    assert [(e.frame, e.quoted_src, e.quoted_sport, e.quoted_dst, e.quoted_dport) for e in errors] == [
        (2, "10.0.0.1", None, "10.0.0.2", 80),
        (5, "2001:db8::1", None, "2001:db8::2", 443),
    ]
    assert report.non_tcp == 4
    assert any("name only the destination port" in limit for limit in report.limits)
    assert any("naming no TCP port" in limit for limit in report.limits)


def test_unported_icmp_error_is_linked_to_the_connections_open_at_its_time(tmp_path: Path) -> None:
    """A REJECT answered with port unreachable, printed without -v: the error goes to the connections from the
    host to that port open when it came (two attempts at once here), not to a later attempt, nor to another
    port or host; the diagnosis says how the error was matched."""
    from whyreset.analysis import analyze

    def syn(sport: int, dport: int = 80, dst: str = "10.0.0.2") -> bytes:
        return craft.tcp_packet("10.0.0.1", dst, sport, dport, seq=1000 + sport, flags="S")

    s = 10**9
    packets = [
        (0, syn(40000)),
        (1000, syn(40001)),
        (2000, syn(40002, dport=81)),
        (3000, craft.icmp_error("10.0.0.9", syn(40000), code=3)),
        (10 * s, syn(40003)),
        (10 * s + 1000, syn(40004, dst="10.0.0.3")),
    ]
    path = tmp_path / "reject.pcap"
    craft.write_pcap(path, [(BASE_NS + ts, craft.frame(craft.LINKTYPE_ETHERNET, p)) for ts, p in packets])
    text = tmp_path / "reject.txt"
    text.write_bytes(tcpdump_text(path, "-nn"))
    analysis = analyze(str(text))
    linked = {conn.orig_p: [e.frame for e in conn.icmp_errors] for conn in analysis.connections}
    assert linked == {40000: [4], 40001: [4], 40002: [], 40003: [], 40004: []}
    first = analysis.connections[0]
    finding = analysis.findings[first.uid]
    assert finding.cause is not None and finding.cause.value == "icmp_unreachable"
    assert "shows no source port" in finding.evidence[0].text


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
