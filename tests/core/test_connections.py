"""Connections rebuilt from small crafted packet tables: roles, states, outcomes, Zeek fields, analysis."""

from __future__ import annotations

from segments import CLIENT, MS, SERVER, Dialogue, Endpoint, S, concat

from whyreset.core.connection import Connection, EventKind, RstAcceptability
from whyreset.core.tracker import build_connections
from whyreset.ids import Outcome, Side, TcpState
from whyreset.model import ACK, FIN, RST, SYN


def one(d: Dialogue) -> Connection:
    connections = build_connections(d.table())
    assert len(connections) == 1
    return connections[0]


def kinds(c: Connection) -> list[str]:
    return [e.kind.value for e in c.events]


def states(c: Connection, side: Side) -> list[TcpState]:
    return [change.state for change in c.states(side)]


# -- clean closes
# -----------------------------------------------------------------------------------------------


def test_clean_close_client_first() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    d.data(SERVER, 300)
    d.fin(CLIENT)
    d.fin(SERVER)
    d.ack(CLIENT)
    c = one(d)
    assert (c.orig_h, c.orig_p, c.resp_h, c.resp_p) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert c.orig_inferred_by == "syn" and c.established and not c.midstream
    assert c.outcome is Outcome.CLEAN
    assert c.conn_state == "SF" and c.history == "ShADdFf"
    assert states(c, Side.ORIG) == [
        TcpState.CLOSED,
        TcpState.SYN_SENT,
        TcpState.ESTABLISHED,
        TcpState.FIN_WAIT_1,
        TcpState.FIN_WAIT_2,
        TcpState.TIME_WAIT,
    ]
    assert states(c, Side.RESP)[-3:] == [TcpState.CLOSE_WAIT, TcpState.LAST_ACK, TcpState.CLOSED]
    assert c.orig.data_bytes == 100 and c.resp.data_bytes == 300
    assert c.orig.unacked_bytes == 0 and c.resp.unacked_bytes == 0
    assert c.zeek_orig_bytes == 100 and c.zeek_resp_bytes == 300
    assert c.orig.isn == 1000 and c.resp.isn == 5000 and c.orig.wscale == 7 and c.orig.mss == 1460


def test_clean_close_server_first() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 10)
    d.data(SERVER, 20)
    d.fin(SERVER)
    d.fin(CLIENT)
    d.ack(SERVER)
    c = one(d)
    assert c.outcome is Outcome.CLEAN and c.conn_state == "SF"
    assert c.final_state(Side.RESP) is TcpState.TIME_WAIT
    assert c.final_state(Side.ORIG) is TcpState.CLOSED


# -- handshake failures
# -----------------------------------------------------------------------------------------


def test_refused() -> None:
    d = Dialogue()
    d.syn()
    d.segment(SERVER, RST | ACK, seq=0, ack=d.client.isn + 1)
    c = one(d)
    assert c.conn_state == "REJ" and c.history == "Sr"
    assert c.outcome is Outcome.NOT_ESTABLISHED and not c.established
    reset = c.first_reset
    assert reset is not None and reset.sender is Side.RESP
    assert reset.acceptability is RstAcceptability.SYN_SENT_ACK_OK
    assert reset.receiver_state is TcpState.SYN_SENT and reset.sender_state is TcpState.CLOSED
    assert c.final_state(Side.ORIG) is TcpState.CLOSED
    assert c.states(Side.RESP)[0].state is TcpState.CLOSED
    # The responder never sent a SYN: its ISN is unknown, so is the RST's relative sequence number.
    assert c.orig.isn == 1000 and c.resp.isn is None and reset.rel_seq is None


def test_isn_at_the_top_of_the_sequence_space_is_an_isn() -> None:
    """An ISN of 2**32 - 1 is a valid ISN, not the "no SYN" marker (the sequence space wraps after it)."""
    d = Dialogue(client=Endpoint("10.0.0.1", 40000, 2**32 - 1))
    d.handshake()
    d.data(CLIENT, 100)
    d.ack(SERVER)
    d.rst(CLIENT, with_ack=True)
    c = one(d)
    assert c.orig.isn == 2**32 - 1 and c.orig.data_bytes == 100 and c.orig.bytes_acked == 100
    reset = c.first_reset
    assert reset is not None and reset.rel_seq == 101


def test_scaled_windows() -> None:
    """Each side's windows are shifted by the scale it announced (RFC 7323), SYNs' own windows never; without
    both SYNs the scale is unknown and the raw field is given."""
    d = Dialogue(server=Endpoint("10.0.0.2", 80, 5000, window=300, wscale=20))  # 20: used as 14
    d.handshake()
    d.data(CLIENT, 100)
    d.ack(SERVER)
    c = one(d)
    assert c.window_scale_known
    assert c.scaled_windows().tolist() == [502, 300, 502 << 7, 502 << 7, 300 << 14]
    d = Dialogue()
    d.data(CLIENT, 100)
    d.ack(SERVER)
    c = one(d)
    assert not c.window_scale_known and c.scaled_windows().tolist() == [502, 502]


def test_refused_with_wrong_ack_is_not_accepted() -> None:
    d = Dialogue()
    d.syn()
    d.segment(SERVER, RST | ACK, seq=0, ack=d.client.isn + 77)
    c = one(d)
    assert c.resets[0].acceptability is RstAcceptability.SYN_SENT_ACK_BAD
    assert c.final_state(Side.ORIG) is TcpState.SYN_SENT


def test_syn_unanswered_times_out() -> None:
    d = Dialogue()
    for _ in range(3):
        d.segment(CLIENT, SYN, seq=d.client.isn, gap_ns=S)
    c = one(d)
    assert c.conn_state == "S0" and c.history == "S"
    assert c.outcome is Outcome.TIMEOUT
    assert kinds(c) == ["syn", "syn_retransmit", "syn_retransmit"]


def test_single_syn_is_not_established() -> None:
    d = Dialogue()
    d.syn()
    c = one(d)
    assert c.outcome is Outcome.NOT_ESTABLISHED and c.conn_state == "S0"


def test_syn_then_rst_from_originator_is_rstos0() -> None:
    d = Dialogue()
    d.syn()
    d.rst(CLIENT)
    c = one(d)
    assert c.conn_state == "RSTOS0" and c.history == "SR"


def test_syn_then_fin_is_sh() -> None:
    d = Dialogue()
    d.syn()
    d.segment(CLIENT, FIN)
    assert one(d).conn_state == "SH"


def test_synack_then_rst_is_rstrh_and_flipped() -> None:
    d = Dialogue()
    d.server.acked = d.client.isn + 1
    d.segment(SERVER, SYN | ACK)
    d.rst(SERVER)
    c = one(d)
    assert c.orig_inferred_by == "syn_ack" and (c.orig_h, c.resp_p) == ("10.0.0.1", 80)
    assert c.conn_state == "RSTRH" and c.history == "^hr"


def test_synack_then_fin_is_shr() -> None:
    d = Dialogue()
    d.server.acked = d.client.isn + 1
    d.segment(SERVER, SYN | ACK)
    d.segment(SERVER, FIN | ACK)
    assert one(d).conn_state == "SHR"


# -- established endings
# ----------------------------------------------------------------------------------------


def test_open_connection_is_s1() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 50)
    d.ack(SERVER)
    c = one(d)
    assert c.conn_state == "S1" and c.outcome is Outcome.OPEN and c.history == "ShADa"


def test_half_closed_is_s2_or_s3() -> None:
    d = Dialogue()
    d.handshake()
    d.fin(CLIENT)
    d.ack(SERVER)
    c = one(d)
    assert c.conn_state == "S2" and c.outcome is Outcome.HALF_CLOSED
    assert c.final_state(Side.ORIG) is TcpState.FIN_WAIT_2
    assert c.final_state(Side.RESP) is TcpState.CLOSE_WAIT
    d = Dialogue()
    d.handshake()
    d.fin(SERVER)
    d.ack(CLIENT)
    assert one(d).conn_state == "S3"


def test_reset_by_originator_and_responder() -> None:
    for sender, expected in ((CLIENT, "RSTO"), (SERVER, "RSTR")):
        d = Dialogue()
        d.handshake()
        d.data(CLIENT, 100)
        d.ack(SERVER)
        d.rst(sender, with_ack=True)
        c = one(d)
        assert c.conn_state == expected
        assert c.outcome is Outcome.RESET
        reset = c.resets[0]
        assert reset.acceptability is RstAcceptability.EXACT
        assert reset.receiver_state is TcpState.ESTABLISHED
        assert c.final_state(Side.ORIG) is TcpState.CLOSED and c.final_state(Side.RESP) is TcpState.CLOSED


def test_in_window_rst_draws_challenge_ack_and_is_not_accepted() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    d.ack(SERVER)
    d.rst(SERVER, seq=d.server.nxt + 1000)
    d.segment(CLIENT, ACK)
    c = one(d)
    assert c.resets[0].acceptability is RstAcceptability.IN_WINDOW
    assert "challenge_ack" in kinds(c)
    assert c.final_state(Side.ORIG) is TcpState.ESTABLISHED
    assert c.outcome is not Outcome.RESET


def test_out_of_window_rst() -> None:
    d = Dialogue()
    d.handshake()
    d.rst(SERVER, seq=d.server.nxt + 10_000_000)
    d.data(CLIENT, 10)
    c = one(d)
    assert c.resets[0].acceptability is RstAcceptability.OUT_OF_WINDOW
    assert c.final_state(Side.ORIG) is TcpState.ESTABLISHED


def test_window_scale_decides_in_window() -> None:
    """A window of 502 scaled by 2**7 reaches 64 KB: an RST 10 KB ahead is in window only with scaling."""
    d = Dialogue()
    d.handshake()
    d.rst(SERVER, seq=d.server.nxt + 10_000)
    assert one(d).resets[0].acceptability is RstAcceptability.IN_WINDOW
    d = Dialogue(client=Endpoint("10.0.0.1", 40000, 1000, wscale=-1))
    d.handshake()
    d.rst(SERVER, seq=d.server.nxt + 10_000)
    assert one(d).resets[0].acceptability is RstAcceptability.OUT_OF_WINDOW


def test_data_after_fin_then_reset() -> None:
    d = Dialogue()
    d.handshake()
    d.fin(SERVER)
    d.ack(CLIENT)
    d.data(CLIENT, 200)
    d.rst(SERVER)
    c = one(d)
    assert "data_after_fin" in kinds(c)
    assert c.outcome is Outcome.RESET and c.conn_state == "RSTR"
    assert c.resets[0].receiver_state is TcpState.CLOSE_WAIT
    assert c.resets[0].sender_state is TcpState.FIN_WAIT_2


def test_close_with_unread_data() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 300)
    d.ack(SERVER)
    d.rst(SERVER, with_ack=True)
    c = one(d)
    assert c.orig.unacked_bytes == 0 and c.outcome is Outcome.RESET
    assert c.resets[0].sender is Side.RESP


def test_rst_payload_text() -> None:
    d = Dialogue()
    d.handshake()
    row = d.rst(SERVER, payload_len=12)
    connections = build_connections(d.table(), rst_payloads={row["frame"]: b"\x00idle timeout\n"})
    assert connections[0].resets[0].payload_text == "idle timeout"


# -- mid-stream and roles
# ---------------------------------------------------------------------------------------


def test_midstream_data_both_ways() -> None:
    d = Dialogue()
    d.receive(SERVER)
    d.data(SERVER, 100)
    d.data(CLIENT, 40)
    d.data(SERVER, 100)
    c = one(d)
    assert c.midstream and c.established
    assert c.orig_inferred_by == "port" and c.resp_p == 80
    assert c.conn_state == "OTH" and c.history.startswith("^")
    assert states(c, Side.ORIG) == [TcpState.UNKNOWN, TcpState.ESTABLISHED]
    assert c.states(Side.ORIG)[1].frame == 2
    assert c.resp.data_bytes == 200 and c.resp.lost_segments == 0


def test_first_packet_heuristic_when_ports_equal() -> None:
    d = Dialogue(client=Endpoint("10.0.0.9", 5000, 1), server=Endpoint("10.0.0.2", 5000, 9), rows=[])
    d.data(CLIENT, 10)
    assert one(d).orig_inferred_by == "first_packet" and one(d).orig_h == "10.0.0.9"


# -- sequence analysis
# ------------------------------------------------------------------------------------------


def test_sequence_wraparound() -> None:
    d = Dialogue(client=Endpoint("10.0.0.1", 40000, 2**32 - 150))
    d.handshake()
    for _ in range(4):
        d.data(CLIENT, 100)
    d.ack(SERVER)
    c = one(d)
    assert c.orig.data_bytes == 400 and c.orig.bytes_acked == 400
    assert c.orig.retransmissions == 0 and c.orig.lost_segments == 0 and c.orig.out_of_order == 0
    last_data = next(e for e in c.events if e.kind is EventKind.LAST_DATA)
    assert last_data.rel_seq == 301


def test_retransmission_and_history_t() -> None:
    d = Dialogue()
    d.handshake()
    first = d.data(CLIENT, 100)
    d.data(CLIENT, 100, seq=first["seq"])
    d.ack(SERVER)
    c = one(d)
    assert c.orig.retransmissions == 1 and c.orig.out_of_order == 0
    assert "T" in c.history
    assert "retransmission" in kinds(c)


def test_out_of_order_and_lost_segment() -> None:
    d = Dialogue()
    d.handshake()
    base = d.client.nxt
    d.data(CLIENT, 100, seq=base)
    d.data(CLIENT, 100, seq=base + 200)
    d.data(CLIENT, 100, seq=base + 100)
    d.ack(SERVER)
    c = one(d)
    assert c.orig.lost_segments == 1 and c.orig.out_of_order == 1 and c.orig.retransmissions == 0
    assert c.missed_bytes == 0


def test_gap_never_filled_is_missed_bytes() -> None:
    d = Dialogue()
    d.handshake()
    base = d.client.nxt
    d.data(CLIENT, 100, seq=base)
    d.data(CLIENT, 100, seq=base + 200)
    d.ack(SERVER)
    c = one(d)
    assert c.missed_bytes == 100 and "a" in c.history and "G" in c.history


def _gaps(acks_per_hole: list[list[int]]) -> Connection:
    """Client data with a 100-byte hole before each segment; after each segment the server acknowledges the
    given offsets into the hole (100: the hole and the segment after it, or several steps into it)."""
    d = Dialogue()
    d.handshake()
    base = d.client.nxt
    for hole, acks in enumerate(acks_per_hole):
        d.data(CLIENT, 100, seq=base + 200 * hole + 100)
        for offset in acks:
            d.segment(SERVER, ACK, ack=base + 200 * hole + offset)
    return one(d)


def test_content_gaps_scaled_history() -> None:
    """Zeek's G/g on the 1st, 10th, 100th... gap: Zeek's reassembler reports one for every missing range an
    acknowledgment moves past (TCP_Reassembler::Undelivered)."""
    nine, ten, twelve = (_gaps([[200]] * count) for count in (9, 10, 12))
    assert nine.history.count("G") == 1 and nine.missed_bytes == 900
    assert ten.history.count("G") == 2 and twelve.history.count("G") == 2
    assert twelve.missed_bytes == 1200
    assert twelve.history.endswith("G")  # the 11th and 12th gaps add no letter
    # A hole acknowledged in two steps is two gaps: five such holes are ten.
    assert _gaps([[50, 200]] * 5).history.count("G") == 2
    assert _gaps([[50, 200]] * 4 + [[200]]).history.count("G") == 1
    # One ACK past twelve holes reveals them all at once: both letters at that packet.
    d = Dialogue()
    d.handshake()
    base = d.client.nxt
    for hole in range(12):
        d.data(CLIENT, 100, seq=base + 200 * hole + 100)
    d.ack(SERVER)
    assert "GG" in one(d).history
    # The responder's gaps are lower case, the same way.
    d = Dialogue()
    d.handshake()
    base = d.server.nxt
    for hole in range(10):
        d.data(SERVER, 100, seq=base + 200 * hole + 100)
        d.segment(CLIENT, ACK, ack=base + 200 * hole + 200)
    assert one(d).history.count("g") == 2


def test_duplicate_acks() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    for _ in range(3):
        d.segment(SERVER, ACK, ack=d.client.nxt)
    c = one(d)
    assert c.resp.dup_acks == 2


def test_zero_window_scaled_history() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    for _ in range(12):
        d.ack(SERVER, window=0)
    c = one(d)
    assert c.resp.zero_windows == 12
    assert c.history.count("w") == 2  # 1st and 10th (Zeek's logarithmic letters)
    assert kinds(c).count("zero_window") == 1


def test_keepalive_probe_after_idle() -> None:
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 10)
    d.ack(SERVER)
    d.segment(CLIENT, ACK, seq=d.client.nxt - 1, gap_ns=75 * S)
    d.ack(SERVER)
    c = one(d)
    assert c.orig.keepalive_probes == 1 and c.orig.retransmissions == 0
    assert "keepalive_probe" in kinds(c)
    gap = [e for e in c.events if e.kind is EventKind.IDLE_GAP]
    assert len(gap) == 1 and gap[0].detail["gap_ns"] == 75 * S and c.orig.max_idle_ns == 75 * S


def test_data_timeout_outcome() -> None:
    d = Dialogue()
    d.handshake()
    row = d.data(CLIENT, 100)
    for i in range(4):
        d.data(CLIENT, 100, seq=row["seq"], gap_ns=(2**i) * 200 * MS)
    c = one(d)
    assert c.outcome is Outcome.TIMEOUT and c.orig.unacked_bytes == 100


def test_handshake_ack_lost() -> None:
    d = Dialogue()
    d.handshake()
    d.server.acked = d.client.isn + 1
    d.segment(SERVER, SYN | ACK, seq=d.server.isn)
    c = one(d)
    assert any(e.kind is EventKind.SYN_ACK_RETRANSMIT and e.detail.get("handshake_ack_lost") for e in c.events)
    assert c.final_state(Side.RESP) is TcpState.SYN_RECEIVED


# -- port reuse and ordering
# ------------------------------------------------------------------------------------


def _closed(d: Dialogue) -> None:
    d.handshake()
    d.fin(CLIENT)
    d.fin(SERVER)
    d.ack(CLIENT)


def test_port_reuse_after_close_splits() -> None:
    first = Dialogue()
    _closed(first)
    second = Dialogue(client=Endpoint("10.0.0.1", 40000, 900_000), server=Endpoint("10.0.0.2", 80, 77_000))
    second.ts_ns = first.ts_ns + S
    _closed(second)
    connections = build_connections(concat(first, second))
    assert [c.index for c in connections] == [0, 1]
    assert [c.port_reuse for c in connections] == [False, True]
    assert connections[1].orig.isn == 900_000 and connections[1].outcome is Outcome.CLEAN
    assert connections[0].uid != connections[1].uid
    assert connections[0].community_id == connections[1].community_id


def test_syn_retransmission_does_not_split() -> None:
    d = Dialogue()
    d.syn()
    d.segment(CLIENT, SYN, seq=d.client.isn, gap_ns=S)
    d.syn_ack()
    d.ack()
    assert len(build_connections(d.table())) == 1


def test_new_isn_without_end_or_silence_does_not_split() -> None:
    d = Dialogue()
    d.syn()
    d.segment(CLIENT, SYN, seq=123_456, gap_ns=S)
    assert len(build_connections(d.table())) == 1


def test_new_isn_after_long_silence_splits() -> None:
    d = Dialogue()
    d.syn()
    d.segment(CLIENT, SYN, seq=123_456, gap_ns=120 * S)
    assert [c.port_reuse for c in build_connections(d.table())] == [False, True]


def test_index_follows_first_packet_order() -> None:
    late = Dialogue(client=Endpoint("10.0.0.3", 1234, 5), server=Endpoint("10.0.0.2", 80, 6))
    early = Dialogue(client=Endpoint("10.0.0.9", 999, 5), server=Endpoint("10.0.0.2", 80, 6))
    early.ts_ns -= 10 * MS
    late.handshake()
    early.handshake()
    connections = build_connections(concat(late, early))
    assert [c.orig_h for c in connections] == ["10.0.0.9", "10.0.0.3"]
    assert [c.index for c in connections] == [0, 1]


def test_ipv6_connection() -> None:
    d = Dialogue(client=Endpoint("2001:db8::1", 40000, 1), server=Endpoint("2001:db8::2", 443, 2))
    d.handshake()
    c = one(d)
    assert c.ip_version == 6 and c.orig_h == "2001:db8::1" and c.conn_state == "S1"


def test_syn_inside_an_established_connection_draws_a_challenge_ack() -> None:
    """RFC 5961 4.2: the peer lost its state (reboot, NAT) and reconnects from the same port, new ISN."""
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 10)
    d.ack(SERVER)
    d.segment(CLIENT, SYN, seq=987_654)
    challenge = d.segment(SERVER, ACK)
    d.segment(CLIENT, RST, seq=d.server.acked)
    c = one(d)
    acks = [e for e in c.events if e.kind is EventKind.CHALLENGE_ACK]
    assert [(e.frame, e.side) for e in acks] == [(challenge["frame"], Side.RESP)]
    assert acks[0].detail["syn_frame"] == challenge["frame"] - 1


def test_reply_rst_to_a_request_that_crossed_a_lost_fin_is_exact() -> None:
    """Seen next to the server: its idle-timeout FIN leaves (and is lost on the path), the client's request still
    acknowledges only up to before the FIN, and the server's kernel answers with a reply RST whose seq is that
    ACK. The client never got the FIN: its RCV.NXT is its own ACK, so the RST is exact and accepted."""
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 120)
    d.data(SERVER, 700)
    d.ack(CLIENT)
    before_fin = d.server.nxt
    d.fin(SERVER, gap_ns=S)
    d.data(CLIENT, 120, ack=before_fin)  # sent before the FIN could arrive
    d.rst(SERVER, seq=before_fin)
    c = one(d)
    reset = c.resets[0]
    assert reset.sender is Side.RESP and reset.acceptability is RstAcceptability.EXACT
    assert c.outcome is Outcome.RESET
    assert c.final_state(Side.ORIG) is TcpState.CLOSED


def test_rst_below_the_receivers_own_ack_is_still_rejected() -> None:
    """The receiver's own highest ACK is a floor for its RCV.NXT: an RST below it cannot be exact."""
    d = Dialogue()
    d.handshake()
    d.data(SERVER, 700)
    d.ack(CLIENT)
    d.rst(SERVER, seq=d.server.nxt - 300)
    reset = one(d).resets[0]
    assert reset.acceptability is RstAcceptability.OUT_OF_WINDOW


def test_simultaneous_close_puts_both_sides_through_closing() -> None:
    """FINs cross: the server's FIN does not acknowledge the client's, and each side's ACK of the other's FIN
    comes after. Segments of one direction arrive in order, so the server received the client's FIN before the
    client's ACK of its own: both go FIN_WAIT1 -> CLOSING -> TIME_WAIT, whichever ACK is captured first."""
    d = Dialogue()
    d.handshake()
    d.data(CLIENT, 100)
    d.data(SERVER, 200)
    d.ack(CLIENT)
    d.fin(CLIENT)
    d.segment(SERVER, FIN | ACK, ack=d.client.nxt - 1)  # sent before the client's FIN arrived
    d.ack(CLIENT)
    d.ack(SERVER)
    c = one(d)
    closing = [TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.TIME_WAIT]
    assert states(c, Side.ORIG)[-3:] == closing
    assert states(c, Side.RESP)[-3:] == closing
    assert c.outcome is Outcome.CLEAN and c.conn_state == "SF"


def test_rst_proving_missed_segments_has_unknown_acceptability() -> None:
    """A paste that skips the transfer (seed 000's ssh ^C): the RST is ahead of everything its sender was seen to
    send and acknowledges data the receiver was never seen to send. The receiver's RCV.NXT is unknown, and as it
    never speaks again the RST ended the connection."""
    d = Dialogue()
    d.handshake()
    d.rst(CLIENT, with_ack=True, seq=d.client.nxt + 1342, ack=d.server.nxt + 132_928)
    c = one(d)
    assert c.resets[0].acceptability is RstAcceptability.UNKNOWN
    assert c.outcome is Outcome.RESET


def test_blind_rst_answered_by_its_receiver_stays_in_window() -> None:
    """The same numbers, but the receiver answers and carries on: a blind RST it did not accept."""
    d = Dialogue()
    d.handshake()
    d.rst(CLIENT, with_ack=True, seq=d.client.nxt + 1342, ack=d.server.nxt + 132_928)
    d.ack(SERVER)
    c = one(d)
    assert c.resets[0].acceptability is RstAcceptability.IN_WINDOW
    assert c.outcome is not Outcome.RESET
