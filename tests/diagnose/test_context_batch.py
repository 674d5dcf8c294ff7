"""`DiagnosisContext.observe_many` must build exactly the context `observe` builds connection by connection.

Exactly means more than equal counts: a TTL profile's order decides `Counter.most_common`'s ties (the forgery
rule's "usually N"), and a burst of silent resets at one instant keeps the order the connections were
observed in. So the contexts are compared item by item, in order, over real captures (the lab corpus, both
benchmark mixes), over lists cut in slices (the stream folds batch after batch), over connections whose rows
were moved to a table of their own (`compact_packets`), and over a scripted capture with every case the
per-connection code keeps: refusals, silent resets at one instant, ICMP errors, a host talking to itself.
"""

from __future__ import annotations

from pathlib import Path

import bench.generate
import pytest

from diagnose.corpus import CORPUS, read_capture
from diagnose.script import CLIENT, MS, SERVER
from diagnose.script import Path as ScriptPath
from whyreset.analysis import compact_packets, iter_connections
from whyreset.core.connection import Connection
from whyreset.core.tracker import build_connections
from whyreset.diagnose import context as context_module
from whyreset.diagnose.context import DiagnosisContext, build_context
from whyreset.model import ACK, RST, SYN, IcmpError

LAB_CAPTURES = sorted(CORPUS.glob("*.pcap"))


@pytest.fixture(autouse=True, params=["numpy", "default"])
def few_connections(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every list through the numpy code, then with short lists left to `observe` as by default."""
    if request.param == "numpy":
        monkeypatch.setattr(context_module, "FEW_CONNECTIONS", 1)


def snapshot(context: DiagnosisContext) -> dict[str, object]:
    """Every field of the context, with the order of every dict and profile."""
    return {
        "host_ttls": [(host, list(counts.items())) for host, counts in context.host_ttls.items()],
        "listening": list(context.listening.items()),
        "refusals": list(context.refusals.items()),
        "silent_resets": list(context.silent_resets.items()),
        "silent_reset_times": list(context._silent_reset_times.items()),
        "icmp_by_flow": list(context.icmp_by_flow.items()),
        "span": (context.first_ts_ns, context.last_ts_ns),
        "connections": context.connections,
    }


def one_by_one(connections: list[Connection]) -> dict[str, object]:
    context = DiagnosisContext()
    for conn in connections:
        context.observe(conn)
    return snapshot(context)


def in_slices(connections: list[Connection], size: int) -> dict[str, object]:
    context = DiagnosisContext()
    for start in range(0, len(connections), size):
        context.observe_many(connections[start : start + size])
    return snapshot(context)


def assert_same_context(connections: list[Connection]) -> None:
    expected = one_by_one(connections)
    assert snapshot(build_context(connections)) == expected
    for size in (1, 2, 7, max(1, len(connections) // 3)):
        assert in_slices(connections, size) == expected, f"slices of {size}"
    # Half of them compacted into a table of their own: two tables, their connections interleaved in the list.
    compact_packets(connections[::2])
    assert in_slices(connections, len(connections) or 1) == expected, "compacted"


@pytest.mark.skipif(not LAB_CAPTURES, reason="the lab corpus (tests/lab/corpus) is not recorded here")
def test_lab_corpus() -> None:
    connections: list[Connection] = []
    for path in LAB_CAPTURES:
        capture = read_capture(path)
        found = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
        assert_same_context(list(found))
        connections.extend(found)
    assert any(c.resets for c in connections) and any(c.icmp_errors for c in connections)
    assert_same_context(connections)  # several captures' tables in one list


@pytest.mark.parametrize("mix", ["stress", "web"])
def test_bench_mix(tmp_path: Path, mix: str) -> None:
    path = tmp_path / f"{mix}.pcap"
    bench.generate.write_capture(path, 20_000, seed=7, mix=mix)
    connections = list(iter_connections(str(path)))  # published chunk by chunk: several tables
    assert len({id(c.packets.row_range()[0]) for c in connections}) > 1
    assert_same_context(connections)


def scripted_connections() -> list[Connection]:
    """A server whose listener closes (three silent resets at one instant), refusals, a reset after a SYN-ACK
    (no refusal), an ICMP error, a loopback connection whose two sides arrive with different TTLs, and clean
    traffic around them."""
    path = ScriptPath(one_way_ms=5, capture_at=0.5)
    queued = [path.conn(client=("10.1.0.5", 42000 + i), server=("10.2.0.9", 9000)) for i in range(3)]
    for i, c in enumerate(queued):
        t = c.handshake(i * 5 * MS)
        c.send(CLIENT, 150, t)
    for c in reversed(queued):
        c.rst(SERVER, 400 * MS)
    for i in range(2):
        refused = path.conn(client=("10.1.0.6", 43000 + i), server=("10.2.0.9", 9000))
        arrival = refused.send(CLIENT, 0, (600 + i) * MS, flags=SYN)
        refused.send(SERVER, 0, arrival, flags=RST, seq=0)
    answered = path.conn(client=("10.1.0.6", 43100), server=("10.2.0.9", 9000))  # SYN-ACK, then RST: no refusal
    arrival = answered.send(CLIENT, 0, 650 * MS, flags=SYN)
    answered.send(SERVER, 0, arrival, flags=SYN | ACK)
    answered.rst(SERVER, arrival + 1 * MS)
    for i in range(3):
        clean = path.conn(client=("10.1.0.7", 44000 + i), server=("10.2.0.9", 80))
        t = clean.exchange(clean.handshake(i * 50 * MS))
        clean.fin(CLIENT, t)
        clean.fin(SERVER, t + 1 * MS)
    looped = ScriptPath(one_way_ms=0, client_ttl=64, server_ttl=63, hops=0)
    loop = looped.conn(client=("127.0.0.1", 45000), server=("127.0.0.1", 8080))
    t = loop.exchange(loop.handshake(0))
    loop.send(CLIENT, 10, t, ttl=62)  # after the server's TTL 63: `observe` still counts the client's first
    unanswered = path.conn(client=("10.1.0.8", 46000), server=("10.2.0.10", 443))
    unanswered.send(CLIENT, 0, 700 * MS, flags=SYN)
    path.icmp.append(
        IcmpError(
            frame=1,
            ts_ns=path.rows[-1]["ts_ns"] + 3 * MS,
            reporter="10.9.9.1",
            ttl=62,
            ip_version=4,
            icmp_type=3,
            icmp_code=13,
            quoted_src="10.1.0.8",
            quoted_dst="10.2.0.10",
            quoted_sport=46000,
            quoted_dport=443,
            quoted_seq=1_000_000,
        )
    )
    return list(path.connections()) + list(looped.connections())


def test_scripted_cases() -> None:
    connections = scripted_connections()
    context = build_context(connections)
    queued = [c.uid for c in connections if c.resp_p == 9000 and c.established]
    assert [r.uid for r in context.silent_resets[("10.2.0.9", 9000)]] == queued
    assert len({r.ts_ns for r in context.silent_resets[("10.2.0.9", 9000)]}) == 1 and len(queued) == 3
    assert len(context.refusals[("10.2.0.9", 9000)]) == 2 and len(context.listening[("10.2.0.9", 9000)]) == 4
    assert context.icmp_by_flow and list(context.host_ttls["127.0.0.1"]) == [64, 62, 63]
    assert_same_context(connections)
    assert_same_context(connections[::-1])  # the same instant's resets met in the other order
