"""Arbitrary segments (random flags, sequence numbers, windows, few hosts and ports) never break the core."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from whyreset.core.connection import Connection
from whyreset.core.tracker import build_connections
from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import PacketTable, parse_addr

HOSTS = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
PORTS = [80, 443, 40000]

segment = st.tuples(
    st.integers(0, len(HOSTS) - 1),
    st.integers(0, len(HOSTS) - 1),
    st.sampled_from(PORTS),
    st.sampled_from(PORTS),
    st.integers(0, 0x1FF),  # any flag combination
    st.integers(0, 2**32 - 1) | st.integers(0, 3000),
    st.integers(0, 2**32 - 1) | st.integers(0, 3000),
    st.integers(0, 1500),
    st.integers(0, 3),  # window 0..3
    st.integers(0, 2_000_000_000),  # gap before, ns
)


def _table(segments: list[tuple[int, ...]]) -> PacketTable:
    table = PacketTable.empty(len(segments))
    ts = 1_700_000_000 * 10**9
    for i, (src, dst, sport, dport, flags, seq, ack, length, window, gap) in enumerate(segments):
        ts += gap
        for prefix, host in (("src", HOSTS[src]), ("dst", HOSTS[dst])):
            hi, lo = parse_addr(host)
            table[f"{prefix}_hi"][i] = hi
            table[f"{prefix}_lo"][i] = lo
        table["frame"][i] = i + 1
        table["ts_ns"][i] = ts
        table["ip_version"][i] = 6 if ":" in HOSTS[src] else 4
        table["sport"][i], table["dport"][i] = sport, dport
        table["flags"][i], table["seq"][i], table["ack"][i] = flags, seq, ack
        table["payload_len"][i], table["window"][i] = length, window
        table["opt_wscale"][i] = window * 3 if flags & 0x02 else -1
    return table


def _check(connections: list[Connection], rows: int) -> None:
    assert [c.index for c in connections] == list(range(len(connections)))
    frames = np.concatenate([c.packets["frame"] for c in connections]) if connections else np.zeros(0)
    assert sorted(frames.tolist()) == list(range(1, rows + 1))
    for c in connections:
        assert c.orig.packets + c.resp.packets == len(c.packets) == len(c.from_orig)
        assert list(c.packets["frame"]) == sorted(c.packets["frame"])
        assert c.outcome in Outcome and c.conn_state
        assert c.orig.unacked_bytes >= 0 and c.resp.unacked_bytes >= 0
        for side in Side:
            assert all(change.state in TcpState for change in c.states(side))
        assert [e.frame for e in c.events] == sorted(e.frame for e in c.events)


@settings(max_examples=150, deadline=None)
@given(st.lists(segment, max_size=40))
def test_random_segments(segments: list[tuple[int, ...]]) -> None:
    _check(build_connections(_table(segments)), len(segments))


@settings(max_examples=100, deadline=None)
@given(st.lists(segment, max_size=40))
def test_batch_zeek_shapes_match_the_per_connection_ones(segments: list[tuple[int, ...]]) -> None:
    """The memo key computed for the whole batch equals the one computed row by row (else memos would lie)."""
    from whyreset.core.analysis import analyse
    from whyreset.core.build import Batch
    from whyreset.core.demux import demultiplex
    from whyreset.core.zeek import _shape

    table = _table(segments)
    demux = demultiplex(table)
    batch = Batch(analyse(table, demux), demux)
    index = batch.index
    for conn in range(len(demux.starts)):
        lo, hi = index.zeek_fed.span(conn)
        fed = [
            (row, batch.fo_list[row], batch.flags_list[row], batch.rel_seq_list[row], batch.payload_list[row])
            for row in index.zeek_fed[conn]
        ]
        assert index.zeek_shapes[lo:hi] == _shape(fed)
