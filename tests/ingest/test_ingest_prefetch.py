"""Reading in a second process gives exactly what reading in this process gives: chunks, report, errors."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from bench.generate import write_capture

from whyreset.analysis import _ReadState, iter_connection_batches
from whyreset.errors import CaptureError, TruncatedCaptureError
from whyreset.ingest import iter_capture
from whyreset.ingest.prefetch import iter_capture_prefetched
from whyreset.model import Capture, IcmpError, PacketTable
from whyreset.report.jsonout import connection_record

CORPUS = Path(__file__).parents[1] / "lab" / "corpus"
CHUNK = 500


@pytest.fixture(scope="module")
def web_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prefetch") / "web.pcap"
    write_capture(path, 6000, seed=5, mix="web")
    return path


def _read_all(chunks: list[Capture]) -> tuple[PacketTable, list[IcmpError], dict[int, bytes]]:
    table = PacketTable.concat([chunk.packets for chunk in chunks])
    icmp = [error for chunk in chunks for error in chunk.icmp_errors]
    payloads = {frame: data for chunk in chunks for frame, data in chunk.rst_payloads.items()}
    return table, icmp, payloads


def _assert_same_reading(ours: list[Capture], theirs: list[Capture]) -> None:
    table, icmp, payloads = _read_all(ours)
    expected_table, expected_icmp, expected_payloads = _read_all(theirs)
    assert len(table) == len(expected_table) > 0
    for name, column in expected_table.columns.items():
        assert np.array_equal(table[name], column), name
    assert icmp == expected_icmp
    assert payloads == expected_payloads
    assert ours[-1].report == theirs[-1].report


@pytest.mark.parametrize(
    "name",
    [
        "backlog_overflow.abort.loopback.pcap",  # resets, several connections
        *sorted(p.name for p in CORPUS.glob("*.pcap") if "icmp" in p.name or "unreachable" in p.name)[:2],
    ],
)
def test_prefetched_chunks_equal_in_process_chunks_on_lab_captures(name: str) -> None:
    path = str(CORPUS / name)
    _assert_same_reading(
        list(iter_capture_prefetched(path, chunk_records=7)), list(iter_capture(path, chunk_records=7))
    )


def test_prefetched_chunks_equal_in_process_chunks_on_a_web_mix(web_pcap: Path) -> None:
    ours = list(iter_capture_prefetched(str(web_pcap), chunk_records=CHUNK))
    theirs = list(iter_capture(str(web_pcap), chunk_records=CHUNK))
    assert len(ours) == len(theirs) > 5
    _assert_same_reading(ours, theirs)


def _read_until_error(chunks: object) -> tuple[list[Capture], CaptureError]:
    read: list[Capture] = []
    with pytest.raises(CaptureError) as caught:
        for chunk in chunks:  # type: ignore[attr-defined]
            read.append(chunk)
    return read, caught.value


def test_a_truncated_file_gives_the_same_packets_then_the_same_error(web_pcap: Path, tmp_path: Path) -> None:
    data = web_pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3 + 5])
    ours, our_error = _read_until_error(iter_capture_prefetched(str(cut), chunk_records=CHUNK))
    theirs, their_error = _read_until_error(iter_capture(str(cut), chunk_records=CHUNK))
    assert type(our_error) is type(their_error) is TruncatedCaptureError
    assert (our_error.message, our_error.offset, our_error.record) == (
        their_error.message,
        their_error.offset,
        their_error.record,
    )
    assert str(our_error) == str(their_error)
    _assert_same_reading(ours, theirs)


def test_a_missing_file_raises_the_same_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(iter_capture_prefetched(str(tmp_path / "absent.pcap")))


def test_stopping_early_ends_the_reader_process(web_pcap: Path) -> None:
    chunks = iter_capture_prefetched(str(web_pcap), chunk_records=50)
    next(chunks)
    assert len(multiprocessing.active_children()) == 1
    chunks.close()
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("truncate", [False, True])
def test_the_analysis_is_the_same_with_and_without_the_reader_process(
    web_pcap: Path, tmp_path: Path, truncate: bool
) -> None:
    path = web_pcap
    if truncate:
        path = tmp_path / "cut.pcap"
        data = web_pcap.read_bytes()
        path.write_bytes(data[: len(data) // 2 + 3])

    def records(prefetch: bool) -> tuple[list[dict[str, object]], _ReadState]:
        state = _ReadState()
        batches = iter_connection_batches(str(path), state, chunk_records=CHUNK, prefetch=prefetch)
        found = [connection_record(conn, None, source="x") for batch in batches for conn in batch]
        return found, state

    ours, our_state = records(True)
    theirs, their_state = records(False)
    assert len(ours) > 20
    assert ours == theirs
    assert our_state.report == their_state.report
    assert our_state.failure == their_state.failure
    assert (our_state.failure is not None) == truncate


def _analyse_in_worker(path: str) -> int:
    state = _ReadState()
    return sum(len(batch) for batch in iter_connection_batches(path, state, chunk_records=CHUNK))


def test_a_pool_worker_reads_in_process(web_pcap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pool workers are daemonic and may not start children: the reader stays in their process."""
    import whyreset.ingest.prefetch as prefetch

    monkeypatch.setattr(prefetch, "PREFETCH_MIN_BYTES", 0)
    assert prefetch.prefetch_worthwhile(str(web_pcap))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        in_worker = pool.apply(_analyse_in_worker, (str(web_pcap),))
    assert in_worker == _analyse_in_worker(str(web_pcap)) > 20
