"""Each cause's mechanism, scripted as the kernels play it and captured from both ends of the path.

Every scenario runs in several variants (capture next to the client or next to the server, short and long
paths, other ports, TTLs and sizes): the rules must follow the mechanism, not one capture's numbers.
"""

from __future__ import annotations

import pytest

from diagnose.script import CLIENT, MS, SERVER, Conn, Path, S
from whyreset.diagnose.symptoms import Errno
from whyreset.ids import CauseId, Side
from whyreset.model import ACK, FIN, RST, SYN, IcmpError

VANTAGES = [
    pytest.param(dict(capture_at=0.0, one_way_ms=12.0), id="client-side-wan"),
    pytest.param(dict(capture_at=1.0, one_way_ms=12.0), id="server-side-wan"),
    pytest.param(dict(capture_at=0.0, one_way_ms=0.05, hops=0), id="client-side-lan"),
    pytest.param(dict(capture_at=1.0, one_way_ms=40.0, hops=11, client_ttl=128), id="server-side-windows-client"),
]


def conn_on(path: Path, port: int = 8080, client_port: int = 40100) -> Conn:
    return path.conn(client=("10.1.0.5", client_port), server=("10.2.0.9", port))


def assert_cause(path: Path, cause: CauseId, actor: Side | None = None, min_conf: float = 0.35) -> None:
    finding = path.only_finding()
    assert finding is not None, "no finding"
    assert finding.cause is cause, (
        finding.cause,
        finding.summary,
        finding.alternatives,
        finding.undetermined_reason,
    )
    assert finding.confidence >= min_conf
    if actor is not None:
        assert finding.actor is actor
    assert all(a.confidence < finding.confidence for a in finding.alternatives)
    assert finding.evidence and finding.fix and finding.vantage


# ---- handshake family --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize("port", [22, 5432])
def test_refused(vantage: dict[str, float], port: int) -> None:
    path = Path(**vantage)
    c = conn_on(path, port)
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    c.send(SERVER, 0, arrival, flags=RST | ACK, seq=0)
    assert_cause(path, CauseId.REFUSED, Side.RESP, 0.8)
    finding = path.only_finding()
    assert finding is not None
    assert "ECONNREFUSED" in finding.symptoms["python"]["orig"]
    assert "connect: connection refused" in finding.symptoms["go"]["orig"]


def test_refused_by_firewall_is_attributed_to_the_path() -> None:
    path = Path(capture_at=0.0, one_way_ms=10.0, hops=6)
    ok = conn_on(path, 443, 40001)
    ok.handshake(0)
    refused = conn_on(path, 25, 40002)
    syn_arrival = refused.send(CLIENT, 0, 50 * MS, flags=SYN)
    # A netfilter REJECT two routers before the client: TTL 255 - 2, far from the host's own 64 - 6.
    refused.send(SERVER, 0, syn_arrival, flags=RST | ACK, seq=0, ttl=255 + 4)
    results = {c.resp_p: f for c, f in path.diagnose_all()}
    finding = results[25]
    assert finding is not None and finding.cause is CauseId.REFUSED
    assert finding.actor is None
    assert "firewall" in finding.summary


@pytest.mark.parametrize("code", [3, 13])
def test_icmp_unreachable(code: int) -> None:
    path = Path(capture_at=0.0)
    c = conn_on(path)
    c.send(CLIENT, 0, 0, flags=SYN)
    path.icmp.append(
        IcmpError(
            frame=2,
            ts_ns=path.rows[0]["ts_ns"] + 3 * MS,
            reporter="10.9.9.1",
            ttl=62,
            ip_version=4,
            icmp_type=3,
            icmp_code=code,
            quoted_src="10.1.0.5",
            quoted_dst="10.2.0.9",
            quoted_sport=40100,
            quoted_dport=8080,
            quoted_seq=1_000_000,
        )
    )
    assert_cause(path, CauseId.ICMP_UNREACHABLE, None, 0.8)
    finding = path.only_finding()
    assert finding is not None
    expected = "ECONNREFUSED" if code == 3 else "EHOSTUNREACH"
    assert expected in finding.symptoms["node"]["orig"]


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize("intervals", [(1, 1, 1), (1, 2, 4, 8)])
def test_syn_unanswered(vantage: dict[str, float], intervals: tuple[int, ...]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = 0
    c.send(CLIENT, 0, t, flags=SYN)
    for gap in intervals:
        t += gap * S
        c.send(CLIENT, 0, t, flags=SYN, seq=c.client.isn)
    assert_cause(path, CauseId.SYN_UNANSWERED, None, 0.8)


def test_syn_unanswered_on_a_listening_port_suggests_backlog_overflow() -> None:
    path = Path(capture_at=1.0)
    ok = conn_on(path, 8080, 41000)
    ok.handshake(0)
    lost = conn_on(path, 8080, 41001)
    for i, gap in enumerate((0, 1, 2, 4)):
        lost.send(CLIENT, 0, 10 * MS + sum((0, 1, 2, 4)[: i + 1]) * S + gap, flags=SYN, seq=lost.client.isn)
    finding = dict((c.orig_p, f) for c, f in path.diagnose_all())[41001]
    assert finding is not None and finding.cause is CauseId.SYN_UNANSWERED
    assert CauseId.BACKLOG_OVERFLOW in [a.cause for a in finding.alternatives]


@pytest.mark.parametrize("vantage", VANTAGES)
def test_backlog_overflow_drops_the_final_ack(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.handshake(0)
    c.send(CLIENT, 200, t + 100_000, deliver=False)
    # The listener never promoted the connection: it retransmits its SYN-ACK (1 s, 2 s), the client its
    # request.
    c.send(SERVER, 0, t + 1 * S, flags=SYN | ACK, seq=c.server.isn, ack=c.client.isn + 1)
    c.send(CLIENT, 200, t + 1 * S + 200 * MS, seq=c.client.isn + 1, deliver=False)
    c.send(SERVER, 0, t + 3 * S, flags=SYN | ACK, seq=c.server.isn, ack=c.client.isn + 1)
    assert_cause(path, CauseId.BACKLOG_OVERFLOW, Side.RESP, 0.7)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_backlog_overflow_abort_on_overflow(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    arrival = c.handshake(0)
    # tcp_abort_on_overflow=1: the handshake ACK is answered by a reply reset (seq = its ACK, no ACK bit).
    c.reply_rst(SERVER, arrival + path.delay_ns, answering_ack=c.server.isn + 1)
    assert_cause(path, CauseId.BACKLOG_OVERFLOW, Side.RESP)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_handshake_aborted_after_a_late_syn_ack(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    c.send(CLIENT, 0, 0, flags=SYN)
    c.send(CLIENT, 0, 1 * S, flags=SYN, seq=c.client.isn)
    arrival = c.send(SERVER, 0, 2 * S, flags=SYN | ACK)  # the client's connect timeout fired meanwhile
    c.reply_rst(CLIENT, arrival, answering_ack=c.client.isn + 1)
    assert_cause(path, CauseId.HANDSHAKE_ABORTED, Side.ORIG)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_listener_closed_resets_the_accept_queue_at_once(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    conns = [conn_on(path, 9000, 42000 + i) for i in range(3)]
    for i, c in enumerate(conns):
        t = c.handshake(i * 5 * MS)
        c.send(CLIENT, 150, t)
        c.ack(SERVER, t + path.delay_ns)
    close_time = 400 * MS
    for c in conns:
        c.rst(SERVER, close_time)
    late = conn_on(path, 9000, 42100)
    arrival = late.send(CLIENT, 0, 600 * MS, flags=SYN)
    late.send(SERVER, 0, arrival, flags=RST | ACK, seq=0)
    results = {c.orig_p: f for c, f in path.diagnose_all()}
    for i in range(3):
        finding = results[42000 + i]
        assert finding is not None and finding.cause is CauseId.LISTENER_CLOSED, finding
    assert results[42100] is not None and results[42100].cause is CauseId.REFUSED


# ---- close family ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize("request_size", [80, 4000])
def test_close_with_unread_data(vantage: dict[str, float], request_size: int) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.handshake(0)
    arrival = c.send(CLIENT, request_size, t)
    c.ack(SERVER, arrival)
    c.rst(SERVER, arrival + 3 * MS)  # the server closes without reading the request
    assert_cause(path, CauseId.CLOSE_WITH_UNREAD_DATA, Side.RESP)
    finding = path.only_finding()
    assert finding is not None
    assert finding.symptoms["java"]["orig"].startswith("java.net.SocketException: Connection reset")
    assert finding.impact.request_unanswered
    assert CauseId.ABORTIVE_CLOSE in [a.cause for a in finding.alternatives]


@pytest.mark.parametrize("vantage", VANTAGES)
def test_abortive_close_discards_data_in_flight(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.handshake(0)
    arrival = c.send(CLIENT, 100, t)
    for i in range(3):
        c.send(SERVER, 1448, arrival + 100_000 + i * 10_000, deliver=False)
    c.rst(SERVER, arrival + 200_000)  # SO_LINGER {1, 0} close with the response still in flight
    assert_cause(path, CauseId.ABORTIVE_CLOSE, Side.RESP)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_abortive_close_of_an_orphan_after_its_fin(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    arrival = c.fin(SERVER, t + 10 * MS)
    c.ack(CLIENT, arrival)
    c.rst(SERVER, arrival + path.delay_ns + 100 * MS)  # TCP_LINGER2 < 0: no waiting in FIN_WAIT2
    assert_cause(path, CauseId.ABORTIVE_CLOSE, Side.RESP)


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize("wait_s", [2, 30])
def test_data_after_close(vantage: dict[str, float], wait_s: int) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    arrival = c.fin(SERVER, t + 5 * MS)
    c.ack(CLIENT, arrival)
    late = arrival + wait_s * S  # the client sat in CLOSE_WAIT and writes again
    c.send(CLIENT, 64, late)
    c.reply_rst(SERVER, late + path.delay_ns, answering_ack=c.server.snd_nxt)
    assert_cause(path, CauseId.DATA_AFTER_CLOSE, Side.RESP)
    finding = path.only_finding()
    assert finding is not None
    assert "EOF" in finding.symptoms["python"]["orig"] or "RemoteDisconnected" in finding.symptoms["python"]["orig"]


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize("idle_s", [5, 75])
@pytest.mark.parametrize("crossing", [True, False])
def test_keepalive_race(vantage: dict[str, float], idle_s: int, crossing: bool) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    fin_time = t + idle_s * S
    fin_arrival = c.fin(SERVER, fin_time)
    # The pooled client reuses the connection: before the FIN arrives (crossing) or just after it.
    request_time = fin_time + path.delay_ns // 2 if crossing else fin_arrival + 200_000
    if crossing and path.delay_ns // 2 == 0:
        request_time = fin_time
    request_arrival = c.send(CLIENT, 90, request_time)
    c.reply_rst(SERVER, request_arrival, answering_ack=c.server.isn + 1 + 900 + (0 if crossing else 1))
    assert_cause(path, CauseId.KEEPALIVE_RACE, Side.RESP)


# ---- path family -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("vantage", VANTAGES)
@pytest.mark.parametrize("idle_s", [0, 40])
def test_peer_lost_state(vantage: dict[str, float], idle_s: int) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    # The server rebooted: its kernel has no socket; the next request gets a reply reset, no FIN ever.
    send_time = t + idle_s * S + 50 * MS
    arrival = c.send(CLIENT, 120, send_time)
    c.reply_rst(SERVER, arrival, answering_ack=c.client.rcv_nxt or 0)
    assert_cause(path, CauseId.PEER_LOST_STATE, Side.RESP)


@pytest.mark.parametrize("capture_at", [0.0, 1.0])
def test_middlebox_reset_after_idle(capture_at: float) -> None:
    path = Path(capture_at=capture_at, one_way_ms=20.0, hops=8)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    send_time = t + 400 * S
    c.send(CLIENT, 120, send_time)
    # A load balancer halfway forgets the session and resets both ends with its own TTL (255 - 4 hops).
    lb_time = send_time + path.delay_ns // 2
    seen_client = lb_time + path.delay_ns // 2 if capture_at == 0.0 else None
    seen_server = lb_time + path.delay_ns // 2 if capture_at == 1.0 else None
    if capture_at == 0.0:
        c.send(SERVER, 0, lb_time, flags=RST | ACK, ttl=255 - 4 + path.to_capture(False)[1], seen_at=seen_client)
    else:
        c.send(CLIENT, 0, lb_time, flags=RST | ACK, ttl=255 - 4 + path.to_capture(True)[1], seen_at=seen_server)
    assert_cause(path, CauseId.MIDDLEBOX_RESET, None)


def test_invalid_segment_old_duplicate_syn_ack() -> None:
    path = Path(capture_at=0.0)
    c = conn_on(path)
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    # The SYN-ACK acknowledges an older SYN (ISN 90 instead of ours): the client rejects it (RFC 9293 fig. 9).
    bad_ack = c.client.isn - 109
    arrival = c.send(SERVER, 0, arrival, flags=SYN | ACK, ack=bad_ack)
    c.reply_rst(CLIENT, arrival, answering_ack=bad_ack)
    assert_cause(path, CauseId.INVALID_SEGMENT, Side.ORIG)


@pytest.mark.parametrize("vantage", VANTAGES)
def test_injected_reset_is_ignored_and_the_connection_continues(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    c.send(SERVER, 0, t + 10 * MS, flags=RST | ACK, seq=c.server.snd_nxt + 5_000_000, ttl=200)
    t = c.exchange(t + 20 * MS)
    c.fin(CLIENT, t + 5 * MS)
    arrival = c.fin(SERVER, t + 5 * MS + path.delay_ns)
    c.ack(CLIENT, arrival)
    assert_cause(path, CauseId.INJECTED_RESET, None)


# ---- timeout family ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_keepalive_timeout(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    probe_time = t + 60 * S
    for i in range(4):
        c.send(CLIENT, 0, probe_time + i * 10 * S, flags=ACK, seq=c.client.snd_nxt - 1, deliver=False)
    c.rst(CLIENT, probe_time + 40 * S)
    assert_cause(path, CauseId.KEEPALIVE_TIMEOUT, Side.ORIG)
    finding = path.only_finding()
    assert finding is not None and "ETIMEDOUT" in finding.symptoms["node"]["orig"]


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_retransmission_timeout(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    start = t + 5 * MS
    seq = c.client.snd_nxt
    backoff = 200 * MS
    when = start
    for _ in range(6):
        c.send(CLIENT, 500, when, seq=seq, deliver=False)
        when += backoff
        backoff *= 2
    c.client.snd_nxt = seq + 500
    assert_cause(path, CauseId.RETRANSMISSION_TIMEOUT, Side.ORIG)


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_idle_state_dropped(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    t = c.exchange(t + 50 * MS)
    start = t + 900 * S
    seq = c.client.snd_nxt
    backoff = 300 * MS
    when = start
    for _ in range(5):
        c.send(CLIENT, 300, when, seq=seq, deliver=False)
        when += backoff
        backoff *= 2
    assert_cause(path, CauseId.IDLE_STATE_DROPPED, None)


# ---- CLOSE_WAIT, benign, negatives -------------------------------------------------------------------------


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_close_wait_leak(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    arrival = c.fin(CLIENT, t + 5 * MS)
    c.ack(SERVER, arrival + 40 * MS)  # delayed ACK alone: the server application never closes
    other = conn_on(path, 8080, 40999)
    other.exchange(other.handshake(arrival + 30 * S))  # the capture goes on
    results = {conn.orig_p: f for conn, f in path.diagnose_all()}
    finding = results[40100]
    assert finding is not None and finding.cause is CauseId.CLOSE_WAIT_LEAK
    assert finding.actor is Side.RESP


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_health_check_reset_is_benign(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.handshake(0)
    c.rst(CLIENT, t + 1 * MS)
    assert_cause(path, CauseId.BENIGN_RESET, Side.ORIG)
    finding = path.only_finding()
    assert finding is not None and finding.impact.orig_unacked_bytes == 0


@pytest.mark.parametrize("vantage", VANTAGES)
def test_negatives_give_no_finding(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    clean = conn_on(path, 80, 43000)
    t = clean.exchange(clean.handshake(0))
    arrival = clean.fin(CLIENT, t + 1 * MS)
    arrival2 = clean.fin(SERVER, arrival)
    clean.ack(CLIENT, arrival2)

    half = conn_on(path, 80, 43001)  # shutdown(SHUT_WR) after the request, the server answers, then closes
    t = half.handshake(1 * S)
    arrival = half.send(CLIENT, 100, t)
    half.fin(CLIENT, t + 10_000)
    t2 = half.send(SERVER, 3000, arrival + 1 * MS)
    arrival = half.fin(SERVER, arrival + 2 * MS)
    half.ack(CLIENT, max(arrival, t2))

    simultaneous = conn_on(path, 80, 43002)
    t = simultaneous.exchange(simultaneous.handshake(2 * S))
    a1 = simultaneous.fin(CLIENT, t + 1 * MS)
    a2 = simultaneous.fin(SERVER, t + 1 * MS)
    simultaneous.ack(CLIENT, a2)
    simultaneous.ack(SERVER, a1)

    still_open = conn_on(path, 80, 43003)
    still_open.exchange(still_open.handshake(3 * S))
    for conn, finding in path.diagnose_all():
        assert finding is None, (conn.orig_p, conn.outcome, finding)


def test_errno_rule_in_findings_follows_the_receiver_state() -> None:
    """RST accepted in CLOSE_WAIT: EPIPE/EOF for the writer; in ESTABLISHED: ECONNRESET."""
    from whyreset.diagnose.symptoms import errno_for_reset
    from whyreset.ids import TcpState

    assert errno_for_reset(TcpState.SYN_SENT) is Errno.ECONNREFUSED
    assert errno_for_reset(TcpState.CLOSE_WAIT) is Errno.EPIPE
    assert errno_for_reset(TcpState.ESTABLISHED) is Errno.ECONNRESET
    assert errno_for_reset(TcpState.FIN_WAIT_2) is Errno.ECONNRESET
    assert FIN and ACK  # flags used by the scripts above


# ---- more mechanisms seen in real captures ---------------------------------------------------------------


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_syn_ack_never_acknowledged_then_server_gives_up(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    for i, t in enumerate((0, 1, 3, 7)):
        c.send(SERVER, 0, arrival + t * S, flags=SYN | ACK, seq=c.server.isn if i else None)
    c.send(SERVER, 0, arrival + 15 * S, flags=RST | ACK, seq=c.server.isn + 1, ack=c.client.isn + 1)
    assert_cause(path, CauseId.HANDSHAKE_ABORTED, Side.ORIG)


@pytest.mark.parametrize("vantage", VANTAGES[:2])
def test_reset_after_both_fins_is_benign(vantage: dict[str, float]) -> None:
    path = Path(**vantage)
    c = conn_on(path)
    t = c.exchange(c.handshake(0))
    arrival = c.fin(SERVER, t + 1 * MS)
    c.ack(CLIENT, arrival)
    c.fin(CLIENT, arrival + 1 * MS)
    c.rst(CLIENT, arrival + 1 * MS + 1000)  # Windows-style reset right after its own FIN: nothing pending
    assert_cause(path, CauseId.BENIGN_RESET, Side.ORIG)


def test_data_after_close_even_when_the_receiver_ignored_the_reply_reset() -> None:
    """A browser abandons a TLS connection (FIN after its ClientHello); the server's reply crosses the FIN and
    the closed client answers with reply resets that the server, having moved past the FIN, does not accept.
    """
    path = Path(capture_at=0.0, one_way_ms=18.0, hops=3)
    c = conn_on(path, 443)
    t = c.handshake(0)
    c.send(CLIENT, 517, t)
    fin_arrival = c.fin(CLIENT, t + 40 * MS)
    reply_arrival = c.send(SERVER, 1048, t + 40 * MS + path.delay_ns)  # sent before the FIN arrived
    c.reply_rst(CLIENT, reply_arrival, answering_ack=c.client.isn + 518)
    c.ack(SERVER, fin_arrival + 1 * MS, ack=c.client.isn + 519)
    finding = path.only_finding()
    assert finding is not None and finding.cause is CauseId.DATA_AFTER_CLOSE, finding


def test_vantage_from_the_handshake_split_and_ttls() -> None:
    from whyreset.diagnose.facts import compute_facts
    from whyreset.diagnose.vantage import infer_vantage

    for capture_at, near in ((0.0, Side.ORIG), (1.0, Side.RESP), (0.5, None)):
        path = Path(capture_at=capture_at, one_way_ms=20.0, hops=8)
        c = conn_on(path)
        c.exchange(c.handshake(0))
        vantage = infer_vantage(compute_facts(path.connections()[0]))
        assert vantage.near is near, (capture_at, vantage)
        assert vantage.can_see_sender(Side.ORIG) is (near is Side.ORIG)
    loop = Path(capture_at=0.0, one_way_ms=0.01, hops=0)
    c = conn_on(loop)
    c.exchange(c.handshake(0))
    vantage = infer_vantage(compute_facts(loop.connections()[0]))
    assert vantage.local_both and vantage.can_see_sender(Side.RESP)


def test_context_profiles_hosts_and_clusters_resets() -> None:
    from whyreset.diagnose.context import build_context

    path = Path(capture_at=0.0, one_way_ms=5.0, hops=4)
    for i in range(3):
        c = conn_on(path, 9000, 45000 + i)
        t = c.handshake(i * MS)
        c.send(CLIENT, 10, t)
        c.rst(SERVER, 200 * MS)
    context = build_context(path.connections())
    assert context.ttl_profile("10.2.0.9").most_common(1)[0][0] == 64 - 4
    assert context.listened(("10.2.0.9", 9000))
    uid = path.connections()[0].uid
    burst = context.reset_burst(("10.2.0.9", 9000), at_t0_plus(200 * MS + 5 * MS), uid)
    assert len(burst) == 2


def at_t0_plus(ns: int) -> int:
    from diagnose.script import T0

    return T0 + ns


def test_icmp_error_attached_by_the_core_is_enough_without_a_context() -> None:
    from whyreset.diagnose import diagnose

    path = Path(capture_at=0.0)
    c = conn_on(path)
    c.send(CLIENT, 0, 0, flags=SYN)
    path.icmp.append(
        IcmpError(
            frame=2,
            ts_ns=path.rows[0]["ts_ns"] + 3 * MS,
            reporter="10.2.0.9",
            ttl=60,
            ip_version=4,
            icmp_type=3,
            icmp_code=3,
            quoted_src="10.1.0.5",
            quoted_dst="10.2.0.9",
            quoted_sport=40100,
            quoted_dport=8080,
            quoted_seq=None,
        )
    )
    (conn,) = path.connections()
    finding = diagnose(conn)  # no capture-wide context: the core's ICMP_ERROR event carries it
    assert finding is not None and finding.cause is CauseId.ICMP_UNREACHABLE
    assert "server host itself" in finding.summary


def test_vip_failover_changes_the_ttl_without_making_it_a_middlebox() -> None:
    """The VIP moved to a machine one more hop away: its RST carries a new TTL, which its other connections
    (opened after the failover) use too."""
    path = Path(capture_at=0.0, one_way_ms=2.0, hops=3)
    old = conn_on(path, 443, 47000)
    t = old.exchange(old.handshake(0))
    arrival = old.send(CLIENT, 80, t + 30 * S)
    old.reply_rst(SERVER, arrival, answering_ack=old.client.rcv_nxt or 0, ttl=64 - 3 + 3 - 2)
    fresh = conn_on(path, 443, 47001)
    path.server_ttl = 64 - 2  # the backup machine: two hops further
    fresh.server.ttl = path.server_ttl
    fresh.exchange(fresh.handshake(t + 31 * S))
    results = {c.orig_p: f for c, f in path.diagnose_all()}
    finding = results[47000]
    assert finding is not None and finding.cause is CauseId.PEER_LOST_STATE, finding
    assert results[47001] is None
