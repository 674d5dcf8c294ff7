"""Every situation the five seed write-ups (design/seeds) describe, scripted and diagnosed.

Where a seed quotes packets (000: telnet to a closed port, ssh interrupted with ^C, a clean close to
1.1.1.1:3001), the script uses its addresses, ports, ISNs, TTLs and sizes.
"""

from __future__ import annotations

from diagnose.script import CLIENT, MS, SERVER, Path, S
from whyreset.diagnose.finding import Finding
from whyreset.ids import CauseId, Side
from whyreset.model import ACK, RST, SYN


def primary(path: Path) -> Finding:
    finding = path.only_finding()
    assert finding is not None
    return finding


def causes_of(finding: Finding) -> list[CauseId | None]:
    return [finding.cause, *(a.cause for a in finding.alternatives)]


# ---- seed 000: Korean notes on "Connection reset" (TCP/IP Illustrated examples) ----------------------------


def test_seed000_telnet_to_a_port_nobody_listens_on() -> None:
    path = Path(one_way_ms=0.02, hops=0, capture_at=0.0)
    c = path.conn(client=("127.0.0.1", 32803), server=("127.0.0.1", 9999), client_isn=3357881819)
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    c.send(SERVER, 0, arrival, flags=RST | ACK, seq=0)
    finding = primary(path)
    assert finding.cause is CauseId.REFUSED
    assert "Connection refused" in finding.symptoms["python"]["orig"]


def test_seed000_ssh_interrupted_during_bulk_output() -> None:
    """``ssh linux cat /usr/share/dict/words`` then ^C: the client process dies with output still unread."""
    path = Path(one_way_ms=0.4, hops=0, capture_at=1.0, client_ttl=128)
    c = path.conn(
        client=("192.168.10.140", 2788),
        server=("192.168.10.14", 22),
        client_isn=1520364313,
        server_isn=181637276,
    )
    t = c.handshake(0)
    t = c.exchange(t, request=1342, response=120000)
    for i in range(8):  # the output keeps streaming; the last segments are in flight when ^C kills ssh
        c.send(SERVER, 1616, t + i * 50_000, deliver=i < 6)
    c.rst(CLIENT, t + 7 * S // 1000)
    finding = primary(path)
    assert finding.cause is CauseId.CLOSE_WITH_UNREAD_DATA
    assert finding.actor is Side.ORIG
    assert CauseId.ABORTIVE_CLOSE in causes_of(finding)
    assert finding.impact.resp_unacked_bytes > 0


def test_seed000_half_open_after_the_server_rebooted() -> None:
    """telnet to sunrpc, cable pulled, server rebooted, then 'bar' typed: the new kernel resets it."""
    path = Path(one_way_ms=1.0, hops=1, capture_at=0.0)
    c = path.conn(client=("10.0.0.1", 1029), server=("10.0.0.7", 111))
    t = c.exchange(c.handshake(0), request=5, response=5)
    arrival = c.send(CLIENT, 5, t + 120 * S)
    c.reply_rst(SERVER, arrival, answering_ack=c.client.rcv_nxt or 0)
    finding = primary(path)
    assert finding.cause is CauseId.PEER_LOST_STATE
    assert finding.actor is Side.RESP


def test_seed000_old_duplicate_syn() -> None:
    """RFC 793 figure 9: the SYN-ACK acknowledges an old SYN (seq 90); the client resets it."""
    path = Path(one_way_ms=5.0, capture_at=0.0)
    c = path.conn(client_isn=200, server_isn=500)
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    arrival = c.send(SERVER, 0, arrival, flags=SYN | ACK, ack=91)
    c.reply_rst(CLIENT, arrival, answering_ack=91)
    finding = primary(path)
    assert finding.cause is CauseId.INVALID_SEGMENT


def test_seed000_clean_close_to_port_3001_is_not_a_finding() -> None:
    path = Path(one_way_ms=1.5, hops=10, capture_at=0.0)
    c = path.conn(client=("10.10.0.2", 52986), server=("1.1.1.1", 3001), client_isn=1479370850, server_isn=3196372313)
    t = c.exchange(c.handshake(0), request=5907, response=9693)
    a1 = c.fin(CLIENT, t + 80_000)
    a2 = c.fin(SERVER, a1)
    c.ack(CLIENT, a2)
    assert path.only_finding() is None


# ---- seed 001: Chinese notes on "Connection reset" causes --------------------------------------------------


def test_seed001_server_reads_only_the_first_request_then_closes() -> None:
    path = Path(one_way_ms=0.5, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    arrival = c.send(CLIENT, 130, t + 1 * MS)  # the second request is never read
    c.ack(SERVER, arrival)
    c.rst(SERVER, arrival + 2 * MS)
    finding = primary(path)
    assert finding.cause is CauseId.CLOSE_WITH_UNREAD_DATA
    assert finding.symptoms["java"]["orig"].startswith("java.net.SocketException: Connection reset")


def test_seed001_server_closed_while_the_client_kept_writing() -> None:
    path = Path(one_way_ms=3.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    arrival = c.fin(SERVER, t + 10 * MS)
    c.ack(CLIENT, arrival)
    later = c.send(CLIENT, 400, arrival + 3 * S)
    c.reply_rst(SERVER, later, answering_ack=c.server.snd_nxt)
    finding = primary(path)
    assert finding.cause is CauseId.DATA_AFTER_CLOSE
    assert "EPIPE" in finding.symptoms["go"]["orig"] or "EOF" in finding.symptoms["go"]["orig"]


def test_seed001_set_linger_true_zero_discards_the_send_buffer() -> None:
    path = Path(one_way_ms=2.0, capture_at=0.0)
    c = path.conn()
    t = c.handshake(0)
    arrival = c.send(CLIENT, 200, t)
    for i in range(4):
        c.send(SERVER, 1448, arrival + 1 * MS + i * 1000, deliver=i < 1)
    c.rst(SERVER, arrival + 1 * MS + 5000)
    assert primary(path).cause is CauseId.ABORTIVE_CLOSE


def test_seed001_syn_backlog_full_drops_the_syn() -> None:
    path = Path(one_way_ms=10.0, capture_at=0.0)
    busy = path.conn(client=("10.1.0.5", 50000))
    busy.exchange(busy.handshake(0))
    c = path.conn(client=("10.1.0.5", 50001))
    for gap in (0, 1, 3, 7):
        c.send(CLIENT, 0, 100 * MS + gap * S, flags=SYN, seq=c.client.isn)
    findings = {conn.orig_p: f for conn, f in path.diagnose_all()}
    finding = findings[50001]
    assert finding is not None and finding.cause is CauseId.SYN_UNANSWERED
    assert CauseId.BACKLOG_OVERFLOW in causes_of(finding)


def test_seed001_mobile_network_resets_after_five_idle_minutes() -> None:
    path = Path(one_way_ms=60.0, hops=12, capture_at=1.0)
    c = path.conn(client=("100.64.3.3", 40404), server=("203.0.113.10", 5222))
    t = c.exchange(c.handshake(0))
    push = t + 330 * S
    c.send(SERVER, 180, push)
    # The carrier's NAT forgot the mapping and answers with its own RST (TTL 255 - 3 hops from the server).
    c.send(
        CLIENT,
        0,
        push + 20 * MS,
        flags=RST,
        seq=c.client.snd_nxt,
        ttl=252 + round(12 * 1.0),
        seen_at=push + 40 * MS,
    )
    finding = primary(path)
    assert finding.cause is CauseId.MIDDLEBOX_RESET
    assert finding.actor is None


def test_seed001_load_balancer_purges_an_idle_connection_and_tells_on_the_next_packet() -> None:
    path = Path(one_way_ms=8.0, hops=5, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    send = t + 600 * S
    c.send(CLIENT, 300, send)
    c.send(SERVER, 0, send, flags=RST, seq=c.client.rcv_nxt or 0, ttl=64 - 2 + 5, seen_at=send + 2 * MS)
    finding = primary(path)
    assert finding.cause is CauseId.MIDDLEBOX_RESET


def test_seed001_connect_timeout_before_the_handshake_completed() -> None:
    path = Path(one_way_ms=700.0, capture_at=0.0)
    c = path.conn()
    c.send(CLIENT, 0, 0, flags=SYN)
    c.send(CLIENT, 0, 1 * S, flags=SYN, seq=c.client.isn)
    arrival = c.send(SERVER, 0, 700 * MS, flags=SYN | ACK)
    c.reply_rst(CLIENT, arrival, answering_ack=c.client.isn + 1)
    assert primary(path).cause is CauseId.HANDSHAKE_ABORTED


def test_seed001_segment_with_a_wrong_ack_is_answered_by_reset() -> None:
    path = Path(one_way_ms=2.0, capture_at=1.0)
    c = path.conn()
    t = c.handshake(0)
    arrival = c.send(CLIENT, 100, t, ack=c.server.isn + 1 + 50_000)  # acknowledges data never sent
    c.reply_rst(SERVER, arrival, answering_ack=c.server.isn + 1 + 50_000)
    assert primary(path).cause is CauseId.INVALID_SEGMENT


def test_seed001_keepalive_race_behind_nginx() -> None:
    path = Path(one_way_ms=0.3, capture_at=0.0)
    c = path.conn(client=("10.0.0.10", 51515), server=("10.0.0.20", 8080))
    t = c.exchange(c.handshake(0))
    fin_time = t + 60 * S  # the upstream's keep-alive timeout, shorter than nginx's
    c.fin(SERVER, fin_time)
    arrival = c.send(CLIENT, 300, fin_time + 100_000)
    c.reply_rst(SERVER, arrival, answering_ack=c.server.snd_nxt - 1)
    finding = primary(path)
    assert finding.cause is CauseId.KEEPALIVE_RACE
    assert "upstream prematurely closed" in finding.symptoms["nginx"]["orig"]


def test_seed001_keepalive_probes_unanswered() -> None:
    path = Path(one_way_ms=5.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    for i in range(9):
        c.send(CLIENT, 0, t + 7200 * S + i * 75 * S, flags=ACK, seq=c.client.snd_nxt - 1, deliver=False)
    c.rst(CLIENT, t + 7200 * S + 9 * 75 * S)
    assert primary(path).cause is CauseId.KEEPALIVE_TIMEOUT


def test_seed001_idle_connection_silently_dropped() -> None:
    path = Path(one_way_ms=30.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    seq = c.client.snd_nxt
    when, backoff = t + 3600 * S, 300 * MS
    for _ in range(6):
        c.send(CLIENT, 200, when, seq=seq, deliver=False)
        when, backoff = when + backoff, backoff * 2
    assert primary(path).cause is CauseId.IDLE_STATE_DROPPED


# ---- seed 002: "Connection reset by peer" ------------------------------------------------------------------


def test_seed002_connection_refused() -> None:
    path = Path(one_way_ms=4.0, capture_at=0.0)
    c = path.conn(server=("10.2.0.9", 3306))
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    c.send(SERVER, 0, arrival, flags=RST | ACK, seq=0)
    assert primary(path).cause is CauseId.REFUSED


def test_seed002_keepalived_moved_the_vip() -> None:
    """The VIP moved to the backup: its kernel has no socket for the connection and resets the next
    segment."""
    path = Path(one_way_ms=0.5, hops=1, capture_at=0.0)
    c = path.conn(server=("10.2.0.100", 6379))
    t = c.exchange(c.handshake(0))
    arrival = c.send(CLIENT, 60, t + 20 * S)
    c.reply_rst(SERVER, arrival, answering_ack=c.client.rcv_nxt or 0)
    assert primary(path).cause is CauseId.PEER_LOST_STATE


def test_seed002_firewall_session_timeout() -> None:
    path = Path(one_way_ms=5.0, hops=4, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    send = t + 3700 * S
    c.send(CLIENT, 80, send)
    c.send(SERVER, 0, send, flags=RST | ACK, seq=c.client.rcv_nxt or 0, ttl=255 - 1 + 4, seen_at=send + 1 * MS)
    assert primary(path).cause is CauseId.MIDDLEBOX_RESET


def test_seed002_windows_discards_the_spare_smb_connection() -> None:
    """Windows connects to 139 and 445 at once and resets the one it does not need: harmless."""
    path = Path(one_way_ms=0.3, capture_at=1.0, client_ttl=128)
    spare = path.conn(client=("10.0.0.50", 49700), server=("10.0.0.5", 139))
    t = spare.handshake(0)
    spare.rst(CLIENT, t + 1 * MS)
    assert primary(path).cause is CauseId.BENIGN_RESET


def test_seed002_server_over_capacity_resets_new_connections() -> None:
    path = Path(one_way_ms=1.0, capture_at=1.0)
    c = path.conn()
    arrival = c.handshake(0)
    c.reply_rst(SERVER, arrival + path.delay_ns, answering_ack=c.server.isn + 1)
    assert primary(path).cause is CauseId.BACKLOG_OVERFLOW


def test_seed002_spoofed_reset_outside_the_window() -> None:
    path = Path(one_way_ms=10.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    c.send(SERVER, 0, t + 5 * MS, flags=RST | ACK, seq=c.server.snd_nxt + 3_000_000, ttl=99)
    t = c.exchange(t + 10 * MS)
    a1 = c.fin(CLIENT, t + 1 * MS)
    c.ack(CLIENT, c.fin(SERVER, a1))
    assert primary(path).cause is CauseId.INJECTED_RESET


# ---- seed 003: Korean notes on CLOSE_WAIT, TIME_WAIT and SO_LINGER -----------------------------------------


def test_seed003_close_wait_without_close() -> None:
    path = Path(one_way_ms=1.0, capture_at=1.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    arrival = c.fin(CLIENT, t + 1 * MS)
    c.ack(SERVER, arrival + 40 * MS)
    other = path.conn(client=("10.1.0.5", 40500))
    other.exchange(other.handshake(arrival + 120 * S))
    findings = {conn.orig_p: f for conn, f in path.diagnose_all()}
    finding = findings[40100]
    assert finding is not None and finding.cause is CauseId.CLOSE_WAIT_LEAK and finding.actor is Side.RESP
    assert findings[40500] is None


def test_seed003_linger_zero_sends_reset_instead_of_fin() -> None:
    path = Path(one_way_ms=1.0, capture_at=0.0)
    c = path.conn()
    t = c.handshake(0)
    arrival = c.send(CLIENT, 50, t)
    c.send(SERVER, 8000, arrival + 100_000, deliver=False)
    c.rst(SERVER, arrival + 150_000)
    finding = primary(path)
    assert finding.cause is CauseId.ABORTIVE_CLOSE
    assert "ECONNRESET" in finding.symptoms["python"]["orig"]


# ---- seed 004: Chinese notes on "Connection reset" in a Java client ----------------------------------------


def test_seed004_server_closed_while_the_client_reads() -> None:
    path = Path(one_way_ms=15.0, capture_at=0.0)
    c = path.conn()
    t = c.handshake(0)
    arrival = c.send(CLIENT, 64, t)
    c.ack(SERVER, arrival)
    c.rst(SERVER, arrival + 5 * MS)
    finding = primary(path)
    assert finding.cause is CauseId.CLOSE_WITH_UNREAD_DATA
    assert finding.symptoms["java"]["orig"].startswith("java.net.SocketException: Connection reset")


def test_seed004_client_in_close_wait_keeps_sending() -> None:
    path = Path(one_way_ms=15.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    arrival = c.fin(SERVER, t + 1 * MS)
    c.ack(CLIENT, arrival)
    sent = c.send(CLIENT, 32, arrival + 500 * MS)
    c.reply_rst(SERVER, sent, answering_ack=c.server.snd_nxt)
    finding = primary(path)
    assert finding.cause is CauseId.DATA_AFTER_CLOSE
    assert finding.actor is Side.RESP


def test_seed004_client_never_closes_after_eof() -> None:
    path = Path(one_way_ms=15.0, capture_at=0.0)
    c = path.conn()
    t = c.exchange(c.handshake(0))
    arrival = c.fin(SERVER, t + 1 * MS)
    c.ack(CLIENT, arrival + 40 * MS)
    other = path.conn(client=("10.1.0.5", 40777))
    other.exchange(other.handshake(arrival + 60 * S))
    findings = {conn.orig_p: f for conn, f in path.diagnose_all()}
    finding = findings[40100]
    assert finding is not None and finding.cause is CauseId.CLOSE_WAIT_LEAK and finding.actor is Side.ORIG
