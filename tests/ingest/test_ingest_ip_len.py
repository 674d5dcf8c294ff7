"""The ``ip_len`` column: the IP packet length on the wire, as Zeek's *_ip_bytes count it."""

from __future__ import annotations

from ingest_helpers import read_bytes, records

from whyreset.ingest import craft
from whyreset.ingest.craft import IPPROTO_DSTOPTS, Ipv6Ext

V4 = ("10.0.0.1", "10.0.0.2")
V6 = ("2001:db8::1", "2001:db8::2")


def _ip_lens(*packets: bytes, snaplen: int = 262144) -> list[int]:
    capture = read_bytes(craft.pcap_bytes(records(packets), snaplen=snaplen, nanosecond=True))
    return [int(value) for value in capture.packets["ip_len"]]


def test_ipv4_total_length_counts_ip_and_tcp_options() -> None:
    plain = craft.tcp_packet(*V4, 1, 2, flags="PA", payload=b"x" * 100)
    with_options = craft.tcp_packet(
        *V4, 1, 2, flags="S", mss=1460, wscale=7, timestamps=(1, 0), ip_options=b"\x94\x04\x00\x00"
    )
    assert _ip_lens(plain, with_options) == [len(plain), len(with_options)]
    assert len(with_options) == 24 + 20 + 20  # IP options 4, TCP options mss 4 + wscale 4 (padded) + ts 12


def test_ipv6_length_includes_extension_headers() -> None:
    ext = Ipv6Ext(IPPROTO_DSTOPTS, bytes(14))
    packet = craft.tcp_packet(*V6, 1, 2, flags="PA", payload=b"y" * 10, ext_headers=[ext])
    assert _ip_lens(packet) == [40 + 16 + 20 + 10] == [len(packet)]


def test_ip_len_is_the_wire_length_when_snaplen_cuts_the_record() -> None:
    packet = craft.tcp_packet(*V4, 1, 2, flags="PA", payload=b"z" * 1000)
    assert _ip_lens(packet, snaplen=96) == [len(packet)]
