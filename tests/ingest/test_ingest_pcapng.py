"""pcapng: interfaces with different link types and timestamp resolutions, sections, byte orders, blocks."""

from __future__ import annotations

import io
import struct

import pytest
from ingest_helpers import T0, handshake, read_bytes

from whyreset.errors import CorruptCaptureError, TruncatedCaptureError, UnsupportedLinkTypeError
from whyreset.ingest import craft, iter_capture
from whyreset.model import format_addr


def write(build, big_endian: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    build(craft.PcapngWriter(buffer, big_endian=big_endian))
    return buffer.getvalue()


@pytest.mark.parametrize("big_endian", [False, True])
def test_interfaces_with_different_link_types(big_endian: bool) -> None:
    v4 = handshake()
    v6 = handshake("2001:db8::1", "2001:db8::2", 50000, 443)

    def build(w: craft.PcapngWriter) -> None:
        w.section()
        eth = w.interface(craft.Interface(craft.LINKTYPE_ETHERNET))
        sll2 = w.interface(craft.Interface(craft.LINKTYPE_LINUX_SLL2, tsresol=9))
        raw = w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=3))
        for i in range(5):
            w.packet(T0 + i * 1_000_000, craft.frame(1, v4[i]), eth)
            w.packet(T0 + i * 1_000_000 + 1, craft.frame(276, v6[i]), sll2)
        w.packet(T0, v4[0], raw)

    capture = read_bytes(write(build, big_endian))
    t = capture.packets
    assert capture.report.format == "pcapng"
    assert capture.report.link_types == {1: 5, 276: 5, 101: 1}
    assert list(t["frame"]) == list(range(1, 12))
    assert list(t["iface"]) == [0, 1] * 5 + [2]
    # Microsecond interface: the last three digits are lost; nanosecond: exact; millisecond: truncated.
    assert int(t["ts_ns"][0]) == T0 // 1000 * 1000
    assert int(t["ts_ns"][1]) == T0 + 1
    assert int(t["ts_ns"][10]) == T0 // 1_000_000 * 1_000_000
    assert list(t["seq"][:4]) == [1000, 1000, 5000, 5000]
    assert list(t["sport"][:2]) == [40000, 50000]
    assert format_addr(t["src_hi"][1], t["src_lo"][1]) == "2001:db8::1"
    assert capture.rst_payloads == {9: b"connection reset", 10: b"connection reset"}


@pytest.mark.parametrize("tsresol", [0, 1, 6, 9, 10, 12, 0x80 | 10, 0x80 | 20, 0x80 | 30, 0x80 | 40])
def test_timestamp_resolutions(tsresol: int) -> None:
    # 64 bits of picoseconds (or 2**-40 s) cover months, not decades: fine resolutions need an offset.
    fine = tsresol in (12, 0x80 | 40)
    interface = craft.Interface(craft.LINKTYPE_RAW, tsresol=tsresol, tsoffset=1_699_999_000 if fine else 0)
    stamps = [T0, T0 + 123_456_789, T0 + 3_000_000_000]

    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(interface)
        for stamp in stamps:
            w.packet(stamp, handshake()[0])

    t = read_bytes(write(build)).packets
    base, exponent = (2, tsresol & 0x7F) if tsresol & 0x80 else (10, tsresol)
    for stamp, got in zip(stamps, t["ts_ns"].tolist(), strict=True):
        units = interface.units(stamp)
        assert got == units * 1_000_000_000 // base**exponent + interface.tsoffset * 1_000_000_000
        # Converting to units and back loses less than one unit (plus a nanosecond of rounding).
        assert 0 <= stamp - got <= 1_000_000_000 // base**exponent + 1


def test_timestamp_offset_is_added() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9, tsoffset=1_600_000_000))
        w.packet(T0, handshake()[0])

    t = read_bytes(write(build)).packets
    assert int(t["ts_ns"][0]) == T0


def test_default_resolution_is_microseconds() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(craft.LINKTYPE_RAW, write_tsresol=False))
        w.packet(T0, handshake()[0])

    assert int(read_bytes(write(build)).packets["ts_ns"][0]) == T0 // 1000 * 1000


def test_several_sections_with_their_own_byte_order_and_interfaces() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section(big_endian=False)
        w.interface(craft.Interface(craft.LINKTYPE_ETHERNET, tsresol=9))
        w.packet(T0, craft.frame(1, handshake()[0]))
        w.section(big_endian=True)
        w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
        w.interface(craft.Interface(craft.LINKTYPE_LINUX_SLL, tsresol=9))
        w.packet(T0 + 1, handshake()[1], 0)
        w.packet(T0 + 2, craft.frame(113, handshake()[2]), 1)
        w.section(big_endian=False)
        w.interface(craft.Interface(craft.LINKTYPE_NULL, tsresol=9))
        w.packet(T0 + 3, craft.frame(0, handshake()[3]))

    capture = read_bytes(write(build))
    t = capture.packets
    assert list(t["seq"]) == [1000, 5000, 1001, 1001]
    assert list(t["ts_ns"]) == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert list(t["iface"]) == [0, 0, 1, 0]
    assert capture.report.link_types == {1: 1, 101: 1, 113: 1, 0: 1}


def test_simple_obsolete_statistics_and_unknown_blocks() -> None:
    syn, synack, ack = handshake()[:3]

    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
        w.block(0x00000BAD, b"unknown block type, skipped")
        w.packet(T0, syn)
        w.simple_packet(synack)  # no timestamp: takes the previous packet's
        w.statistics(0, T0 + 5, received=3)
        w.block(0x00000004, b"\x00\x00\x00\x00")  # an (empty) name resolution block
        # An obsolete Packet Block: interface (2 bytes), drops (2 bytes), then like an EPB.
        body = struct.pack("<HHIIII", 0, 0, (T0 + 7) >> 32, (T0 + 7) & 0xFFFFFFFF, len(ack), len(ack)) + ack
        w.block(0x00000002, body)

    capture = read_bytes(write(build))
    t = capture.packets
    assert list(t["seq"]) == [1000, 5000, 1001]
    assert list(t["ts_ns"]) == [T0, T0, T0 + 7]
    assert list(t["frame"]) == [1, 2, 3]


def test_simple_packet_blocks_are_cut_to_the_interface_snaplen() -> None:
    data_segment = handshake()[3]

    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(craft.LINKTYPE_RAW, snaplen=60))
        w.simple_packet(data_segment)

    t = read_bytes(write(build)).packets
    assert list(t["truncated"]) == [True]
    assert list(t["payload_len"]) == [18]
    assert list(t["opt_ts_val"]) == [13]  # the timestamps option ends at byte 52, inside the snaplen
    assert list(t["sack_count"]) == [0]  # the SACK option would end at byte 72: not captured


def test_unsupported_interfaces_are_counted_and_skipped() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(105))  # IEEE 802.11
        w.interface(craft.Interface(craft.LINKTYPE_RAW))
        w.packet(T0, b"\x08\x00" + bytes(30), 0)
        w.packet(T0, handshake()[0], 1)

    capture = read_bytes(write(build))
    assert len(capture.packets) == 1
    assert capture.report.unsupported_link_types == {105: 1}


def test_only_unsupported_link_types_is_an_error() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(105))
        w.packet(T0, bytes(40), 0)

    pcap = craft.pcap_bytes([(T0, bytes(40))], linktype=147)
    empty_records = craft.pcap_bytes([(T0, b""), (T0, b"")], linktype=147)
    for data, name in ((write(build), "105"), (pcap, "147"), (empty_records, "147")):
        chunks = []
        with pytest.raises(UnsupportedLinkTypeError) as raised:
            chunks.extend(iter_capture(io.BytesIO(data)))
        assert name in str(raised.value)
        # The records were still read (and counted) before the verdict.
        assert chunks[-1].report.records == sum(chunks[-1].report.unsupported_link_types.values()) > 0
        assert chunks[-1].report.error == raised.value.describe()


def test_empty_captures_of_unsupported_link_types_are_errors() -> None:
    with pytest.raises(UnsupportedLinkTypeError):
        list(iter_capture(io.BytesIO(craft.pcap_bytes([], linktype=105))))

    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(105))

    with pytest.raises(UnsupportedLinkTypeError):
        list(iter_capture(io.BytesIO(write(build))))
    # An empty capture of a supported link type is fine.
    assert len(list(iter_capture(io.BytesIO(craft.pcap_bytes([]))))) == 1


def _one_packet(w: craft.PcapngWriter) -> None:
    w.section()
    w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
    w.packet(T0, handshake()[0])
    w.packet(T0 + 1, handshake()[1])


def _epb_offset(data: bytes, nth: int) -> int:
    """Byte offset of the nth (0-based) enhanced packet block."""
    pos, seen = 0, 0
    while pos < len(data):
        block_type, length = struct.unpack_from("<II", data, pos)
        if block_type == 6:
            if seen == nth:
                return pos
            seen += 1
        pos += length
    raise AssertionError("no such block")


def _read_until_error(data: bytes) -> tuple[list, Exception]:  # type: ignore[type-arg]
    chunks = []
    try:
        for chunk in iter_capture(io.BytesIO(data)):
            chunks.append(chunk)
    except Exception as exc:  # the test inspects the type
        return chunks, exc
    raise AssertionError("no error raised")


def test_block_trailer_mismatch_is_corruption_after_the_good_packets() -> None:
    data = bytearray(write(_one_packet))
    second = _epb_offset(data, 1)
    length = struct.unpack_from("<I", data, second + 4)[0]
    struct.pack_into("<I", data, second + length - 4, length + 4)
    chunks, error = _read_until_error(bytes(data))
    assert isinstance(error, CorruptCaptureError)
    assert sum(len(c.packets) for c in chunks) == 1
    assert error.record == 2 and error.offset == second
    assert chunks[-1].report.error_record == 2


@pytest.mark.parametrize(
    "field_offset,value,message",
    [
        (4, 13, "impossible block length"),
        (4, 0xFFFFFFF0, "impossible block length"),
        (8, 7, "undefined interface"),
        (20, 5000, "captured bytes"),
    ],
)
def test_impossible_packet_block_fields(field_offset: int, value: int, message: str) -> None:
    data = bytearray(write(_one_packet))
    second = _epb_offset(data, 1)
    struct.pack_into("<I", data, second + field_offset, value)
    chunks, error = _read_until_error(bytes(data))
    assert isinstance(error, CorruptCaptureError), error
    assert message in str(error)
    assert sum(len(c.packets) for c in chunks) == 1
    assert error.record == 2


def test_first_block_must_be_a_section_header_and_magic_valid() -> None:
    data = bytearray(write(_one_packet))
    struct.pack_into("<I", data, 8, 0x11223344)
    _, error = _read_until_error(bytes(data))
    assert isinstance(error, CorruptCaptureError)
    assert "byte-order magic" in str(error)


def test_cut_block_is_truncation() -> None:
    data = write(_one_packet)
    chunks, error = _read_until_error(data[:-3])
    assert isinstance(error, TruncatedCaptureError)
    assert sum(len(c.packets) for c in chunks) == 1
    assert error.record == 2


def test_interface_described_between_packets() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
        w.packet(T0, handshake()[0], 0)
        w.interface(craft.Interface(craft.LINKTYPE_ETHERNET, tsresol=3))
        w.packet(T0 + 1_000_000, craft.frame(1, handshake()[1]), 1)
        w.packet(T0 + 2, handshake()[2], 0)

    capture = read_bytes(write(build))
    t = capture.packets
    assert list(t["seq"]) == [1000, 5000, 1001]
    assert list(t["iface"]) == [0, 1, 0]
    assert list(t["ts_ns"]) == [T0, (T0 + 1_000_000) // 1_000_000 * 1_000_000, T0 + 2]


def test_packet_naming_an_interface_described_later_is_corruption() -> None:
    def build(w: craft.PcapngWriter) -> None:
        w.section()
        w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
        w.interface(craft.Interface(craft.LINKTYPE_RAW, tsresol=9))
        w.packet(T0, handshake()[0], 1)

    data = bytearray(write(build))
    # Drop the second IDB: the packet now names an interface that does not exist (yet).
    first_idb = struct.unpack_from("<I", data, 4)[0]
    idb_len = struct.unpack_from("<I", data, first_idb + 4)[0]
    del data[first_idb + idb_len : first_idb + 2 * idb_len]
    _, error = _read_until_error(bytes(data))
    assert isinstance(error, CorruptCaptureError)
    assert "undefined interface 1" in str(error)
