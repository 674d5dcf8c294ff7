"""The tracker's grouped carry: chunk for chunk the same connections as the reference tracker (which regroups
its whole carry with every chunk), on the benchmark's mix and on the lab corpus, whatever the chunk size."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from bench.generate import write_capture
from reference_tracker import ReferenceTracker
from segments import CLIENT, SERVER, Dialogue, Endpoint, concat

from whyreset.core.connection import Connection
from whyreset.core.tracker import MAX_BLOCKS, ConnectionTracker
from whyreset.ids import Outcome
from whyreset.ingest import iter_capture
from whyreset.model import Capture, IcmpError, ReadReport

ROOT = Path(__file__).parents[2]
CORPUS = sorted((ROOT / "tests/lab/corpus").glob("*.pcap*"))
S = 1_000_000_000


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("carry") / "mix.pcap"
    write_capture(path, 4000, seed=11)
    return path


def _record(c: Connection) -> tuple[Any, ...]:
    """Everything the core says about a connection, the lazily built fields included."""
    return (
        c.index,
        c.uid,
        c.community_id,
        c.orig_h,
        c.orig_p,
        c.resp_h,
        c.resp_p,
        c.orig_inferred_by,
        c.ts_first_ns,
        c.ts_last_ns,
        c.first_frame,
        c.last_frame,
        c.orig,
        c.resp,
        c.outcome,
        c.conn_state,
        c.history,
        c.resets,
        c.events,
        c.orig_states,
        c.resp_states,
        c.established,
        c.midstream,
        c.port_reuse,
        c.truncated_packets,
        c.packets["frame"].tolist(),
        c.from_orig.tolist(),
        c.zeek_orig_bytes,
        c.zeek_resp_bytes,
        c.missed_bytes,
        c.icmp_errors,
    )


def _track(tracker: ConnectionTracker | ReferenceTracker, chunks: Iterable[Capture]) -> list[tuple[Any, ...]]:
    """Every connection, as `_record`s by index; each feed's output must come out by index too."""
    out: list[Connection] = []
    for chunk in chunks:
        done = tracker.feed(chunk)
        assert [c.index for c in done] == sorted(c.index for c in done)
        out += done
    out += tracker.finish()
    return [_record(c) for c in sorted(out, key=lambda c: c.index)]


def _chunks(path: Path, rows: int) -> list[Capture]:
    return list(iter_capture(str(path), chunk_records=rows))


# Short timeouts make connections close, idle out and come back within the small captures.
TIMEOUTS = [{}, {"idle_timeout_ns": 2 * S, "close_linger_ns": S // 2, "reuse_gap_ns": S}]


@pytest.mark.parametrize("rows", [1, 7, 1000])
@pytest.mark.parametrize("timeouts", TIMEOUTS, ids=["default", "short"])
def test_generated_mix_in_chunks_matches_the_reference(mix: Path, rows: int, timeouts: dict[str, int]) -> None:
    chunks = _chunks(mix, rows)
    expected = _track(ReferenceTracker(**timeouts), chunks)
    assert _track(ConnectionTracker(**timeouts), chunks) == expected
    assert len(expected) > 300


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_generated_mix_in_chunks_matches_one_chunk(mix: Path, rows: int) -> None:
    """With the default timeouts no connection of the mix closes and comes back within a chunk's span."""
    whole = _track(ConnectionTracker(), _chunks(mix, 1 << 20))
    assert _track(ConnectionTracker(), _chunks(mix, rows)) == whole


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
@pytest.mark.parametrize("timeouts", TIMEOUTS, ids=["default", "short"])
def test_lab_corpus_in_chunks_matches_the_reference(path: Path, timeouts: dict[str, int]) -> None:
    for rows in (1, 7, 1000):
        chunks = _chunks(path, rows)
        assert _track(ConnectionTracker(**timeouts), chunks) == _track(ReferenceTracker(**timeouts), chunks)


def test_carry_holds_the_open_connections_only(mix: Path) -> None:
    """Between feeds the carry holds the rows of the connections not emitted yet (alive in its blocks)."""
    tracker = ConnectionTracker(idle_timeout_ns=2 * S, close_linger_ns=S // 2)
    seen = 0
    emitted = 0
    for chunk in _chunks(mix, 500):
        seen += len(chunk.packets)
        done = tracker.feed(chunk)
        emitted += sum(len(c.packets) for c in done)
        assert tracker.open_rows == seen - emitted
        # Blocks: a bounded number, each at least half alive (dead rows are compacted away).
        assert len(tracker._blocks) <= MAX_BLOCKS
        assert all(2 * block.live_rows >= len(block.table) for block in tracker._blocks)
    emitted += sum(len(c.packets) for c in tracker.finish())
    assert emitted == seen and tracker.open_rows == 0


def test_connections_kept_open_after_their_close_match_the_reference() -> None:
    """A half-closed connection and an unanswered one ended by its own RST are rebuilt as closing and kept open
    (settled): the idle timeout ends the first; an ICMP error quoting the second's SYN, arriving chunks later,
    makes it not_established and ends it (settled connections are looked at again when ICMP errors arrive)."""
    half = Dialogue(client=Endpoint("10.0.0.1", 40000, 1000), server=Endpoint("10.0.0.2", 80, 5000))
    half.handshake()
    half.data(CLIENT, 100)
    half.fin(CLIENT)
    half.ack(SERVER)
    lone = Dialogue(client=Endpoint("10.0.0.3", 40001, 7000), server=Endpoint("10.0.0.4", 81, 9000))
    lone.syn()
    lone.syn(seq=lone.client.isn, gap_ns=S)
    lone.rst(CLIENT, seq=lone.client.isn + 1, gap_ns=S // 10)
    filler = Dialogue(client=Endpoint("10.0.0.5", 40002, 1), server=Endpoint("10.0.0.6", 82, 2))
    filler.handshake()
    for _ in range(30):
        filler.data(CLIENT, 10, gap_ns=S)
        filler.ack(SERVER)
    table = concat(half, lone, filler)
    error_ts = lone.ts_ns + 12 * S
    error = IcmpError(
        frame=len(table) + 1,
        ts_ns=error_ts,
        reporter="10.0.0.254",
        ttl=63,
        ip_version=4,
        icmp_type=3,
        icmp_code=1,
        quoted_src="10.0.0.3",
        quoted_dst="10.0.0.4",
        quoted_sport=40001,
        quoted_dport=81,
        quoted_seq=lone.client.isn,
    )
    chunks = []
    for row in range(len(table)):
        arrives = int(table["ts_ns"][row]) >= error_ts and not any(c.icmp_errors for c in chunks)
        chunks.append(Capture(table.take(slice(row, row + 1)), [error] if arrives else [], {}, ReadReport()))
    timeouts = {"idle_timeout_ns": 20 * S, "close_linger_ns": S}
    tracker = ConnectionTracker(**timeouts)
    reference = ReferenceTracker(**timeouts)
    settled = False
    emitted: list[tuple[int, int, Outcome]] = []
    for number, chunk in enumerate(chunks):
        done = tracker.feed(chunk)
        assert [_record(c) for c in done] == [_record(c) for c in reference.feed(chunk)]
        emitted += [(number, c.index, c.outcome) for c in done]
        settled |= any(bool((block.settled & block.alive).any()) for block in tracker._blocks)
    assert [_record(c) for c in tracker.finish()] == [_record(c) for c in reference.finish()]
    assert settled
    icmp_feed = next(number for number, chunk in enumerate(chunks) if chunk.icmp_errors)
    assert (icmp_feed, 1, Outcome.NOT_ESTABLISHED) in emitted
    assert any(index == 0 and outcome is Outcome.HALF_CLOSED for _, index, outcome in emitted)


def test_tuple_keys_are_equal_exactly_when_the_four_tuples_are(mix: Path) -> None:
    """The tracker remembers ended 4-tuples by `Batch.tuple_keys` (packed bytes) instead of tuples of ints: one
    key per 4-tuple, the same from either direction and from another batch."""
    from whyreset.core.analysis import analyse
    from whyreset.core.build import Batch
    from whyreset.core.demux import demultiplex
    from whyreset.model import PacketTable

    def batch_of(table: PacketTable) -> Batch:
        demux = demultiplex(table)
        return Batch(analyse(table, demux), demux)

    (chunk,) = _chunks(mix, 1 << 20)
    table = chunk.packets
    batch = batch_of(table)
    tuples, keys = batch.canonical_tuples(), batch.tuple_keys()
    assert len(set(keys)) == len(set(tuples)) == len(set(zip(keys, tuples, strict=True))) > 300
    swap = {"src_hi": "dst_hi", "src_lo": "dst_lo", "sport": "dport"}
    swap.update({b: a for a, b in swap.items()})
    swapped = batch_of(PacketTable({swap.get(name, name): column for name, column in table.columns.items()}))
    assert dict(zip(swapped.canonical_tuples(), swapped.tuple_keys(), strict=True)) == dict(
        zip(tuples, keys, strict=True)
    )
