"""Damaged text never breaks the reader: every packet line becomes a row or a bad line, nothing raises.

The property starts from real tcpdump output and damages it the ways pastes and hands do (characters
dropped, replaced, digits grown past their field's range, lines cut or joined). The reader must return
normally, account for every packet line it recognised (``records``), and give only in-range values.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from text_captures import CORPUS
from text_oracle import require_tools, tcpdump_text

from whyreset.ingest.tcpdump_text import iter_text_capture
from whyreset.model import PacketTable, ReadReport

SOURCES = (("-nn", "-vv"), ("-e",), ("-S", "-tttt"), ())
_texts: dict[tuple[str, ...], str] = {}


def _real_text(options: tuple[str, ...]) -> str:
    if options not in _texts:
        require_tools("tcpdump")
        pcap = CORPUS / "suricata-tcp-rst-unacked-stream-09.pcap"
        if not pcap.exists():
            pytest.skip(f"{pcap} is not here")
        _texts[options] = tcpdump_text(pcap, *options).decode()
    return _texts[options]


damage = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),
        st.sampled_from(["drop", "digit", "grow", "newline", "join", "junk"]),
        st.text(alphabet="0123456789[](),.:> abcSFRP\t", min_size=1, max_size=6),
    ),
    min_size=1,
    max_size=25,
)


def _damaged(text: str, edits: list[tuple[int, str, str]]) -> str:
    chars = list(text)
    for position, kind, junk in edits:
        at = position % max(1, len(chars))
        if kind == "drop":
            del chars[at : at + len(junk)]
        elif kind == "digit" and chars[at].isdigit():
            chars[at] = junk[0] if junk[0].isdigit() else "9"
        elif kind == "grow" and chars[at].isdigit():
            chars[at] = chars[at] + "9" * 12
        elif kind == "newline":
            chars.insert(at, "\n")
        elif kind == "join" and chars[at] == "\n":
            chars[at] = " "
        else:
            chars.insert(at, junk)
    return "".join(chars)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=st.sampled_from(SOURCES), edits=damage)
def test_damaged_text_never_raises(options: tuple[str, ...], edits: list[tuple[int, str, str]]) -> None:
    text = _damaged(_real_text(options), edits)
    report = ReadReport()
    captures = list(iter_text_capture(io.BytesIO(text.encode()), report, chunk_records=16))
    table = PacketTable.concat([capture.packets for capture in captures])
    assert report.tcp_segments == len(table)
    assert len(table) + len(report.bad_lines) + report.non_tcp + report.non_ip == report.records
    frames = table["frame"]
    assert np.all(np.diff(frames.astype(np.int64)) > 0)
    assert np.all(table["ts_ns"] >= 0)
