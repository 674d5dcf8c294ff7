"""conn.log / whyreset.log in Zeek's exact ASCII format, read back with a strict reader."""

from __future__ import annotations

import io
import ipaddress
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from report_factories import T0, connection, finding, reset_info

from whyreset.core.connection import Connection
from whyreset.diagnose.finding import Alternative, Finding
from whyreset.ids import CauseId, Outcome
from whyreset.report.zeek import (
    CONN_FIELDS,
    WHYRESET_FIELDS,
    ZeekLogWriter,
    conn_line,
    conn_row,
    escape_string,
    format_double,
    format_row,
    whyreset_line,
    whyreset_row,
    write_zeek_logs,
    zeek_timestamp,
)

OPEN_TIME = 1_700_000_000.0

# Zeek 7.1+ default conn.log, as in Zeek's own test baselines plus ip_proto
# (scripts/base/protocols/conn/main.zeek).
EXPECTED_CONN_FIELDS = [
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "service",
    "duration",
    "orig_bytes",
    "resp_bytes",
    "conn_state",
    "local_orig",
    "local_resp",
    "missed_bytes",
    "history",
    "orig_pkts",
    "orig_ip_bytes",
    "resp_pkts",
    "resp_ip_bytes",
    "tunnel_parents",
    "ip_proto",
]
EXPECTED_CONN_TYPES = [
    "time",
    "string",
    "addr",
    "port",
    "addr",
    "port",
    "enum",
    "string",
    "interval",
    "count",
    "count",
    "string",
    "bool",
    "bool",
    "count",
    "string",
    "count",
    "count",
    "count",
    "count",
    "set[string]",
    "count",
]


def unescape(value: str) -> str:
    """Inverse of Zeek's ASCII escaping for one string value (as zat and Zeek's input framework do)."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def read_zeek_tsv(text: str, path: str) -> list[dict[str, str | None]]:
    """Strict reader: the meta header exactly Zeek's, every row with every column, every value of its type."""
    lines = text.split("\n")
    assert lines[-1] == "", "the log must end with a newline"
    lines = lines[:-1]
    assert lines[0] == "#separator \\x09"
    assert lines[1] == "#set_separator\t,"
    assert lines[2] == "#empty_field\t(empty)"
    assert lines[3] == "#unset_field\t-"
    assert lines[4] == f"#path\t{path}"
    assert re.fullmatch(r"#open\t\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", lines[5])
    assert lines[6].startswith("#fields\t") and lines[7].startswith("#types\t")
    assert re.fullmatch(r"#close\t\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", lines[-1])
    names = lines[6].split("\t")[1:]
    types = lines[7].split("\t")[1:]
    assert len(names) == len(types)
    rows = []
    for line in lines[8:-1]:
        assert not line.startswith("#"), "a data row must never look like a meta line"
        cells = line.split("\t")
        assert len(cells) == len(names), line
        row: dict[str, str | None] = {}
        for name, type_, cell in zip(names, types, cells, strict=True):
            row[name] = None if cell == "-" else check_cell(cell, type_)
        rows.append(row)
    return rows


def check_cell(cell: str, type_: str) -> str:
    assert "\n" not in cell and "\t" not in cell
    if type_ in ("time", "interval"):
        assert re.fullmatch(r"\d+\.\d{6}", cell), cell
    elif type_ == "double":
        assert re.fullmatch(r"-?\d+\.\d+", cell), cell
    elif type_ == "count":
        assert re.fullmatch(r"\d+", cell), cell
    elif type_ == "port":
        assert 0 <= int(cell) <= 65535
    elif type_ == "addr":
        ipaddress.ip_address(cell)
    elif type_ == "bool":
        assert cell in ("T", "F")
    elif type_.startswith(("set[", "vector[")):
        return cell if cell == "(empty)" else ",".join(unescape(item) for item in cell.split(","))
    else:
        assert cell != "", "empty strings are written as (empty)"
        return "" if cell == "(empty)" else unescape(cell)
    return cell


def write_logs(tmp_path: Path, connections: list[Connection], findings: dict, **kwargs) -> tuple[str, str]:  # type: ignore[type-arg]
    conn_path, why_path = write_zeek_logs(tmp_path, [(connections, findings)], open_time=OPEN_TIME, **kwargs)
    return Path(conn_path).read_text(encoding="utf-8"), Path(why_path).read_text(encoding="utf-8")


def test_conn_log_header_and_rows_parse_strictly(tmp_path: Path, reset_connection: Connection) -> None:
    short = connection(uid="Cshort", ts_last_ns=T0, history="", conn_state="S0", resets=(), index=1)
    conn_text, _ = write_logs(tmp_path, [reset_connection, short], {})
    lines = conn_text.split("\n")
    assert lines[6].split("\t")[1:] == EXPECTED_CONN_FIELDS
    assert lines[7].split("\t")[1:] == EXPECTED_CONN_TYPES
    assert lines[5] == f"#open\t{zeek_timestamp(OPEN_TIME)}"
    rows = read_zeek_tsv(conn_text, "conn")
    first, second = rows
    assert first["ts"] == "1700000000.123457"  # microseconds, rounded like Zeek's %.6f
    assert first["uid"] == reset_connection.uid
    assert (first["id.orig_h"], first["id.orig_p"]) == ("10.0.0.1", "40000")
    assert first["proto"] == "tcp" and first["ip_proto"] == "6"
    assert first["duration"] == "0.002500"
    assert first["conn_state"] == "RSTR" and first["history"] == "ShADadR"
    assert first["orig_bytes"] == "100" and first["orig_ip_bytes"] == "260" and first["orig_pkts"] == "4"
    assert first["service"] is None and first["local_orig"] is None and first["tunnel_parents"] is None
    assert first["missed_bytes"] == "0"
    # Zeek sets duration and byte counts only when the duration is > 0, and leaves an empty history unset.
    assert second["duration"] is None and second["orig_bytes"] is None and second["resp_bytes"] is None
    assert second["history"] is None and second["orig_pkts"] == "4"


def test_whyreset_log_joins_on_uid(tmp_path: Path, reset_connection: Connection, clean_connection: Connection) -> None:
    findings = {reset_connection.uid: finding(reset_connection)}
    conn_text, why_text = write_logs(tmp_path, [reset_connection, clean_connection], findings)
    conn_uids = {row["uid"] for row in read_zeek_tsv(conn_text, "conn")}
    why_rows = read_zeek_tsv(why_text, "whyreset")
    assert [f.name for f in WHYRESET_FIELDS] == why_text.split("\n")[6].split("\t")[1:]
    assert [row["uid"] for row in why_rows] == [reset_connection.uid]  # the clean one has nothing to explain
    assert why_rows[0]["uid"] in conn_uids
    row = why_rows[0]
    assert row["cause"] == "close_with_unread_data" and row["confidence"] == "0.8" and row["actor"] == "resp"
    assert row["alternatives"] == "abortive_close:0.2"
    assert row["rst_sender"] == "resp" and row["rst_frame"] == "7" and row["rst_acceptability"] == "exact"


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        ("", "(empty)"),
        ("-", "\\x2d"),
        ("(empty)", "\\x28empty)"),
        ("a\tb", "a\\x09b"),
        ("line\nbreak", "line\\x0abreak"),
        ("back\\slash", "back\\x5cslash"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("café ünïcode", "café ünïcode"),  # valid UTF-8 passes through (LogAscii::enable_utf_8 = T)
        ("raw\udcffbyte", "raw\\xffbyte"),  # a byte that is not UTF-8, kept by surrogateescape
        ("--", "--"),
    ],
)
def test_string_escaping_follows_zeek(raw: str, written: str) -> None:
    assert escape_string(raw) == written


def test_set_separator_escaped_inside_sets_only() -> None:
    assert escape_string("a,b") == "a,b"
    assert escape_string("a,b", in_set=True) == "a\\x2cb"


def test_a_row_starting_with_hash_is_escaped() -> None:
    fields = WHYRESET_FIELDS[:2]
    assert format_row({"ts": None, "uid": "x"}, fields) == "-\tx"
    from whyreset.report.zeek import LogField

    assert format_row({"s": "#fake"}, (LogField("s", "string"),)) == "\\x23fake"


@pytest.mark.parametrize(("value", "text"), [(0.8, "0.8"), (1.0, "1.0"), (0.0, "0.0"), (0.123456789, "0.123457")])
def test_double_rendering(value: float, text: str) -> None:
    assert format_double(value) == text


def test_hostile_summary_cannot_break_the_log(tmp_path: Path, reset_connection: Connection) -> None:
    hostile = finding(
        reset_connection,
        summary="evil\tcolumn\nnew line\n#close\t2020\\x41",
        alternatives=(),
        undetermined_reason="-",
    )
    _, why_text = write_logs(tmp_path, [reset_connection], {reset_connection.uid: hostile})
    rows = read_zeek_tsv(why_text, "whyreset")
    assert len(rows) == 1
    assert rows[0]["summary"] == "evil\tcolumn\nnew line\n#close\t2020\\x41"
    assert rows[0]["alternatives"] == "(empty)"
    assert rows[0]["undetermined_reason"] == "-"  # the string "-", escaped, not unset


def test_json_variant_mirrors_zeek_use_json(tmp_path: Path, reset_connection: Connection) -> None:
    short = connection(uid="Cshort", ts_last_ns=T0, history="", resets=())
    conn_text, _ = write_logs(tmp_path, [reset_connection, short], {}, use_json=True)
    lines = conn_text.strip().split("\n")
    assert not any(line.startswith("#") for line in lines), "Zeek's JSON mode has no meta header"
    first, second = (json.loads(line) for line in lines)
    assert list(first) == [f.name for f in CONN_FIELDS if conn_row(reset_connection)[f.name] is not None]
    assert first["ts"] == pytest.approx(1700000000.123457)
    assert first["id.orig_p"] == 40000 and first["ip_proto"] == 6 and first["duration"] == pytest.approx(0.0025)
    assert "service" not in first and "local_orig" not in first  # unset fields are left out
    assert "duration" not in second and "history" not in second


def test_writer_streams_rows(reset_connection: Connection) -> None:
    out = io.StringIO()
    writer = ZeekLogWriter(out, "conn", CONN_FIELDS, open_time=OPEN_TIME)
    writer.write(conn_row(reset_connection))
    writer.close(OPEN_TIME)
    assert len(read_zeek_tsv(out.getvalue(), "conn")) == 1


_ZEEK_TEXT = (
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E))  # the fast path's domain
    | st.text(alphabet=st.characters(max_codepoint=0x2FF) | st.sampled_from("\\,\udc80\udcff\ud800é\x7f"))
    | st.sampled_from(["-", "(empty)", "", ",", "\\"])
)


@settings(max_examples=300, deadline=None)
@given(_ZEEK_TEXT, st.booleans())
def test_plain_text_shortcut_escapes_as_the_character_walk(value: str, in_set: bool) -> None:
    """The fast path for plain ASCII must give what Zeek's character-by-character escaping gives."""
    from whyreset.report.zeek import EMPTY_FIELD, UNSET_FIELD, _escape_char, _hex

    walked = "".join(_escape_char(char, in_set) for char in value)
    if value == "":
        walked = EMPTY_FIELD
    elif value in (UNSET_FIELD, EMPTY_FIELD):
        walked = _hex(ord(value[0])) + walked[1:]
    assert escape_string(value, in_set=in_set) == walked


LAB_CORPUS = Path(__file__).parents[1] / "lab" / "corpus"


def assert_lines_are_the_rows_formatted(connection: Connection, finding: Finding | None) -> None:
    """The TSV writer's direct lines are exactly the generic rows through the generic cell formatters."""
    from whyreset.report.zeek import _conn_id_cells

    id_cells = _conn_id_cells(connection)
    expected_conn = format_row(conn_row(connection), CONN_FIELDS) + "\n"
    assert conn_line(connection) == conn_line(connection, id_cells) == expected_conn
    for show_payload in (False, True):
        row = whyreset_row(connection, finding, show_payload=show_payload)
        expected = format_row(row, WHYRESET_FIELDS) + "\n"
        assert whyreset_line(connection, finding, show_payload=show_payload) == expected
        assert whyreset_line(connection, finding, show_payload=show_payload, id_cells=id_cells) == expected


def test_tsv_lines_are_the_rows_formatted_on_the_lab_corpus() -> None:
    from whyreset.analysis import analyze_path

    captures = sorted(LAB_CORPUS.glob("*.pcap"))
    assert captures, "the recorded lab corpus is part of the repository"
    seen = 0
    for capture in captures:
        analysis = analyze_path(capture)
        for conn in analysis.connections:
            assert_lines_are_the_rows_formatted(conn, analysis.findings.get(conn.uid))
            seen += 1
    assert seen > len(captures)


def test_tsv_lines_are_the_rows_formatted_on_hostile_and_unset_values(reset_connection: Connection) -> None:
    payload = connection(uid="Cpayload", resets=(reset_info(payload_text="db password=hunter2"),))
    odd = connection(
        uid="-",
        orig_h="2001:db8::1",
        resp_h="(empty)",
        ts_last_ns=T0,  # no duration: duration and byte counts unset
        conn_state="",
        history="",
        resets=(),
        outcome=Outcome.TIMEOUT,
        orig_states=(),
        resp_states=(),
    )
    hostile = finding(
        payload,
        summary="evil\tcolumn\n#close\t2020\\x41 'db password=hunter2'",
        alternatives=(Alternative(CauseId.ABORTIVE_CLOSE, 0.123456789, "x"), Alternative(CauseId.REFUSED, 1.0, "")),
        undetermined_reason="-",
    )
    undetermined = finding(odd, cause=None, actor=None, summary="", alternatives=(), undetermined_reason="why\x1b")
    cases = [
        (reset_connection, finding(reset_connection)),
        (reset_connection, None),
        (payload, hostile),
        (odd, undetermined),
        (odd, None),
    ]
    for conn, found in cases:
        assert_lines_are_the_rows_formatted(conn, found)
