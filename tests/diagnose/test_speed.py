"""The diagnosis's shortcuts give the same answers as the long way.

* triage (diagnose.triage) on a generated capture of every template bench/generate.py knows (the conftest
  fixture checks every other diagnosis of these tests the same way);
* runtime messages rendered from per-views templates equal the ones rendered message by message, for every
  errno/operation pair on both sides, IPv4 and IPv6 endpoints.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from whyreset import ingest
from whyreset.core.tracker import build_connections
from whyreset.diagnose import build_context, diagnose
from whyreset.diagnose.facts import compute_facts
from whyreset.diagnose.symptoms import AppView, Errno, Operation, _render_each, render_views
from whyreset.diagnose.vantage import infer_vantage
from whyreset.diagnose.verdict import rank

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
