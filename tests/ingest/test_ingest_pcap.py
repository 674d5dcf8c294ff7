"""Classic pcap: magics, byte orders, timestamps, link types, snaplen, sources (path, stream, chunks)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from ingest_helpers import T0, handshake, read_bytes, read_path, records

from whyreset.ingest import craft, iter_capture
from whyreset.model import ACK, PSH, RST, SYN, format_addr, parse_addr

LINK_TYPES = [
    craft.LINKTYPE_ETHERNET,
    craft.LINKTYPE_LINUX_SLL,
    craft.LINKTYPE_LINUX_SLL2,
    craft.LINKTYPE_RAW,
    craft.LINKTYPE_RAW_DLT12,
    craft.LINKTYPE_RAW_DLT14,
    craft.LINKTYPE_NULL,
    craft.LINKTYPE_LOOP,
]


def check_handshake(capture, src="10.0.0.1", dst="10.0.0.2") -> None:  # type: ignore[no-untyped-def]
    """The five segments of `handshake`, field by field."""
    t = capture.packets
    assert len(t) == 5
    assert list(t["frame"]) == [1, 2, 3, 4, 5]
    assert list(t["ts_ns"]) == [T0 + i * 1000 for i in range(5)]
    assert list(t["flags"]) == [SYN, SYN | ACK, ACK, PSH | ACK, RST | ACK]
    assert list(t["seq"]) == [1000, 5000, 1001, 1001, 5001]
    assert list(t["ack"]) == [0, 1001, 5001, 5001, 1019]
    assert list(t["sport"]) == [40000, 80, 40000, 40000, 80]
    assert format_addr(t["src_hi"][0], t["src_lo"][0]) == src
    assert format_addr(t["dst_hi"][0], t["dst_lo"][0]) == dst
    assert list(t["ttl"]) == [64, 57, 64, 64, 64]
    assert list(t["opt_mss"]) == [1460, 1400, 0, 0, 0]
    assert list(t["opt_wscale"]) == [7, 9, -1, -1, -1]
    assert list(t["opt_sack_perm"]) == [True, True, False, False, False]
    assert list(t["opt_has_ts"]) == [True, True, True, True, False]
    assert list(t["opt_ts_val"]) == [11, 22, 12, 13, 0]
    assert list(t["opt_ts_ecr"]) == [0, 11, 22, 22, 0]
    assert list(t["sack_count"]) == [0, 0, 0, 2, 0]
    assert t["sack_blocks"][3].tolist() == [[7000, 8000], [9000, 9500], [0, 0], [0, 0]]
    assert list(t["payload_len"]) == [0, 0, 0, 18, 16]
    assert list(t["captured_payload"]) == [0, 0, 0, 18, 16]
    assert not t["truncated"].any()
    assert capture.rst_payloads == {5: b"connection reset"}
    report = capture.report
    assert (report.records, report.tcp_segments, report.undecodable, report.non_ip) == (5, 5, 0, 0)


@pytest.mark.parametrize("nanosecond", [False, True])
@pytest.mark.parametrize("big_endian", [False, True])
def test_magics_and_byte_orders(nanosecond: bool, big_endian: bool) -> None:
    data = craft.pcap_bytes(records(handshake()), nanosecond=nanosecond, big_endian=big_endian)
    capture = read_bytes(data)
    assert capture.report.format == "pcap"
    t = capture.packets
    # Microsecond files cannot carry the last three digits of the timestamp.
    expected = [T0 + i * 1000 for i in range(5)]
    if not nanosecond:
        expected = [stamp // 1000 * 1000 for stamp in expected]
    assert list(t["ts_ns"]) == expected
    assert list(t["seq"]) == [1000, 5000, 1001, 1001, 5001]


@pytest.mark.parametrize("linktype", LINK_TYPES)
@pytest.mark.parametrize("family", [4, 6])
def test_link_types(linktype: int, family: int) -> None:
    src, dst = ("10.0.0.1", "10.0.0.2") if family == 4 else ("2001:db8::1", "2001:db8::2")
    data = craft.pcap_bytes(records(handshake(src, dst), linktype), linktype=linktype, nanosecond=True)
    capture = read_bytes(data)
    check_handshake(capture, src, dst)
    assert capture.report.link_types == {linktype: 5}
    assert set(capture.packets["ip_version"]) == {family}


@pytest.mark.parametrize("linktype,family", [(craft.LINKTYPE_IPV4, 4), (craft.LINKTYPE_IPV6, 6)])
def test_single_version_raw_link_types(linktype: int, family: int) -> None:
    src, dst = ("10.0.0.1", "10.0.0.2") if family == 4 else ("2001:db8::1", "2001:db8::2")
    data = craft.pcap_bytes(records(handshake(src, dst), linktype), linktype=linktype, nanosecond=True)
    check_handshake(read_bytes(data), src, dst)
    # The other version under a one-version link type is a broken record, not a packet.
    other = "2001:db8::1" if family == 4 else "10.0.0.1"
    other_dst = "2001:db8::2" if family == 4 else "10.0.0.2"
    wrong = craft.pcap_bytes(records(handshake(other, other_dst), linktype), linktype=linktype)
    report = read_bytes(wrong).report
    assert (report.tcp_segments, report.undecodable) == (0, 5)


@pytest.mark.parametrize("family", [craft.AF_INET6_LINUX, craft.AF_INET6_BSD, 28, 30])
@pytest.mark.parametrize("writer_big_endian", [False, True])
def test_bsd_null_families_and_byte_orders(family: int, writer_big_endian: bool) -> None:
    packets = handshake("2001:db8::1", "2001:db8::2")
    frames = [
        (T0 + i * 1000, craft.frame(0, p, null_family=family, null_big_endian=writer_big_endian))
        for i, p in enumerate(packets)
    ]
    capture = read_bytes(craft.pcap_bytes(frames, linktype=0, nanosecond=True))
    check_handshake(capture, "2001:db8::1", "2001:db8::2")


@pytest.mark.parametrize(
    "tags",
    [
        [100],
        [(craft.TPID_8021AD, 100), 200],
        [(craft.TPID_8021AD, 1), (0x9100, 2), 3],
    ],
)
def test_vlan_stacks(tags: list) -> None:  # type: ignore[type-arg]
    data = craft.pcap_bytes(records(handshake(), vlan=tags), nanosecond=True)
    check_handshake(read_bytes(data))


def test_vlan_tags_on_linux_cooked_captures() -> None:
    ip = handshake()[0]
    tagged = craft.frame(craft.LINKTYPE_LINUX_SLL, b"\x00\x64" + b"\x08\x00" + ip, ethertype=0x8100)
    capture = read_bytes(craft.pcap_bytes([(T0, tagged)], linktype=craft.LINKTYPE_LINUX_SLL))
    assert list(capture.packets["seq"]) == [1000]


def test_records_that_are_not_ip_or_not_tcp_are_counted() -> None:
    arp = craft.frame(
        craft.LINKTYPE_ETHERNET, b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), ethertype=0x0806
    )
    udp = craft.frame(craft.LINKTYPE_ETHERNET, craft.udp_packet("10.0.0.1", "10.0.0.9", 53, 53, b"q"))
    udp6 = craft.frame(craft.LINKTYPE_ETHERNET, craft.udp_packet("::1", "::2", 53, 53, b"q"))
    tcp = craft.frame(craft.LINKTYPE_ETHERNET, handshake()[0])
    llc = bytes(12) + b"\x00\x26" + bytes(38)  # 802.3 length field, not an EtherType
    data = craft.pcap_bytes([(T0, f) for f in (arp, udp, tcp, udp6, llc)])
    capture = read_bytes(data)
    report = capture.report
    assert (report.records, report.tcp_segments, report.non_ip, report.non_tcp) == (5, 1, 2, 2)
    assert list(capture.packets["frame"]) == [3]


def test_addresses_are_stored_as_mapped_halves() -> None:
    v4 = craft.tcp_packet("192.0.2.7", "198.51.100.9", 1, 2)
    v6 = craft.tcp_packet("2001:db8::7", "2001:db8:0:1::9", 1, 2)
    t = read_bytes(craft.pcap_bytes(records([v4, v6]))).packets
    assert (int(t["src_hi"][0]), int(t["src_lo"][0])) == parse_addr("192.0.2.7")
    assert (int(t["dst_hi"][1]), int(t["dst_lo"][1])) == parse_addr("2001:db8:0:1::9")
    assert list(t["ip_version"]) == [4, 6]
    assert list(t["ip_df"]) == [True, False]


def test_path_stream_and_chunks_agree(tmp_path) -> None:  # type: ignore[no-untyped-def]
    packets = handshake() * 7
    data = craft.pcap_bytes(records(packets), nanosecond=True)
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    whole = read_path(path)
    streamed = read_bytes(data)
    chunks = list(iter_capture(str(path), chunk_records=4))
    assert [len(c.packets) for c in chunks] == [4] * 8 + [3]
    assert all(c.report is chunks[0].report for c in chunks)
    for name in ("frame", "seq", "ack", "ts_ns", "flags", "opt_ts_val"):
        joined = np.concatenate([c.packets[name] for c in chunks])
        assert np.array_equal(whole.packets[name], streamed.packets[name])
        assert np.array_equal(whole.packets[name], joined)
    assert whole.report.records == 35
    assert whole.report.bytes_read == len(data)
    assert sorted(whole.rst_payloads) == [5 + 5 * i for i in range(7)]


def test_open_file_object_is_memory_mapped_or_streamed_alike(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = craft.pcap_bytes(records(handshake()), nanosecond=True)
    path = tmp_path / "c.pcap"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        check_handshake(merge_all(iter_capture(handle)))


def merge_all(chunks):  # type: ignore[no-untyped-def]
    from ingest_helpers import merge

    return merge(list(chunks))


def test_snaplen_cuts_keep_what_is_decodable() -> None:
    packets = [
        craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, seq=7, flags="PA", payload=b"x" * 100,
                         timestamps=(5, 6)),
        craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, seq=8, flags="S", mss=1460, wscale=3, sack_perm=True,
                         timestamps=(9, 9)),
        craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, seq=9, flags="A"),
    ]  # fmt: skip
    # 14 Ethernet + 20 IP + 32 TCP + 4 payload bytes of the first; the SYN is cut inside its options (MSS,
    # SACK-permitted and timestamps survive, window scale is lost); the bare ACK (54 bytes) fits.
    data = craft.pcap_bytes(records(packets), snaplen=70)
    capture = read_bytes(data)
    t = capture.packets
    assert list(t["seq"]) == [7, 8, 9]
    assert list(t["payload_len"]) == [100, 0, 0]
    assert list(t["captured_payload"]) == [4, 0, 0]
    assert list(t["truncated"]) == [True, True, False]
    assert list(t["opt_ts_val"]) == [5, 9, 0]
    assert list(t["opt_wscale"]) == [-1, -1, -1]
    assert list(t["opt_mss"]) == [0, 1460, 0]
    assert list(t["opt_sack_perm"]) == [False, True, False]
    assert list(t["frame_len"]) == [14 + 20 + 32 + 100, 14 + 20 + 40, 14 + 20 + 20]
    report = capture.report
    assert (report.truncated, report.undecodable, report.tcp_segments) == (2, 0, 3)
    cut_in_header = craft.pcap_bytes(records(packets[2:]), snaplen=14 + 20 + 19)
    assert read_bytes(cut_in_header).report.undecodable == 1


def test_ethernet_padding_is_not_payload() -> None:
    ack = craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, flags="A")
    padded = craft.frame(craft.LINKTYPE_ETHERNET, ack) + bytes(6)  # 54 -> 60 bytes, the Ethernet minimum
    t = read_bytes(craft.pcap_bytes([(T0, padded)])).packets
    assert list(t["payload_len"]) == [0]
    assert list(t["captured_payload"]) == [0]


def test_tso_packets_with_zero_ip_length_use_the_frame_length() -> None:
    big = craft.tcp_packet("10.0.0.1", "10.0.0.2", 1, 2, flags="PA", payload=b"y" * 3000)
    zeroed = big[:2] + b"\x00\x00" + big[4:]
    t = read_bytes(craft.pcap_bytes([(T0, craft.frame(1, zeroed))])).packets
    assert list(t["payload_len"]) == [3000]


def test_fcs_bits_in_the_link_type_field_are_ignored() -> None:
    data = bytearray(craft.pcap_bytes(records(handshake()), nanosecond=True))
    data[20:24] = (craft.LINKTYPE_ETHERNET | 0x10000000 | (2 << 29)).to_bytes(4, "little")
    check_handshake(read_bytes(bytes(data)))


def test_a_capture_with_no_records_yields_one_empty_chunk() -> None:
    chunks = list(iter_capture(io.BytesIO(craft.pcap_bytes([]))))
    assert len(chunks) == 1
    assert len(chunks[0].packets) == 0
    assert chunks[0].report.format == "pcap"
