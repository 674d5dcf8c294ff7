"""Decoding inside records: IPv4 options and fragments, IPv6 extension headers, ICMP errors, TCP options."""

from __future__ import annotations

import struct

import pytest
from ingest_helpers import T0, read_bytes, records

from whyreset.ingest import craft
from whyreset.model import ACK, CWR, ECE, NS, SYN, Capture

V4 = ("10.0.0.1", "10.0.0.2")
V6 = ("2001:db8::1", "2001:db8::2")


def decode(*packets: bytes, snaplen: int = 262144) -> Capture:
    return read_bytes(craft.pcap_bytes(records(packets), snaplen=snaplen, nanosecond=True))


def check_accounting(capture: Capture, later_fragments: int = 0) -> None:
    """Every record lands in exactly one bucket of the report."""
    report = capture.report
    buckets = (
        report.tcp_segments
        + report.non_ip
        + report.non_tcp
        + report.undecodable
        + len(capture.icmp_errors)
        + sum(report.unsupported_link_types.values())
        + later_fragments
    )
    assert buckets == report.records


# ------------------------------------------------------------------------------------------------ IPv4
@pytest.mark.parametrize("options", [b"\x94\x04\x00\x00", b"\x01" * 40, b"\x07\x07\x04" + bytes(4) + b"\x00"])
def test_ipv4_options_move_the_tcp_header(options: bytes) -> None:
    packet = craft.tcp_packet(*V4, 1, 2, seq=77, flags="S", mss=1200, ip_options=options)
    capture = decode(packet)
    assert list(capture.packets["seq"]) == [77]
    assert list(capture.packets["opt_mss"]) == [1200]


def test_impossible_ipv4_lengths_are_undecodable() -> None:
    good = craft.tcp_packet(*V4, 1, 2)
    short_ihl = bytes([0x44]) + good[1:]
    short_total = good[:2] + struct.pack("!H", 12) + good[4:]
    tcp_longer_than_ip = good[:2] + struct.pack("!H", 30) + good[4:]
    bad_offset = good[:32] + bytes([0x40]) + good[33:]  # TCP data offset 4 (< 5 words)
    capture = decode(short_ihl, short_total, tcp_longer_than_ip, bad_offset, good)
    assert capture.report.undecodable == 4
    assert len(capture.packets) == 1
    check_accounting(capture)


def test_ipv4_fragments_first_decoded_and_marked_later_skipped() -> None:
    whole = craft.tcp_packet(*V4, 1, 2, seq=4242, flags="PA", payload=b"z" * 100, df=False, ip_id=99)
    fragments = craft.fragment_ipv4(whole, 48)
    assert len(fragments) == 3
    capture = decode(*fragments)
    t = capture.packets
    assert list(t["seq"]) == [4242]
    assert list(t["truncated"]) == [True]
    assert list(t["ip_id"]) == [99]
    assert capture.report.fragments == 3
    check_accounting(capture, later_fragments=2)


def test_first_fragment_too_short_for_a_tcp_header_is_undecodable() -> None:
    whole = craft.tcp_packet(*V4, 1, 2, payload=b"z" * 30, df=False)
    capture = decode(*craft.fragment_ipv4(whole, 8))
    assert capture.report.undecodable == 1
    assert capture.report.fragments == len(craft.fragment_ipv4(whole, 8))
    assert len(capture.packets) == 0


# ------------------------------------------------------------------------------------------------ IPv6
EXTENSIONS = [
    [craft.Ipv6Ext(craft.IPPROTO_HOPOPTS)],
    [craft.Ipv6Ext(craft.IPPROTO_HOPOPTS), craft.Ipv6Ext(craft.IPPROTO_DSTOPTS, b"\x01\x0c" + bytes(12))],
    [craft.Ipv6Ext(craft.IPPROTO_ROUTING, b"\x00\x00" + bytes(4) + bytes(16))],
    [craft.Ipv6Ext(craft.IPPROTO_AH, bytes(22))],
    [craft.Ipv6Ext(craft.IPPROTO_HOPOPTS), craft.Ipv6Ext(craft.IPPROTO_AH, bytes(14)),
     craft.Ipv6Ext(craft.IPPROTO_DSTOPTS)],
]  # fmt: skip


@pytest.mark.parametrize("chain", EXTENSIONS)
def test_ipv6_extension_headers_are_walked(chain: list[craft.Ipv6Ext]) -> None:
    packet = craft.tcp_packet(*V6, 1, 2, seq=31337, flags="PA", payload=b"abc", ext_headers=chain, ttl=17)
    capture = decode(packet)
    t = capture.packets
    assert list(t["seq"]) == [31337]
    assert list(t["payload_len"]) == [3]
    assert list(t["ttl"]) == [17]
    assert not t["truncated"].any()


def test_ipv6_extension_chain_cut_by_snaplen_is_undecodable() -> None:
    chain = [craft.Ipv6Ext(craft.IPPROTO_HOPOPTS, bytes(30))]
    packet = craft.tcp_packet(*V6, 1, 2, ext_headers=chain)
    capture = decode(packet, snaplen=14 + 40 + 20)
    assert capture.report.undecodable == 1


def test_ipv6_fragments() -> None:
    whole = craft.tcp_packet(*V6, 1, 2, seq=9, flags="PA", payload=b"q" * 100)
    fragments = craft.fragment_ipv6(whole, 48, ident=0xABCDEF)
    atomic = craft.ipv6_packet(
        *V6, craft.IPPROTO_TCP, whole[40:], ext_headers=[craft.ipv6_fragment_ext(0, False, 7)]
    )
    capture = decode(*fragments, atomic)
    t = capture.packets
    assert list(t["seq"]) == [9, 9]
    assert list(t["truncated"]) == [True, False]  # an atomic fragment (RFC 6946) is a whole packet
    assert list(t["ip_id"]) == [0xABCDEF, 7]
    assert capture.report.fragments == len(fragments)
    check_accounting(capture, later_fragments=len(fragments) - 1)


@pytest.mark.parametrize("next_header", [50, 59, 17])
def test_ipv6_payloads_that_are_not_tcp(next_header: int) -> None:
    packet = craft.ipv6_packet(*V6, next_header, bytes(16))
    capture = decode(packet)
    assert capture.report.non_tcp == 1
    check_accounting(capture)


# ------------------------------------------------------------------------------------------------ ICMP
def test_icmp_errors_quoting_tcp() -> None:
    syn = craft.tcp_packet(*V4, 40000, 80, seq=123456, flags="S")
    syn6 = craft.tcp_packet(*V6, 40001, 443, seq=654321, flags="S")
    errors = [
        craft.icmp_error("192.0.2.1", syn, code=13, ttl=250),  # administratively prohibited
        craft.icmp_error("192.0.2.2", syn, icmp_type=11, code=0),  # time exceeded
        craft.icmp_error("192.0.2.3", syn, quote_bytes=24),  # IP header + 4 bytes: ports, no sequence
        craft.icmp_error("2001:db8::ff", syn6, code=4, ttl=61),  # port unreachable
        craft.icmp_error("2001:db8::fe", syn6, icmp_type=3, code=0),
    ]
    capture = decode(syn, *errors)
    icmp = capture.icmp_errors
    assert [e.frame for e in icmp] == [2, 3, 4, 5, 6]
    assert [e.ts_ns for e in icmp] == [T0 + i * 1000 for i in range(1, 6)]
    assert [(e.icmp_type, e.icmp_code) for e in icmp] == [(3, 13), (11, 0), (3, 3), (1, 4), (3, 0)]
    assert [e.reporter for e in icmp] == [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "2001:db8::ff",
        "2001:db8::fe",
    ]
    assert [e.ttl for e in icmp] == [250, 64, 64, 61, 64]
    assert [e.ip_version for e in icmp] == [4, 4, 4, 6, 6]
    assert [e.quoted_seq for e in icmp] == [123456, 123456, None, 654321, 654321]
    assert (icmp[0].quoted_src, icmp[0].quoted_dst, icmp[0].quoted_sport, icmp[0].quoted_dport) == (
        "10.0.0.1", "10.0.0.2", 40000, 80,
    )  # fmt: skip
    assert (icmp[3].quoted_src, icmp[3].quoted_dport) == ("2001:db8::1", 443)
    assert len(capture.packets) == 1
    check_accounting(capture)


def test_icmp_that_quotes_no_tcp_is_not_an_error_record() -> None:
    udp = craft.udp_packet(*V4, 5353, 53, b"x")
    echo = craft.ipv4_packet(*V4, craft.IPPROTO_ICMP, b"\x08\x00\x00\x00\x00\x01\x00\x01")
    too_short = craft.icmp_error("192.0.2.1", craft.tcp_packet(*V4, 1, 2), quote_bytes=22)
    capture = decode(craft.icmp_error("192.0.2.1", udp), echo, too_short)
    assert capture.icmp_errors == []
    assert capture.report.non_tcp == 3


def test_icmp_quoting_tcp_behind_ipv6_extension_headers() -> None:
    chain = [craft.Ipv6Ext(craft.IPPROTO_DSTOPTS)]
    syn6 = craft.tcp_packet(*V6, 7, 8, seq=5, flags="S", ext_headers=chain)
    capture = decode(craft.icmp_error("2001:db8::ff", syn6))
    assert [(e.quoted_sport, e.quoted_dport, e.quoted_seq) for e in capture.icmp_errors] == [(7, 8, 5)]


# ------------------------------------------------------------------------------------------------ TCP
def test_all_flag_bits() -> None:
    packet = craft.tcp_packet(*V4, 1, 2, flags="SAECN")
    assert list(decode(packet).packets["flags"]) == [SYN | ACK | ECE | CWR | NS]


def test_four_sack_blocks_and_unknown_options() -> None:
    blocks = [(1, 2), (3, 4), (5, 6), (7, 8)]
    four = craft.tcp_packet(*V4, 1, 2, flags="A", sack_blocks=blocks)
    # MPTCP (kind 30), a TFO cookie (kind 34), NOP NOP, MSS.
    mptcp_and_tfo = b"\x1e\x0c" + bytes(10) + b"\x22\x0a" + bytes(8) + b"\x01\x01\x02\x04\x05\xb4"
    unknown = craft.tcp_packet(*V4, 1, 2, flags="S", raw_options=mptcp_and_tfo)
    t = decode(four, unknown).packets
    assert list(t["sack_count"]) == [4, 0]
    assert t["sack_blocks"][0].tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert list(t["opt_mss"]) == [0, 1460]


@pytest.mark.parametrize(
    "options,expected_mss,expected_ts",
    [
        (
            b"\x02\x04\x05\xb4" + b"\x08\x00" + bytes(10),
            1460,
            False,
        ),  # zero length: stop, keep what came before
        (b"\x02\x04\x05\xb4" + b"\x00" + b"\x08\x0a" + bytes(9), 1460, False),  # end of list: stop
        (b"\x01\x01\x08\x0a" + bytes(8) + b"\x02\x04\x05\xb4", 1460, True),  # usual timestamps then MSS
        (b"\x02\x28" + bytes(2), 0, False),  # option longer than the header
        (b"\x02\x03\x05\xb4", 0, False),  # MSS with a wrong length is not an MSS
    ],
)
def test_malformed_options_stop_the_walk(options: bytes, expected_mss: int, expected_ts: bool) -> None:
    packet = craft.tcp_packet(*V4, 1, 2, flags="S", raw_options=options)
    t = decode(packet).packets
    assert list(t["opt_mss"]) == [expected_mss]
    assert list(t["opt_has_ts"]) == [expected_ts]


def test_out_of_range_window_scale_is_kept_visible() -> None:
    t = decode(
        craft.tcp_packet(*V4, 1, 2, flags="S", wscale=15), craft.tcp_packet(*V4, 1, 2, wscale=200)
    ).packets
    assert list(t["opt_wscale"]) == [15, 127]


def test_rst_payload_is_what_was_captured() -> None:
    rst = craft.tcp_packet(*V4, 1, 2, flags="R", payload=b"abcdefghij")
    capture = decode(rst, snaplen=14 + 20 + 20 + 4)
    assert capture.rst_payloads == {1: b"abcd"}
    assert list(capture.packets["payload_len"]) == [10]
