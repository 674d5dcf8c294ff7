"""The text reader against tshark: tcpdump prints real captures, tshark decodes the same captures.

Every TCP row the text yields must agree field by field with tshark's decode of the same frame, for every
field the text carries (addresses unless tcpdump printed a host name, ports, absolute seq/ack, flags, window,
payload length, options, TTL and IP id under -v, frame length under -e). The seq of pure ACKs printed without
-vv is inferred, and must be right for nearly all of them (keepalives, sent at snd.nxt - 1, are the known
exception).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
from text_captures import CORPUS
from text_oracle import OracleRow, compare, require_tools, tcpdump_text, tshark_rows

from whyreset.ingest.tcpdump_text import iter_text_capture
from whyreset.model import PacketTable, ReadReport

pytestmark = pytest.mark.oracle

OPTION_SETS = (
    ("-nn", "-vv"),
    (),
    ("-S", "-tttt"),
    ("-e", "-nn"),
    ("-tt", "-nn"),
    ("-v",),
)
CORPUS_FILES = sorted(path.name for path in CORPUS.glob("*.pcap*")) if CORPUS.is_dir() else []
INFERRED_SEQ_TOLERANCE = 0.02


@functools.cache
def _oracle(pcap: str) -> dict[int, OracleRow]:
    return tshark_rows(Path(pcap))


def read_text(text: bytes, chunk_records: int = 262144) -> tuple[PacketTable, ReadReport]:
    report = ReadReport()
    captures = list(iter_text_capture(io.BytesIO(text), report, chunk_records))
    return PacketTable.concat([capture.packets for capture in captures]), report


def assert_agrees(pcap: Path, options: tuple[str, ...]) -> ReadReport:
    require_tools("tcpdump", "tshark")
    table, report = read_text(tcpdump_text(pcap, *options))
    oracle = _oracle(str(pcap))
    result = compare(table, oracle, options)
    assert result.missing_frames == [], f"TCP frames missing from the text reader: {result.missing_frames[:10]}"
    assert result.mismatches == [], f"{len(result.mismatches)} mismatches, first: {result.mismatches[:5]}"
    assert report.bad_lines == []
    if result.inferred_seq:
        assert result.inferred_seq_wrong <= max(1, INFERRED_SEQ_TOLERANCE * result.inferred_seq)
    return report


NAME_RESOLVING_MAX_BYTES = 40_000
"""Without -n tcpdump asks DNS for every address (seconds per big file): those runs use the small files."""


def _corpus_cases() -> list[tuple[str, tuple[str, ...]]]:
    cases = []
    for name in CORPUS_FILES:
        for options in OPTION_SETS:
            resolves_names = not any(option.startswith("-n") for option in options)
            if resolves_names and (CORPUS / name).stat().st_size > NAME_RESOLVING_MAX_BYTES:
                continue
            cases.append((name, options))
    return cases


@pytest.mark.parametrize(
    ("name", "options"),
    _corpus_cases(),
    ids=lambda value: value if isinstance(value, str) else " ".join(value),
)
def test_corpus_text_agrees_with_tshark(name: str, options: tuple[str, ...]) -> None:
    assert_agrees(CORPUS / name, options)


LOOPBACK_OPTION_SETS = (*OPTION_SETS, ("-nn", "-vvv"), ("-t", "-nn", "-v"), ("-ttttt", "-S", "-e", "-vv"))


@pytest.mark.parametrize("options", LOOPBACK_OPTION_SETS, ids=lambda options: " ".join(options) or "default")
def test_loopback_text_agrees_with_tshark(loopback_pcap: Path, options: tuple[str, ...]) -> None:
    report = assert_agrees(loopback_pcap, options)
    if "-v" not in " ".join(options):
        assert any("no TTL" in limit for limit in report.limits)


def test_loopback_exchanges_are_all_there(loopback_pcap: Path) -> None:
    """The capture holds what the sockets did: a refusal, two clean closes (v4, v6) and a reset after data."""
    require_tools("tcpdump")
    table, _ = read_text(tcpdump_text(loopback_pcap, "-nn"))
    flags = [int(value) for value in table["flags"]]
    assert flags.count(0x014) >= 2  # RST+ACK: the refusal, and the reset after unread data
    assert sum(1 for value in flags if value & 0x001) >= 4  # FINs of the two clean closes
    assert set(int(value) for value in table["ip_version"]) == {4, 6}
