"""Points the connection model settled in phase 2: handshakes answered by ICMP, handshake ACKs a full accept
queue dropped, RST acknowledgments that prove nothing, and the deferred event/state fields."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from segments import CLIENT, MS, SERVER, Dialogue, S
from test_property import _table, segment

from whyreset.core.connection import Connection, Deferred, EventKind
from whyreset.core.tracker import build_connections
from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import ACK, SYN, IcmpError

SHARED_CORPUS = Path("/work/shared/corpus")


def one(d: Dialogue, icmp_errors: list[IcmpError] | None = None) -> Connection:
    connections = build_connections(d.table(), icmp_errors=icmp_errors or [])
    assert len(connections) == 1
    return connections[0]


def unreachable(d: Dialogue, frame: int) -> IcmpError:
    """A router's ICMP host-unreachable quoting the client's SYN."""
    return IcmpError(
        frame=frame,
        ts_ns=d.ts_ns + 5 * MS,
        reporter="10.0.0.254",
        ttl=63,
        ip_version=4,
        icmp_type=3,
        icmp_code=1,
        quoted_src="10.0.0.1",
        quoted_dst="10.0.0.2",
        quoted_sport=40000,
        quoted_dport=80,
        quoted_seq=d.client.isn,
    )


# -- a. a SYN answered by an ICMP error is not a timeout


def _retransmitted_syns() -> Dialogue:
    d = Dialogue()
    d.syn()
    d.syn(seq=d.client.isn, gap_ns=1 * S)
    d.syn(seq=d.client.isn, gap_ns=1 * S)
    return d


def test_syns_retransmitted_then_icmp_error_is_not_established() -> None:
    d = _retransmitted_syns()
    c = one(d, [unreachable(d, frame=4)])
    assert c.outcome is Outcome.NOT_ESTABLISHED
    assert len(c.icmp_errors) == 1
    assert [e.side for e in c.events if e.kind is EventKind.ICMP_ERROR] == [Side.RESP]


def test_icmp_events_are_read_without_building_the_event_list() -> None:
    d = _retransmitted_syns()
    c = one(d, [unreachable(d, frame=4)])
    assert isinstance(Connection.__dict__["events"].slot.__get__(c, Connection), Deferred)
    early = c.icmp_events
    assert isinstance(Connection.__dict__["events"].slot.__get__(c, Connection), Deferred)
    assert early == tuple(e for e in c.events if e.kind is EventKind.ICMP_ERROR) == c.icmp_events
    assert len(early) == 1 and early[0].detail["quoted_sender"] == "orig"


def test_syns_never_answered_stay_a_timeout() -> None:
    assert one(_retransmitted_syns()).outcome is Outcome.TIMEOUT


def test_icmp_error_quoting_the_responder_does_not_answer_the_syn() -> None:
    d = _retransmitted_syns()
    error = replace(
        unreachable(d, frame=4), quoted_src="10.0.0.2", quoted_dst="10.0.0.1", quoted_sport=80, quoted_dport=40000
    )
    assert one(d, [error]).outcome is Outcome.TIMEOUT


# -- b. the handshake ACK a full accept queue dropped


def _handshake_ack_dropped() -> Dialogue:
    """The client's ACK (with its request) reaches a server whose accept queue is full: dropped, the server
    retransmits its SYN-ACK, the client answers with a duplicate ACK."""
    d = Dialogue()
    d.syn()
    d.syn_ack()
    d.data(CLIENT, 33)
    d.data(CLIENT, 33, seq=d.client.isn + 1, gap_ns=200 * MS)
    d.segment(SERVER, SYN | ACK, seq=d.server.isn, gap_ns=600 * MS)
    d.ack(CLIENT)
    return d


def test_handshake_ack_dropped_by_a_full_queue_is_not_established() -> None:
    c = one(_handshake_ack_dropped())
    assert c.final_state(Side.RESP) is TcpState.SYN_RECEIVED
    assert not c.established
    assert c.outcome is Outcome.NOT_ESTABLISHED


def test_handshake_completed_later_gives_the_usual_outcome() -> None:
    d = _handshake_ack_dropped()
    d.ack(SERVER, gap_ns=1 * S)  # the server acknowledges the request: it did accept the connection
    d.data(SERVER, 200)
    c = one(d)
    assert c.established
    assert c.final_state(Side.RESP) is TcpState.ESTABLISHED
    assert c.outcome is Outcome.OPEN
    assert [s.state for s in c.resp_states][-2:] == [TcpState.SYN_RECEIVED, TcpState.ESTABLISHED]


# -- c. an RST's acknowledgment is no proof of delivery


def _data_half_acknowledged() -> Dialogue:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 500)
    d.ack(SERVER)
    d.data(CLIENT, 500)  # never acknowledged by the server's own stack
    return d


def test_forged_rst_ack_does_not_count_as_delivery() -> None:
    d = _data_half_acknowledged()
    d.receive(SERVER)
    d.rst(SERVER, with_ack=True, ttl=250)  # a middlebox's RST: acknowledges everything, wrong TTL
    c = one(d)
    assert c.resets and c.resets[0].ttl == 250
    assert (c.orig.data_bytes, c.orig.bytes_acked, c.orig.unacked_bytes) == (1000, 500, 500)


def test_rst_the_receiver_could_not_accept_does_not_count() -> None:
    d = _data_half_acknowledged()
    d.receive(SERVER)
    d.rst(SERVER, with_ack=True, seq=d.server.nxt + 10_000_000)  # own TTL, but far out of the window
    c = one(d)
    assert c.resets[0].acceptability.value == "out_of_window"
    assert c.orig.unacked_bytes == 500


def test_accepted_rst_with_the_senders_ttl_counts() -> None:
    d = _data_half_acknowledged()
    d.receive(SERVER)
    d.rst(SERVER, with_ack=True)  # the server's own stack: closed with the data unread, acknowledges it
    c = one(d)
    assert c.resets[0].acceptability.value == "exact"
    assert c.orig.unacked_bytes == 0


def test_suricata_bug_2769_keeps_its_lost_bytes() -> None:
    path = SHARED_CORPUS / "suricata-bug-2769.pcap"
    if not path.exists():
        pytest.skip(f"{path} is not available")
    from whyreset.ingest import read_capture

    capture = read_capture(str(path))
    (c,) = build_connections(capture.packets)
    # The responder's last 5,408 bytes are acknowledged only by RSTs carrying another TTL than the
    # originator's own packets (244 against 116).
    assert c.resp.unacked_bytes == 5408
    assert c.resp.bytes_acked + c.resp.unacked_bytes == c.resp.data_bytes


# -- deferred fields


def test_deferred_fields_are_made_on_first_read_and_equal_an_eager_build() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    d.fin(CLIENT)
    d.fin(SERVER)
    d.ack(CLIENT)
    first, second = build_connections(d.table()), build_connections(d.table())
    c = first[0]
    raw_events = Connection.__dict__["events"].slot.__get__(c, Connection)
    assert isinstance(raw_events, Deferred)
    # The final state is answered without building the timeline.
    assert c.final_state(Side.ORIG) is TcpState.TIME_WAIT
    assert isinstance(Connection.__dict__["orig_states"].slot.__get__(c, Connection), Deferred)
    kinds = [e.kind for e in c.events]
    assert kinds[:3] == [EventKind.SYN, EventKind.SYN_ACK, EventKind.HANDSHAKE_ACK]
    # Events and timelines are made separately (the JSON records read only the timelines).
    assert isinstance(Connection.__dict__["orig_states"].slot.__get__(c, Connection), Deferred)
    assert c.resp_states[-1].state is TcpState.CLOSED
    assert not isinstance(Connection.__dict__["orig_states"].slot.__get__(c, Connection), Deferred)
    assert c.final_state(Side.ORIG) is c.orig_states[-1].state
    assert c == second[0] and repr(c) == repr(second[0])
    assert replace(c) == c


def test_deferred_details_do_not_hold_the_batchs_python_lists() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    c = build_connections(d.table())[0]
    details = Connection.__dict__["events"].slot.__get__(c, Connection).details
    held = [getattr(details, name) for name in details.__slots__]
    assert not any(type(value).__name__ == "Batch" for value in held)
    assert c.events[-1].kind is EventKind.LAST_DATA and c.events[-1].rel_ack == 1
    assert c.packets["flags"][-1] & ACK


# -- d. Zeek's *_ip_bytes from the readers' IP lengths


def test_ip_bytes_are_the_wire_ip_lengths(tmp_path: Path) -> None:
    from whyreset.ingest import craft, read_capture

    client, server = ("10.0.0.1", 40000), ("10.0.0.2", 80)
    option = b"\x94\x04\x00\x00"  # IP router alert: 4 bytes the TCP-only estimate cannot know
    packets = [
        (True, craft.tcp_packet(client[0], server[0], 40000, 80, seq=100, flags="S", mss=1460, ip_options=option)),
        (False, craft.tcp_packet(server[0], client[0], 80, 40000, seq=500, ack=101, flags="SA", mss=1460)),
        (True, craft.tcp_packet(client[0], server[0], 40000, 80, seq=101, ack=501, flags="PA", payload=b"x" * 300)),
        (False, craft.tcp_packet(server[0], client[0], 80, 40000, seq=501, ack=401, flags="A", timestamps=(5, 6))),
    ]
    path = tmp_path / "ip_len.pcap"
    records = [
        (1_700_000_000 * S + i * MS, craft.frame(craft.LINKTYPE_ETHERNET, p)) for i, (_, p) in enumerate(packets)
    ]
    craft.write_pcap(path, records, nanosecond=True)
    (c,) = build_connections(read_capture(str(path)).packets)
    assert c.orig.ip_bytes == sum(len(p) for from_client, p in packets if from_client)
    assert c.resp.ip_bytes == sum(len(p) for from_client, p in packets if not from_client)


# -- the packed marks of connections without RST


def test_packed_marks_round_trip() -> None:
    import itertools

    from whyreset.core.walk import Mark, mark_code, marks_from_codes
    from whyreset.model import FIN

    for side, flags, syn_proof, fin_proof, reply in itertools.product(
        (True, False), (SYN, SYN | ACK, ACK, FIN | ACK, FIN), (True, False), (True, False), (True, False)
    ):
        code = mark_code(side, flags, syn_proof, fin_proof, reply)
        assert 0 <= code < 256
        assert marks_from_codes(bytes([code])) == [Mark(side, flags, syn_proof, fin_proof, False, None, reply)]


# -- the tracker analyses each row once


def test_open_connections_are_not_reanalysed_at_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    from synthetic import split, synthetic_table

    from whyreset.core import tracker as tracker_module
    from whyreset.core.tracker import ConnectionTracker
    from whyreset.model import Capture, ReadReport

    analysed: list[int] = []
    real_analyse = tracker_module.analyse

    def counting(table: Any, demux: Any, **options: Any) -> Any:
        analysed.append(len(table))
        return real_analyse(table, demux, **options)

    monkeypatch.setattr(tracker_module, "analyse", counting)
    table = synthetic_table(6000, segments=4)
    # A linger longer than the whole capture: every connection stays open through every chunk.
    tracker = ConnectionTracker(close_linger_ns=10**6 * S)
    emitted = [c for part in split(table, 12) for c in tracker.feed(Capture(part, [], {}, ReadReport()))]
    emitted += tracker.finish()
    assert sum(analysed) == len(table)  # each open row used to be analysed again at every chunk
    assert sorted(c.index for c in emitted) == list(range(len(build_connections(table))))


# -- the batch shortcuts give what the per-connection reference gives


_TEN_GAPS = [
    (0, 1, 40000, 80, 0x02, 1000, 0, 0, 3, 1000),
    (1, 0, 80, 40000, 0x12, 5000, 1001, 0, 3, 1000),
    (0, 1, 40000, 80, 0x10, 1001, 5001, 0, 3, 1000),
    *(
        segment
        for hole in range(10)
        for segment in (
            (0, 1, 40000, 80, 0x18, 1101 + 200 * hole, 5001, 100, 3, 1000),
            (1, 0, 80, 40000, 0x10, 5001, 1201 + 200 * hole, 0, 3, 1000),
        )
    ),
]
"""A handshake, then ten segments each after a hole the server acknowledges: Zeek's 1st and 10th ``G``."""


@settings(max_examples=120, deadline=None)
@given(st.lists(segment, max_size=40))
@example(_TEN_GAPS)
def test_zeek_fields_and_packed_marks_match_the_reference(segments: list[tuple[int, ...]]) -> None:
    """Zeek's fields from the batch shortcuts (no row arrays, or one Python pass for W/T letters) equal the
    reference `summarise` that derives everything from the connection's rows with numpy; the packed marks (and
    the RFC 5961 facts of RST marks, computed for the whole batch) equal the marks made row by row."""
    import numpy as np

    from whyreset.core.analysis import analyse
    from whyreset.core.build import Batch, _Walk
    from whyreset.core.connection import RstAcceptability
    from whyreset.core.demux import demultiplex
    from whyreset.core.walk import marks_from_codes, marks_from_rst_codes
    from whyreset.core.zeek import ZeekRows, summarise
    from whyreset.model import RST

    table = _table(segments)
    demux = demultiplex(table)
    batch = Batch(analyse(table, demux), demux)
    by_first_frame = {c.first_frame: c for c in build_connections(table)}
    assert batch.canonical_tuples() == [batch.canonical_tuple(conn) for conn in range(len(demux.starts))]
    for conn in range(len(demux.starts)):
        start, stop = batch.starts_list[conn], batch.stops_list[conn]
        window = slice(start, stop)
        gap = batch.analysis.first_gap_ack_row
        later = batch.analysis.later_gap_ack_rows
        reference = summarise(
            ZeekRows(
                flags=batch.flags[window],
                from_orig=batch.fo[window],
                rel_seq=batch.rel_seq[window],
                rel_ack=batch.rel_ack[window],
                payload=batch.payload[window],
                window=batch.table["window"][window],
                flipped=not batch.fo_list[start],
                first_gap_row_orig=int(gap[2 * conn]) - start if gap[2 * conn] >= 0 else -1,
                first_gap_row_resp=int(gap[2 * conn + 1]) - start if gap[2 * conn + 1] >= 0 else -1,
                missed_bytes=0,
                later_gap_rows_orig=tuple(row - start for row in later.get(2 * conn, ())),
                later_gap_rows_resp=tuple(row - start for row in later.get(2 * conn + 1, ())),
            )
        )
        built = by_first_frame[batch.frame_list[start]]
        assert (built.history, built.conn_state) == (reference.history, reference.conn_state)
        assert (built.zeek_orig_bytes, built.zeek_resp_bytes) == (reference.orig_bytes, reference.resp_bytes)
        walk = _Walk(batch, conn, start, stop, {})
        walk.rows = batch.index.control[conn]
        midstream = batch.index.first_syn_row[2 * conn] < 0 and batch.index.first_syn_row[2 * conn + 1] < 0
        reference = (walk._initial(True), walk._initial(False), midstream, walk._data_both_ways_row())
        assert batch.walk_starts[conn] == reference
        if walk.both_ways_row < 0:
            lo, hi = batch.index.control.span(conn)
            codes = batch.mark_codes[lo:hi]
            packed = (
                marks_from_codes(codes)
                if batch.coded_walk[conn]
                else marks_from_rst_codes(codes, batch.rst_codes[lo:hi])
            )
            assert packed == walk._marks()
            packed_replies = {p: r for p, r in enumerate(batch.syn_reply_rows[lo:hi]) if r >= 0}
            assert packed_replies == walk.replies
        for row in np.flatnonzero(batch.flags[start:stop] & RST) + start:
            side = batch.fo_list[row]
            own_ttl = batch.reset_row_facts()[int(row)][4]
            assert own_ttl == walk._trusted_rst(RstAcceptability.EXACT, int(row), side)


@settings(max_examples=100, deadline=None)
@given(st.lists(segment, max_size=40), st.randoms(use_true_random=False))
def test_selected_connections_group_as_if_demultiplexed_alone(segments: list[tuple[int, ...]], rng: Any) -> None:
    """`Demux.select` (the tracker's rows that may be over) equals grouping those rows again, for what the
    tracker picks: on each 4-tuple, all its connections but possibly the last."""
    import numpy as np

    from whyreset.core.demux import demultiplex

    table = _table(segments)
    whole = demultiplex(table)
    count = len(whole.starts)
    last_of_flow = np.ones(count, bool)
    last_of_flow[:-1] = whole.flow[1:] != whole.flow[:-1]
    picked_connections = ~last_of_flow | np.asarray([rng.random() < 0.5 for _ in range(count)], bool)
    rows, selection = whole.select(picked_connections)
    again = demultiplex(table.take(rows))
    for name in ("order", "starts", "sender_is_a", "orig_is_a", "inferred_by", "reuse_index"):
        assert np.array_equal(getattr(selection, name), getattr(again, name)), name
