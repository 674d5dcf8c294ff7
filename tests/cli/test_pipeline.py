"""The Python API behind the CLI: lazy import, progress, registration that survives a broken module."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import click
import pytest
from bench.generate import write_capture

from whyreset.analysis import ExitStatus, analyze, analyze_path


def test_import_whyreset_stays_light() -> None:
    code = "import sys, whyreset; assert 'numpy' not in sys.modules, 'numpy imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    code = "import whyreset; print(whyreset.analyze.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "whyreset.analysis"


def test_progress_reports_bytes_up_to_the_file_size(mixed_pcap: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    analyze(str(mixed_pcap), progress=lambda done, total: calls.append((done, total)))
    size = mixed_pcap.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_file_object_and_path_give_the_same_records(mixed_pcap: Path) -> None:
    from_path = analyze_path(mixed_pcap).records()
    from_stream = analyze(io.BytesIO(mixed_pcap.read_bytes())).records()
    assert [r["uid"] for r in from_path] == [r["uid"] for r in from_stream]
    assert [r["outcome"] for r in from_path] == [r["outcome"] for r in from_stream]


def test_analysis_holds_connections_findings_and_report(mixed_pcap: Path) -> None:
    analysis = analyze(str(mixed_pcap))
    assert analysis.report.format == "pcap" and analysis.report.records == 20
    assert len(analysis.connections) == 4 and analysis.failure is None
    assert analysis.status is ExitStatus.FINDINGS
    if analysis.diagnosed:
        assert set(analysis.findings) <= {conn.uid for conn in analysis.connections}
    without = analyze(str(mixed_pcap), diagnose=False)
    assert without.findings == {} and not without.diagnosed
    assert all(record["cause"] is None for record in without.records())


def test_a_broken_command_module_warns_and_the_rest_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from whyreset import cli

    real_import = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> object:
        if name == "whyreset.lab.cli":
            raise RuntimeError("boom in lab.cli")
        return real_import(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    group = click.Group("whyreset")
    warnings = io.StringIO()
    cli._register_subcommands(group, warn=warnings)
    assert "lab" not in group.commands
    assert "boom in lab.cli" in warnings.getvalue() and "lab" in warnings.getvalue()
    if real_import("whyreset.diagnose.cli") is not None:
        assert {"explain", "rules"} <= set(group.commands)


def test_stream_gives_the_same_records_as_analyze(tmp_path: Path) -> None:
    """The one-pass stream (abnormal connections deferred to the end) diagnoses exactly as the whole analysis."""
    from cli_captures import write_mixed_capture

    from whyreset.analysis import AnalysisStream
    from whyreset.report.jsonout import connection_record

    path = write_mixed_capture(tmp_path / "mixed.pcap")
    stream = AnalysisStream(str(path))
    streamed = {conn.uid: connection_record(conn, finding, source=stream.name) for conn, finding in stream}
    whole = {record["uid"]: record for record in analyze(str(path)).records()}
    assert streamed == whole
    assert stream.status is ExitStatus.FINDINGS and stream.connections == 4 and stream.abnormal == 3
    assert stream.early_diagnoses == 0 and not stream.warnings


def test_stream_yields_clean_connections_first_and_defers_the_others(mixed_pcap: Path) -> None:
    from whyreset.analysis import AnalysisStream, needs_complete_context

    pairs = list(AnalysisStream(io.BytesIO(mixed_pcap.read_bytes())))
    waited = [needs_complete_context(conn) for conn, _ in pairs]
    assert sorted(conn.index for conn, _ in pairs) == [0, 1, 2, 3]
    assert waited == sorted(waited) and waited.count(True) == 3  # the clean one came out before the others
    assert all(finding is None for (_, finding), late in zip(pairs, waited, strict=True) if not late)


def test_stream_of_a_truncated_file_reports_partial_input(mixed_pcap: Path, tmp_path: Path) -> None:
    from whyreset.analysis import AnalysisStream

    cut = tmp_path / "cut.pcap"
    cut.write_bytes(mixed_pcap.read_bytes()[:-30])
    stream = AnalysisStream(str(cut))
    assert len(list(stream)) == 4
    assert stream.status is ExitStatus.PARTIAL_INPUT and stream.failure is not None
    assert stream.report.error is not None


def test_stream_matches_analyze_on_a_generated_mix(tmp_path: Path) -> None:
    """The stream's findings are those of the whole analysis on the benchmark's mix, small chunks or not."""
    from whyreset.analysis import AnalysisStream
    from whyreset.report.jsonout import connection_record

    path = tmp_path / "mix.pcap"
    write_capture(path, 3000, seed=7)
    stream = AnalysisStream(str(path))
    streamed = {conn.uid: connection_record(conn, finding, source=stream.name) for conn, finding in stream}
    whole = {record["uid"]: record for record in analyze(str(path)).records()}
    assert streamed.keys() == whole.keys()
    assert [uid for uid in whole if streamed[uid] != whole[uid]] == []
    assert stream.early_diagnoses == 0 and stream.abnormal > 100


def test_max_deferred_bounds_the_connections_held(tmp_path: Path) -> None:
    """Beyond the cap the oldest deferred connection is diagnosed at once: every connection still comes out
    once, the count of early diagnoses is exact, and a warning tells it."""
    from whyreset.analysis import AnalysisStream, needs_complete_context

    path = tmp_path / "mix.pcap"
    write_capture(path, 2000, seed=7)
    unbounded = AnalysisStream(str(path))
    uids = sorted(conn.uid for conn, _ in unbounded)
    waiting = sum(needs_complete_context(conn) for conn in analyze(str(path), diagnose=False).connections)
    cap = 50
    capped = AnalysisStream(str(path), max_deferred=cap)
    assert sorted(conn.uid for conn, _ in capped) == uids
    assert capped.early_diagnoses == waiting - cap > 0
    assert any(f"{waiting - cap} abnormal connection(s)" in warning for warning in capped.warnings)
    assert capped.status is unbounded.status and capped.connections == unbounded.connections
    with pytest.raises(ValueError, match="max_deferred"):
        AnalysisStream(str(path), max_deferred=-1)


def test_compacted_connections_keep_their_rows_and_drop_the_chunk(mixed_pcap: Path) -> None:
    import numpy as np

    from whyreset.analysis import compact_packets, iter_connections

    connections = list(iter_connections(str(mixed_pcap)))
    before = [
        ({name: col.copy() for name, col in conn.packets.columns.items()}, conn.from_orig.copy())
        for conn in connections
    ]
    chunk_columns = [conn.packets["frame"] for conn in connections]
    compacted = compact_packets(connections)
    assert compacted is connections
    for conn, (columns, from_orig), old_frames in zip(connections, before, chunk_columns, strict=True):
        assert len(conn.packets) == len(from_orig)
        assert set(conn.packets.columns) == set(columns)
        for name, column in columns.items():
            assert np.array_equal(conn.packets[name], column), name
        assert np.array_equal(conn.from_orig, from_orig)
        assert not np.shares_memory(conn.packets["frame"], old_frames)  # no view of the tracker's chunk left
    assert compact_packets([]) == []


def test_compacted_connections_hold_nothing_of_the_tracker_chunk(mixed_pcap: Path) -> None:
    """Neither the rows nor the fields the core builds on first read keep the chunk alive after compaction."""
    import gc
    import weakref

    from whyreset.analysis import compact_packets, iter_connections
    from whyreset.core.connection import pending_details

    connections = list(iter_connections(str(mixed_pcap)))
    frame_column = connections[0].packets["frame"]
    chunk = weakref.ref(frame_column.base if frame_column.base is not None else frame_column)
    details = pending_details(connections[0])
    assert details is not None
    batch_source = weakref.ref(details.source.rel_seq)  # type: ignore[attr-defined]  # an array of the batch
    del frame_column, details
    compact_packets(connections)
    gc.collect()
    assert chunk() is None, "a compacted connection still holds the tracker's chunk"
    assert batch_source() is None, "a compacted connection's deferred fields still read the tracker's batch"
    assert all(pending_details(conn) is not None for conn in connections), "compaction made the deferred fields"
    assert [len(conn.packets) for conn in connections] == [8, 2, 5, 5]


@pytest.mark.parametrize("mix", ["stress", "web"])
def test_compacted_connections_make_the_same_events_and_timelines(tmp_path: Path, mix: str) -> None:
    """The fields the core makes on first read come out the same after compaction, which moves their rows.

    Each connection is compacted in a group with others (their rows shift), some after one of their deferred
    fields was already made; one group is compacted twice."""
    from whyreset.analysis import compact_packets, iter_connections
    from whyreset.core.connection import EventKind

    path = tmp_path / f"{mix}.pcap"
    write_capture(path, 6000, seed=5, mix=mix)
    expected = [
        (conn.events, conn.orig_states, conn.resp_states, conn.icmp_events) for conn in iter_connections(str(path))
    ]
    connections = list(iter_connections(str(path)))
    for conn in connections[::3]:
        conn.orig_states  # noqa: B018  (made before compaction: only the events stay deferred)
    compact_packets(connections[: len(connections) // 2])
    compact_packets(connections[len(connections) // 2 :][::-1])
    compact_packets(connections[: len(connections) // 4])
    made = [(conn.events, conn.orig_states, conn.resp_states, conn.icmp_events) for conn in connections]
    assert made == expected
    kinds = {event.kind for events, *_ in expected for event in events}
    assert {EventKind.FIRST_DATA, EventKind.RST, EventKind.FIN_ACKED} <= kinds
    assert mix == "web" or EventKind.RETRANSMISSION in kinds


def test_compacted_lab_connections_make_the_same_events_and_timelines() -> None:
    """The same over the lab's real captures (keep-alives, zero windows, ICMP errors, challenge ACKs...), every
    connection of all of them compacted in one group."""
    from whyreset.analysis import compact_packets, iter_connections
    from whyreset.core.connection import EventKind

    root = Path(__file__).parents[2]
    paths = [*sorted((root / "tests" / "lab" / "corpus").glob("*.pcap")), root / "examples" / "demo.pcap"]
    expected, connections = [], []
    for path in paths:
        expected += [
            (conn.events, conn.orig_states, conn.resp_states, conn.icmp_events) for conn in iter_connections(str(path))
        ]
        connections += list(iter_connections(str(path)))
    compact_packets(connections)
    assert [(conn.events, conn.orig_states, conn.resp_states, conn.icmp_events) for conn in connections] == expected
    kinds = {event.kind for events, *_ in expected for event in events}
    assert {EventKind.KEEPALIVE_PROBE, EventKind.ICMP_ERROR, EventKind.IDLE_GAP, EventKind.DATA_AFTER_FIN} <= kinds


def test_progress_bar_draws_on_a_terminal(mixed_pcap: Path) -> None:
    from rich.console import Console

    from whyreset.cli import _progress_for

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with _progress_for(str(mixed_pcap), console, enabled=True) as on_progress:
        assert on_progress is not None
        analyze(str(mixed_pcap), progress=on_progress)
    assert mixed_pcap.name in screen.getvalue()
    with _progress_for(str(mixed_pcap), console, enabled=False) as on_progress:
        assert on_progress is None


def _rss_file_kb() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssFile:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def test_reading_a_mapped_capture_gives_its_pages_back(tmp_path: Path) -> None:
    """The reader maps the file; the pages behind the read position leave the process's resident memory, so
    reading a 64 MB capture never holds much more than one release step of it."""
    from whyreset.ingest import craft, iter_capture
    from whyreset.ingest.source import RELEASE_STEP

    if _rss_file_kb() is None:
        pytest.skip("no RssFile in /proc/self/status (not Linux)")
    packet = craft.frame(
        craft.LINKTYPE_ETHERNET,
        craft.tcp_packet("10.9.0.1", "10.9.0.2", 40000, 80, seq=1, ack=1, flags="PA", payload=b"x" * 1400),
    )
    size_mb = 64
    count = size_mb * 1024 * 1024 // (len(packet) + 16)
    path = tmp_path / "big.pcap"
    craft.write_pcap(path, ((1_700_000_000_000_000_000 + i * 1000, packet) for i in range(count)))
    baseline = _rss_file_kb()
    assert baseline is not None
    peak = baseline
    rows = 0
    for chunk in iter_capture(str(path), chunk_records=2048):
        rows += len(chunk.packets)
        peak = max(peak, _rss_file_kb() or 0)
    assert rows == count
    held_mb = (peak - baseline) / 1024
    assert held_mb < RELEASE_STEP / 2**20 + 8, f"{held_mb:.0f} MB of the {size_mb} MB file stayed resident"


def test_json_lines_reach_a_stdout_without_byte_layer(mixed_pcap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON lines are written as bytes; a replaced stdout with no ``buffer`` (an io.StringIO) still gets them."""
    import json

    from whyreset import cli

    screen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", screen)
    options = cli._Options(False, 50, False, True, None, False, 1)
    outcome = cli._stream_json(str(mixed_pcap), options, None, None)
    records = [json.loads(line) for line in screen.getvalue().splitlines()]
    assert outcome.status is ExitStatus.FINDINGS
    assert sorted(record["index"] for record in records) == [0, 1, 2, 3]
