"""Connections and outcomes from text equal those from the capture the text was printed from.

With the richest text (``tcpdump -nn -vv -e -tt``) every field of every connection must be equal, with one
documented exception: an ICMP error whose quote stops after the ports (``[|tcp]``) has no quoted seq in text,
while the binary reader reads it from the 8 quoted bytes. With the plainest text (``tcpdump -nn``) the verdict
fields must still be equal; what differs is exactly what that text lacks:

- the date (timestamps are times of day), so ``ts_*`` fields differ;
- TTL, IP id and frame lengths (no -v, no -e): ``ttls``, reset ``ttl``/``ip_id``, frame and IP byte counts;
- the RST payload text (printed only under -v);
- the seq of pure ACKs (printed only under -vv): inferred, so keepalive probes (sent at snd.nxt - 1) may not
  be recognised as such.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pytest
from text_captures import CORPUS
from text_oracle import require_tools, tcpdump_text

from whyreset.ingest.tcpdump_text import iter_text_capture
from whyreset.model import Capture, PacketTable, ReadReport

tracker = pytest.importorskip("whyreset.core.tracker", reason="needs the core's build_connections")
ingest = pytest.importorskip("whyreset.ingest", reason="needs the binary reader")

CASES = [
    "suricata-bug-6244-tcp-rst-with-data.pcap",
    "suricata-tcp-rst-unacked-stream-09.pcap",
    "suricata-tcp-split-handshake-01-4whs.pcap",
    "suricata-alert-testmyids-midstream.pcap",
    "suricata-tcp-empty-sack.pcap",
    "tcpdump-mptcp-v1-sll.pcap",
    "ndpi-reddit.pcap",
    "ndpi-gnutella.pcap",
    "stratosphere-ssh-bruteforce.pcap",
    "ndpi-opera-vpn.pcapng",
]
VERDICT_FIELDS = (
    "orig_h",
    "orig_p",
    "resp_h",
    "resp_p",
    "first_frame",
    "last_frame",
    "outcome",
    "conn_state",
    "history",
    "established",
    "midstream",
    "port_reuse",
)
RESET_FIELDS = ("sender", "frame", "seq", "ack", "rel_seq", "acceptability", "receiver_state", "sender_state")


def _text_capture(pcap: Path, *options: str) -> Capture:
    report = ReadReport()
    chunks = list(iter_text_capture(io.BytesIO(tcpdump_text(pcap, *options)), report))
    return Capture(
        PacketTable.concat([chunk.packets for chunk in chunks]),
        [error for chunk in chunks for error in chunk.icmp_errors],
        {frame: text for chunk in chunks for frame, text in chunk.rst_payloads.items()},
        report,
    )


def _connections(capture: Capture) -> list[Any]:
    connections: list[Any] = tracker.build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    return connections


def _without_cut_quotes(connection: Any, text_connection: Any) -> Any:
    """The binary reader's connection with quoted seqs blanked where the text's quote was cut (see above)."""
    text_events = {(event.kind, event.frame): event for event in text_connection.events}
    events = []
    for event in connection.events:
        twin = text_events.get((event.kind, event.frame))
        if twin is not None and "quoted_seq" in event.detail and twin.detail.get("quoted_seq") is None:
            event = dataclasses.replace(event, detail={**event.detail, "quoted_seq": None})
        events.append(event)
    return dataclasses.replace(connection, events=tuple(events))


def _pairs(name: str, *options: str) -> list[tuple[Any, Any]]:
    require_tools("tcpdump")
    pcap = CORPUS / name
    if not pcap.exists():
        pytest.skip(f"{pcap} is not here")
    binary = _connections(ingest.read_capture(pcap))
    text = _connections(_text_capture(pcap, *options))
    assert len(text) == len(binary)
    return list(zip(binary, text, strict=True))


@pytest.mark.parametrize("name", CASES)
def test_rich_text_gives_the_same_connections(name: str) -> None:
    for binary, text in _pairs(name, "-nn", "-vv", "-e", "-tt"):
        assert _without_cut_quotes(binary, text) == text


@pytest.mark.parametrize("name", CASES)
def test_plain_text_gives_the_same_verdicts(name: str) -> None:
    for binary, text in _pairs(name, "-nn"):
        for field in VERDICT_FIELDS:
            if field == "outcome" and binary.icmp_errors and not text.icmp_errors:
                # Without -v the text cannot tie an ICMP error to its connection (no quoted source port): the
                # SYN the error answered looks unanswered.
                assert (str(binary.outcome), str(text.outcome)) == ("not_established", "timeout")
                continue
            assert getattr(text, field) == getattr(binary, field), (binary.index, field)
        assert len(text.resets) == len(binary.resets)
        for binary_reset, text_reset in zip(binary.resets, text.resets, strict=True):
            for field in RESET_FIELDS:
                assert getattr(text_reset, field) == getattr(binary_reset, field), (binary.index, field)
        assert text.orig.packets == binary.orig.packets and text.resp.packets == binary.resp.packets
        assert text.orig.payload_bytes == binary.orig.payload_bytes
        assert text.resp.payload_bytes == binary.resp.payload_bytes


def test_loopback_text_gives_the_same_connections(loopback_pcap: Path) -> None:
    require_tools("tcpdump")
    binary = _connections(ingest.read_capture(loopback_pcap))
    text = _connections(_text_capture(loopback_pcap, "-nn", "-vv", "-e", "-tt"))
    assert text == binary
    assert sorted(str(connection.outcome) for connection in text) == [
        "clean",
        "clean",
        "not_established",
        "reset",
    ]
