"""JSON records (schema v1) and the terminal summary, on hand-built connections."""

from __future__ import annotations

import io
import json

import pytest
from report_factories import connection, finding, reset_info
from rich.console import Console

from whyreset.analysis import Analysis, ExitStatus, InputFailure, most_severe
from whyreset.core.connection import Connection
from whyreset.ids import Outcome
from whyreset.model import ReadReport
from whyreset.report.jsonout import SCHEMA_VERSION, connection_record, jsonable, write_json_line
from whyreset.report.terminal import printable, render_analysis

HOSTILE = "[bold red]owned[/bold red] \x1b[2J\x1b]0;title\x07 [link=http://x]y[/link]"


def analysis_of(*connections: Connection, findings=None, failure=None, report=None) -> Analysis:  # type: ignore[no-untyped-def]
    return Analysis(
        source="test.pcap",
        connections=tuple(connections),
        findings=findings or {},
        report=report or ReadReport(source="test.pcap", format="pcap", records=8, tcp_segments=8),
        icmp_errors=(),
        diagnosed=True,
        failure=failure,
    )


def render(analysis: Analysis, **kwargs) -> str:  # type: ignore[no-untyped-def]
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200, highlight=False, soft_wrap=True)
    render_analysis(console, analysis, **kwargs)
    return buffer.getvalue()


def test_record_has_every_schema_field_with_its_type(reset_connection: Connection) -> None:
    record = connection_record(reset_connection, finding(reset_connection), source="x.pcap")
    expected_types = {
        "schema_version": int,
        "source": str,
        "uid": str,
        "community_id": str,
        "orig_h": str,
        "orig_p": int,
        "resp_h": str,
        "resp_p": int,
        "ts": float,
        "duration": float,
        "outcome": str,
        "cause": str,
        "conn_state": str,
        "history": str,
        "orig_pkts": int,
        "resp_pkts": int,
        "orig_bytes": int,
        "resp_bytes": int,
        "orig_ip_bytes": int,
        "resp_ip_bytes": int,
        "orig_inferred_by": str,
        "midstream": bool,
        "orig_final_state": str,
        "resp_final_state": str,
        "rst": dict,
        "orig": dict,
        "resp": dict,
        "diagnosis": dict,
    }
    for name, type_ in expected_types.items():
        assert isinstance(record[name], type_), name
    assert record["schema_version"] == SCHEMA_VERSION == 1
    assert record["cause"] == "close_with_unread_data" and record["outcome"] == "reset"
    rst = record["rst"]
    assert set(rst) >= {"sender", "frame", "ts", "seq", "ack", "ttl", "acceptability", "payload_text"}
    assert (rst["sender"], rst["frame"], rst["seq"], rst["ttl"]) == ("resp", 7, 2001, 57)
    assert set(record["orig"]) >= {
        "retransmissions",
        "dup_acks",
        "zero_windows",
        "keepalive_probes",
        "unacked_bytes",
    }
    diagnosis = record["diagnosis"]
    assert set(diagnosis) >= {
        "cause",
        "alternatives",
        "confidence",
        "evidence",
        "impact",
        "symptoms",
        "fix",
        "vantage",
        "undetermined_reason",
    }
    assert diagnosis["alternatives"][0]["cause"] == "abortive_close"
    assert record["orig_final_state"] == "CLOSED"
    json.loads(json.dumps(record, allow_nan=False))  # plain JSON all the way down


def test_record_without_diagnosis_has_null_cause(clean_connection: Connection) -> None:
    record = connection_record(clean_connection, None)
    assert record["cause"] is None and record["diagnosis"] is None and record["rst"] is None
    assert record["abnormal"] is False


def test_payload_text_hidden_unless_asked() -> None:
    conn = connection(resets=(reset_info(payload_text="secret reason"),))
    hidden = connection_record(conn, None)["rst"]
    shown = connection_record(conn, None, show_payload=True)["rst"]
    assert hidden["payload_text"] is None and hidden["has_payload_text"] is True
    assert shown["payload_text"] == "secret reason"


def test_json_line_is_one_line_and_strict() -> None:
    out = io.StringIO()
    write_json_line({"a": "x\ny", "b": 1.5}, out)
    assert out.getvalue().count("\n") == 1
    assert json.loads(out.getvalue()) == {"a": "x\ny", "b": 1.5}


def test_json_line_encoders_agree(reset_connection: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson (when installed) and the standard library give the same JSON values, UTF-8, one line each; a value
    orjson refuses (an integer beyond 64 bits) falls back to the standard library."""
    from whyreset.report import jsonout

    record = connection_record(reset_connection, finding(reset_connection), source="café.pcap")
    fast = jsonout.encode_json_line(record)
    monkeypatch.setattr(jsonout, "orjson", None)
    slow = jsonout.encode_json_line(record)
    for line in (fast, slow):
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert "café".encode() in line  # non-ASCII kept, not escaped
        assert json.loads(line) == json.loads(slow)
    monkeypatch.undo()
    huge = {"n": 2**70}
    assert json.loads(jsonout.encode_json_line(huge)) == huge
    out = io.BytesIO()
    jsonout.write_json_lines([record, huge], out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [json.loads(slow), huge]


def test_jsonable_flattens_evidence_data() -> None:
    import numpy as np

    data = {
        "ttl": np.uint8(57),
        "gap": np.float64(1.5),
        "who": Outcome.RESET,
        "raw": b"\x00\xff",
        "t": (1, 2),
    }
    assert jsonable(data) == {"ttl": 57, "gap": 1.5, "who": "reset", "raw": "00ff", "t": [1, 2]}
    assert jsonable(float("nan")) is None


def test_terminal_lists_abnormal_connection_details(reset_connection: Connection, clean_connection: Connection) -> None:
    text = render(
        analysis_of(reset_connection, clean_connection, findings={reset_connection.uid: finding(reset_connection)})
    )
    assert "Abnormal connections (1)" in text
    assert reset_connection.uid in text and clean_connection.uid not in text
    assert "RST from resp 10.0.0.2:80 frame 7" in text
    assert "seq=2001 ack=1101 TTL 57" in text and "acceptability exact" in text
    assert "final states: orig CLOSED, resp CLOSED" in text
    assert "close_with_unread_data (confidence 0.80)" in text
    assert "or abortive_close (0.20)" in text


def test_terminal_all_lists_every_connection(reset_connection: Connection, clean_connection: Connection) -> None:
    text = render(analysis_of(reset_connection, clean_connection), list_all=True)
    assert clean_connection.uid in text and "Connections (2)" in text


def test_terminal_escapes_markup_and_control_characters_from_the_capture() -> None:
    conn = connection(resets=(reset_info(payload_text=HOSTILE),))
    hostile_finding = finding(conn, summary=HOSTILE, fix=(HOSTILE,))
    report = ReadReport(source="x", format="tcpdump-text", records=3, bad_lines=[(3, HOSTILE)])
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=300, soft_wrap=True)
    render_analysis(console, analysis_of(conn, findings={conn.uid: hostile_finding}, report=report), show_payload=True)
    out = buffer.getvalue()
    assert "[bold red]owned[/bold red]" in out  # printed literally, not interpreted as markup
    assert "[link=http://x]y[/link]" in out
    assert "\x1b[2J" not in out and "\x1b]0;title" not in out  # the capture cannot drive the terminal
    assert "\\x1b[2J" in out


def test_payload_not_shown_by_default() -> None:
    conn = connection(resets=(reset_info(payload_text="the secret"),))
    text = render(analysis_of(conn))
    assert "the secret" not in text and "--show-payload" in text


def test_skipped_and_error_lines() -> None:
    report = ReadReport(source="x", format="pcap", records=10, non_tcp=3, fragments=2, unsupported_link_types={147: 4})
    failure = InputFailure("TruncatedCaptureError", "capture ends inside record 11 (at record 11)", nothing_read=False)
    text = render(analysis_of(connection(), report=report, failure=failure))
    assert "error: capture ends inside record 11" in text
    assert "3 IP packets that are not TCP" in text and "2 IP fragments" in text
    assert "4 records with unsupported link type 147" in text


def test_printable_escapes_controls_keeps_unicode() -> None:
    assert printable("a\x1bb\x00c\u009bd é") == "a\\x1bb\\x00c\\x9bd é"


def test_exit_status_precedence(reset_connection: Connection, clean_connection: Connection) -> None:
    assert analysis_of(clean_connection).status is ExitStatus.OK
    assert analysis_of(reset_connection).status is ExitStatus.FINDINGS
    partial = InputFailure("TruncatedCaptureError", "cut", nothing_read=False)
    assert analysis_of(reset_connection, failure=partial).status is ExitStatus.PARTIAL_INPUT
    unreadable = InputFailure("UnknownFormatError", "not a capture", nothing_read=True)
    assert analysis_of(failure=unreadable).status is ExitStatus.NO_INPUT
    assert most_severe([ExitStatus.FINDINGS, ExitStatus.OK]) is ExitStatus.FINDINGS
    assert most_severe([ExitStatus.FINDINGS, ExitStatus.NO_INPUT, ExitStatus.PARTIAL_INPUT]) is ExitStatus.NO_INPUT
    assert most_severe([]) is ExitStatus.OK
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 4]


def test_half_closed_is_abnormal_only_with_a_cause(clean_connection: Connection) -> None:
    half = connection(uid="Chalf", outcome=Outcome.HALF_CLOSED, resets=())
    assert analysis_of(half).status is ExitStatus.OK
    from whyreset.ids import CauseId

    leak = finding(half, cause=CauseId.CLOSE_WAIT_LEAK)
    assert analysis_of(half, findings={half.uid: leak}).status is ExitStatus.FINDINGS


def test_payload_quoted_by_the_diagnosis_is_scrubbed_unless_asked() -> None:
    from whyreset.report.jsonout import PAYLOAD_HIDDEN
    from whyreset.report.zeek import whyreset_row

    conn = connection(resets=(reset_info(payload_text="db password=hunter2"),))
    quoted = finding(
        conn,
        summary="RST with payload 'db password=hunter2'",
        evidence=(),
        alternatives=(),
        undetermined_reason=None,
        fix=("see db password=hunter2",),
    )
    hidden = connection_record(conn, quoted)["diagnosis"]
    assert "hunter2" not in json.dumps(hidden)
    assert hidden["summary"] == f"RST with payload {PAYLOAD_HIDDEN}"
    assert hidden["fix"] == [f"see {PAYLOAD_HIDDEN}"]
    shown = connection_record(conn, quoted, show_payload=True)["diagnosis"]
    assert "hunter2" in shown["summary"]
    assert "hunter2" not in render(analysis_of(conn, findings={conn.uid: quoted}))
    assert "hunter2" in render(analysis_of(conn, findings={conn.uid: quoted}), show_payload=True)
    assert "hunter2" not in str(whyreset_row(conn, quoted)["summary"])


def test_summary_keeps_the_first_abnormal_connections_by_index() -> None:
    from whyreset.report.terminal import Summary

    summary = Summary(max_listed=3)
    for index in (9, 4, 7, 1, 8, 2, 5):  # arriving in the order connections end, not by index
        summary.add(connection(index=index, uid=f"C{index}"), None)
    summary.add(connection(index=0, uid="Cclean", outcome=Outcome.CLEAN, resets=()), None)
    assert [conn.index for conn, _ in summary.listed()] == [1, 2, 4]
    assert summary.qualifying == 7 and summary.total == 8
    assert summary.outcomes == {"reset": 7, "clean": 1}
    everything = Summary(list_all=True, max_listed=1)
    for index in (3, 1, 2):
        everything.add(connection(index=index, uid=f"C{index}"), None)
    assert [conn.index for conn, _ in everything.listed()] == [1, 2, 3]


def _blocks_both_ways(pairs: list, width: int, show_payload: bool) -> tuple[str, str]:  # type: ignore[type-arg]
    """The listed blocks as `render_summary` prints them (plain path on a non-terminal console), and each
    block's `Text` lines printed through rich's own rendering, on the same kind of console."""
    from whyreset.report.terminal import _block_lines, _Blocks, _text_group

    fast, slow = io.StringIO(), io.StringIO()
    for out, blocks in ((fast, True), (slow, False)):
        console = Console(file=out, force_terminal=False, width=width, highlight=False, soft_wrap=True)
        if blocks:
            console.print(_Blocks(pairs, show_payload))
        else:
            for conn, found in pairs:
                console.print(_text_group(_block_lines(conn, found, show_payload)))
    return fast.getvalue(), slow.getvalue()


def test_plain_blocks_are_what_rich_prints_on_the_lab_corpus() -> None:
    from pathlib import Path

    from whyreset.analysis import analyze_path

    corpus = Path(__file__).parents[1] / "lab" / "corpus"
    pairs = []
    for capture in sorted(corpus.glob("*.pcap")):
        analysis = analyze_path(capture)
        pairs.extend((conn, analysis.findings.get(conn.uid)) for conn in analysis.connections)
    assert len(pairs) > 50
    fast, slow = _blocks_both_ways(pairs, 80, False)
    assert fast == slow


def test_plain_blocks_are_what_rich_prints_on_hostile_text() -> None:
    payload = connection(uid="Cpay", resets=(reset_info(payload_text="secret\x1b[2J text"), reset_info(frame=9)))
    pairs = [
        (payload, finding(payload, summary="quotes 'secret\x1b[2J text' ")),  # trailing space: rich may cut it
        (connection(uid="Cuni", history="Sh\x07é"), finding(connection(), summary=HOSTILE + " café ✓ 中文")),
        (connection(uid="Cmid", midstream=True, orig_inferred_by="port", resets=()), None),
        (connection(uid="Cbell\x07\r", conn_state="RSTR\x0b"), None),  # not escaped by us: rich strips them
        (connection(uid="Ctab"), finding(connection(), cause=None, undetermined_reason="a\tb\rc", summary="")),
    ]
    for width in (40, 200):
        for show_payload in (False, True):
            fast, slow = _blocks_both_ways(pairs, width, show_payload)
            assert fast == slow


def test_connection_block_measures_and_renders_as_its_text_lines(reset_connection: Connection) -> None:
    """In a table (measured, wrapped, styled), a block is what the `Group` of its `Text` lines is."""
    from rich.table import Table

    from whyreset.report.terminal import _block_lines, _text_group, connection_block

    outputs = []
    for block in (connection_block, lambda c, f, s: _text_group(_block_lines(c, f, s))):
        table = Table()
        table.add_column("block")
        table.add_row(block(reset_connection, finding(reset_connection), False))
        out = io.StringIO()
        Console(file=out, width=300, force_terminal=True, color_system="truecolor").print(table)
        outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] and "\x1b[" in outputs[0]
