"""The tracker across chunks: same answers as one pass, bounded memory, eviction, ICMP and identifiers."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from segments import CLIENT, SERVER, Dialogue, Endpoint, S
from synthetic import split, synthetic_table

from whyreset.core.connection import Connection, EventKind
from whyreset.core.tracker import ConnectionTracker, build_connections
from whyreset.core.zeek import community_id, zeek_uid
from whyreset.ids import Outcome, Side
from whyreset.model import Capture, IcmpError, PacketTable, ReadReport


def _feed_in_chunks(table: PacketTable, chunks: int, tracker: ConnectionTracker) -> list[Connection]:
    out: list[Connection] = []
    for part in split(table, chunks):
        out += tracker.feed(Capture(part, [], {}, ReadReport()))
    return out + tracker.finish()


def _summary(c: Connection) -> tuple[object, ...]:
    return (
        c.index,
        c.uid,
        c.orig_h,
        c.orig_p,
        c.outcome,
        c.conn_state,
        c.history,
        c.orig.data_bytes,
        c.resp.data_bytes,
        c.first_frame,
        c.last_frame,
        tuple(e.kind for e in c.events),
    )


def test_chunks_give_the_same_connections_as_one_pass() -> None:
    table = synthetic_table(6000, segments=4)
    whole = build_connections(table)
    chunked = sorted(_feed_in_chunks(table, 7, ConnectionTracker()), key=lambda c: c.index)
    assert [_summary(c) for c in chunked] == [_summary(c) for c in whole]
    assert [c.index for c in whole] == list(range(len(whole)))
    assert {c.outcome for c in whole} == {Outcome.CLEAN, Outcome.RESET}


def test_memory_stays_with_open_connections() -> None:
    table = synthetic_table(20000, segments=4)
    tracker = ConnectionTracker(close_linger_ns=0)
    peak = 0
    emitted = 0
    for part in split(table, 20):
        emitted += len(tracker.feed(Capture(part, [], {}, ReadReport())))
        peak = max(peak, tracker.open_rows)
    emitted += len(tracker.finish())
    assert emitted == len(build_connections(table))
    assert peak < len(table) / 4  # finished connections are evicted between chunks
    assert tracker.open_rows == 0


def test_idle_connection_is_evicted_by_capture_time() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 10)
    d.ack(SERVER)
    later = Dialogue(client=Endpoint("10.0.0.7", 1, 1), server=Endpoint("10.0.0.8", 2, 2))
    later.ts_ns = d.ts_ns + 400 * S
    later.handshake()
    tracker = ConnectionTracker()
    assert tracker.feed(Capture(d.table(), [], {}, ReadReport())) == []
    assert tracker.open_rows == 5
    second = later.table()
    second = PacketTable({**second.columns, "frame": second["frame"] + 100})
    evicted = tracker.feed(Capture(second, [], {}, ReadReport()))
    assert [(c.index, c.outcome) for c in evicted] == [(0, Outcome.OPEN)]
    assert tracker.open_rows == 3
    assert [c.index for c in tracker.finish()] == [1]


def test_unaccepted_rst_does_not_end_the_connection_between_chunks() -> None:
    d = Dialogue()
    d.handshake()
    d.rst(SERVER, seq=d.server.nxt + 10_000_000, gap_ns=S)
    first_part = d.table()
    d.ts_ns += 10 * S
    d.data(CLIENT, 10)
    tracker = ConnectionTracker()
    assert tracker.feed(Capture(first_part, [], {}, ReadReport())) == []
    whole = d.table()
    assert tracker.feed(Capture(whole.take(slice(len(first_part), None)), [], {}, ReadReport())) == []
    (c,) = tracker.finish()
    assert c.outcome is Outcome.OPEN and len(c.resets) == 1 and c.orig.data_bytes == 10


def test_icmp_error_matched_by_quoted_tuple() -> None:
    d = Dialogue()
    d.syn()
    error = IcmpError(
        frame=2,
        ts_ns=d.ts_ns + 1000,
        reporter="10.0.0.254",
        ttl=63,
        ip_version=4,
        icmp_type=3,
        icmp_code=3,
        quoted_src="10.0.0.1",
        quoted_dst="10.0.0.2",
        quoted_sport=40000,
        quoted_dport=80,
        quoted_seq=d.client.isn,
    )
    other = replace(error, quoted_sport=40001, frame=3)
    (c,) = build_connections(d.table(), icmp_errors=[error, other])
    icmp = [e for e in c.events if e.kind is EventKind.ICMP_ERROR]
    assert len(icmp) == 1 and icmp[0].detail["icmp_code"] == 3 and icmp[0].detail["quoted_sender"] == "orig"


def test_community_id_spec_vector() -> None:
    # corelight community-id-spec baseline: TCP 128.232.110.120:34855 -> 66.35.250.204:80
    assert community_id("128.232.110.120", "66.35.250.204", 34855, 80) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    assert community_id("66.35.250.204", "128.232.110.120", 80, 34855) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_uid_is_stable_and_zeek_like() -> None:
    uid = zeek_uid("1:abc", 123, 7)
    assert uid == zeek_uid("1:abc", 123, 7) and uid != zeek_uid("1:abc", 123, 8)
    assert uid.startswith("C") and len(uid) == 18 and uid[1:].isalnum()


def test_fast_built_results_equal_normally_built_ones() -> None:
    """The rebuild fills frozen dataclasses through their slots; the objects must be the ordinary ones."""
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 10)
    d.rst(SERVER)
    (c,) = build_connections(d.table())
    assert replace(c) == c and repr(replace(c)) == repr(c)
    assert replace(c.orig) == c.orig and replace(c.resets[0]) == c.resets[0]
    assert all(replace(e) == e for e in c.events) and all(replace(s) == s for s in c.orig_states)
    assert hash(c.events[0].kind) and c.orig_states[0].state is c.states(Side.ORIG)[0].state


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=6), st.integers(1, 9))
def test_any_chunking_gives_the_same_connections(cuts: list[int], seed: int) -> None:
    """Wherever the capture is cut into chunks, the tracker finds the same connections with the same facts."""
    table = synthetic_table(1500, segments=3, seed=seed)
    edges = sorted({min(c * 4, len(table)) for c in cuts} | {0, len(table)})
    tracker = ConnectionTracker(close_linger_ns=0)
    chunked: list[Connection] = []
    for a, b in itertools.pairwise(edges):
        chunked += tracker.feed(Capture(table.take(slice(a, b)), [], {}, ReadReport()))
    chunked += tracker.finish()
    whole = build_connections(table)
    assert sorted(map(_summary, chunked)) == sorted(map(_summary, whole))
