"""The same mechanisms written as real pcap files (whyreset.ingest.craft) and read back by the project's
readers: the diagnosis must not depend on having been handed a packet table directly."""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest

from diagnose.corpus import diagnose_capture
from diagnose.script import CLIENT, MS, SERVER, Path, S
from whyreset.ids import CauseId
from whyreset.model import ACK, RST, SYN


def refused(path: Path) -> None:
    c = path.conn()
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    c.send(SERVER, 0, arrival, flags=RST | ACK, seq=0)


def keepalive_race(path: Path) -> None:
    c = path.conn()
    t = c.exchange(c.handshake(0))
    fin_time = t + 5 * S
    c.fin(SERVER, fin_time)
    arrival = c.send(CLIENT, 90, fin_time + 1000)
    c.reply_rst(SERVER, arrival, answering_ack=c.server.snd_nxt - 1)


def peer_lost_state(path: Path) -> None:
    c = path.conn()
    t = c.exchange(c.handshake(0))
    arrival = c.send(CLIENT, 120, t + 30 * S)
    c.reply_rst(SERVER, arrival, answering_ack=c.client.rcv_nxt or 0)


def close_with_unread_data(path: Path) -> None:
    c = path.conn()
    t = c.handshake(0)
    arrival = c.send(CLIENT, 300, t)
    c.ack(SERVER, arrival)
    c.rst(SERVER, arrival + 2 * MS)


SCENARIOS = {
    CauseId.REFUSED: refused,
    CauseId.KEEPALIVE_RACE: keepalive_race,
    CauseId.PEER_LOST_STATE: peer_lost_state,
    CauseId.CLOSE_WITH_UNREAD_DATA: close_with_unread_data,
}


@pytest.mark.parametrize("cause", list(SCENARIOS), ids=[c.value for c in SCENARIOS])
@pytest.mark.parametrize("capture_at", [0.0, 1.0])
def test_scripted_pcap_round_trip(tmp_path: FsPath, cause: CauseId, capture_at: float) -> None:
    path = Path(capture_at=capture_at, one_way_ms=7.0, hops=5)
    SCENARIOS[cause](path)
    pcap = tmp_path / f"{cause.value}.pcap"
    assert path.write_pcap(pcap) == len(path.rows)
    connections, findings, _ = diagnose_capture(pcap)
    assert len(connections) == 1
    finding = findings.get(connections[0].uid)
    assert finding is not None and finding.cause is cause, finding
