"""The diagnosis's shortcuts give the same answers as the long way.

* triage (diagnose.triage) on a generated capture of every template bench/generate.py knows (the conftest
  fixture checks every other diagnosis of these tests the same way);
* the capture-wide context (DiagnosisContext.observe) and the facts read only a few columns of each
  connection's batch: the same context as a packet-by-packet fold, the same facts whether the capture was
  tracked whole or in small chunks;
* runtime messages rendered from per-views templates equal the ones rendered message by message, for every
  errno/operation pair on both sides, IPv4 and IPv6 endpoints.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from whyreset import ingest
from whyreset.core.connection import Connection
from whyreset.core.tracker import ConnectionTracker, build_connections
from whyreset.diagnose import build_context, diagnose
from whyreset.diagnose.context import CLUSTER_WINDOW_NS, DiagnosisContext, ServerReset
from whyreset.diagnose.facts import compute_facts, row_range
from whyreset.diagnose.symptoms import AppView, Errno, Operation, _render_each, render_views
from whyreset.diagnose.vantage import infer_vantage
from whyreset.diagnose.verdict import rank
from whyreset.ids import Side
from whyreset.model import ACK, FIN, RST, SYN, IcmpError

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "bench" / "generate.py"


@pytest.fixture(scope="module")
def generated_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not GENERATOR.exists():
        pytest.skip("bench/generate.py is not in this checkout")
    target = tmp_path_factory.mktemp("bench") / "mix.pcap"
    env_path = str(REPO / "src")
    subprocess.run(
        [sys.executable, str(GENERATOR), str(target), "--packets", "6000", "--seed", "7"],
        check=True,
        capture_output=True,
        timeout=120,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    return target


def test_triage_keeps_every_candidate_of_a_generated_mix(generated_capture: Path) -> None:
    capture = ingest.read_capture(str(generated_capture))
    connections = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    context = build_context(connections, capture.icmp_errors)
    checked = 0
    for conn in connections:
        facts = compute_facts(conn)
        vantage = infer_vantage(facts)
        quick = rank(facts, context, vantage, triage=True)
        full = rank(facts, context, vantage, triage=False)
        assert [(c.cause, c.score) for c in quick] == [(c.cause, c.score) for c in full], conn.uid
        checked += bool(full)
    assert checked > 100, "the generated mix should hold many abnormal connections"


def test_diagnosis_of_a_generated_mix_names_causes(generated_capture: Path) -> None:
    capture = ingest.read_capture(str(generated_capture))
    connections = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    context = build_context(connections, capture.icmp_errors)
    causes = {f.cause for c in connections if (f := diagnose(c, context)) is not None}
    assert len(causes) >= 5, causes


VIEWS = [
    AppView(errno, operation, "why {braces} stay literal")
    for errno in (*Errno, None)
    for operation in (*Operation, None)
]
ENDPOINTS = [
    {"orig": "10.1.2.3:5555", "resp": "10.9.9.9:443"},
    {"orig": "[2001:db8::1]:5555", "resp": "[2001:db8::2]:80"},
]


@pytest.mark.parametrize("endpoints", ENDPOINTS, ids=["ipv4", "ipv6"])
def test_templated_messages_equal_messages_rendered_one_by_one(endpoints: dict[str, str]) -> None:
    for orig_view, resp_view in itertools.product(VIEWS, repeat=2):
        for client_side in ("orig", "resp"):
            views = {"orig": orig_view, "resp": resp_view}
            assert render_views(views, client_side, endpoints) == _render_each(views, client_side, endpoints)


def test_messages_carry_the_connections_own_addresses() -> None:
    view = AppView(Errno.ECONNRESET, Operation.READ, "reset")
    first = render_views({"orig": view, "resp": view}, "orig", ENDPOINTS[0])
    second = render_views({"orig": view, "resp": view}, "orig", ENDPOINTS[1])
    assert "10.1.2.3:5555->10.9.9.9:443" in first["go"]["orig"]
    assert "[2001:db8::1]:5555->[2001:db8::2]:80" in second["go"]["orig"]


def _tracked_in_small_chunks(capture: Path) -> tuple[list[Connection], list[IcmpError]]:
    """The capture through the streaming tracker in small chunks: connections' rows are views of many batch
    tables, carried ones included (the layout the context's and the facts' column reads must handle)."""
    tracker = ConnectionTracker()
    connections: list[Connection] = []
    icmp: list[IcmpError] = []
    for chunk in ingest.iter_capture(str(capture), chunk_records=500):
        icmp.extend(chunk.icmp_errors)
        connections.extend(tracker.feed(chunk))
    connections.extend(tracker.finish())
    return connections, icmp


def _reference_context(connections: list[Connection]) -> DiagnosisContext:
    """The context folded packet by packet from each connection's sliced columns (the plain way)."""
    context = DiagnosisContext()
    for conn in connections:
        rows = zip(
            conn.from_orig.tolist(),
            conn.packets.columns["flags"].tolist(),
            conn.packets.columns["ttl"].tolist(),
            conn.packets.columns["ts_ns"].tolist(),
            strict=True,
        )
        orig_ttls, resp_ttls, synacks = [], [], []
        first_resp_rst = None
        resp_syn = resp_fin = False
        for from_orig, flags, ttl, ts in rows:
            if from_orig:
                if not flags & RST:
                    orig_ttls.append(ttl)
                continue
            resp_syn = resp_syn or bool(flags & SYN)
            resp_fin = resp_fin or bool(flags & FIN)
            if flags & (SYN | ACK) == SYN | ACK:
                synacks.append(ts)
            if flags & RST:
                first_resp_rst = ts if first_resp_rst is None else first_resp_rst
                continue
            resp_ttls.append(ttl)
        for host, ttls in ((conn.orig_h, orig_ttls), (conn.resp_h, resp_ttls)):
            context.host_ttls.setdefault(host, Counter()).update(ttls)
        server = (conn.resp_h, conn.resp_p)
        if synacks:
            context.listening.setdefault(server, []).extend(synacks)
        if first_resp_rst is not None and not conn.established and not resp_syn:
            context.refusals.setdefault(server, []).append(first_resp_rst)
        silent = conn.established and not conn.resp.data_bytes and conn.resets and not resp_fin
        if silent and conn.resets[0].sender is Side.RESP:
            context.silent_resets.setdefault(server, []).append(ServerReset(conn.resets[0].ts_ns, conn.uid))
    for times in (*context.listening.values(), *context.refusals.values()):
        times.sort()
    for resets in context.silent_resets.values():
        resets.sort(key=lambda reset: reset.ts_ns)  # stable: ties stay in connection order, as insort keeps them
    return context


def test_context_equals_the_packet_by_packet_fold(generated_capture: Path) -> None:
    connections, _ = _tracked_in_small_chunks(generated_capture)
    context = DiagnosisContext()
    for conn in connections:
        context.observe(conn)
    reference = _reference_context(connections)
    # Counter order matters too: the most common TTL of a profile is the first counted on ties.
    assert {h: list(c.items()) for h, c in context.host_ttls.items()} == {
        h: list(c.items()) for h, c in reference.host_ttls.items()
    }
    assert context.listening == reference.listening
    assert context.refusals == reference.refusals
    assert context.silent_resets == reference.silent_resets
    assert sum(map(len, context.silent_resets.values())) > 0, "the mix should hold listener-closed bursts"
    for server, resets in context.silent_resets.items():
        for reset in resets:
            burst = context.reset_burst(server, reset.ts_ns, reset.uid)
            near = [r for r in resets if abs(r.ts_ns - reset.ts_ns) <= CLUSTER_WINDOW_NS and r.uid != reset.uid]
            assert burst == near


def test_row_range_reads_the_connections_own_rows(generated_capture: Path) -> None:
    connections, _ = _tracked_in_small_chunks(generated_capture)
    for conn in connections:
        columns, start, stop = row_range(conn.packets)
        for name in ("frame", "ts_ns", "flags", "seq", "ack", "payload_len", "ttl", "ip_id", "window"):
            assert columns[name][start:stop].tolist() == conn.packets.columns[name].tolist()
        assert row_range(conn.packets)[1:] == (0, len(conn.packets))  # now sliced: the connection's own table


def test_facts_of_connections_tracked_in_small_chunks_equal_the_whole_captures(generated_capture: Path) -> None:
    capture = ingest.read_capture(str(generated_capture))
    whole = build_connections(capture.packets, capture.icmp_errors, capture.rst_payloads)
    chunked, _ = _tracked_in_small_chunks(generated_capture)
    by_uid = {conn.uid: conn for conn in chunked}
    for conn in whole:
        assert repr(compute_facts(conn)) == repr(compute_facts(by_uid[conn.uid])), conn.uid
