"""Real captures from other projects (design/corpus): no crash, and every RST explained or marked
undetermined."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnose.corpus import diagnose_capture

SHARED = Path("/work/shared/corpus")
FILES = sorted(SHARED.glob("*.pcap*")) if SHARED.is_dir() else []


@pytest.mark.skipif(not FILES, reason="the shared corpus (/work/shared/corpus) is not present")
@pytest.mark.parametrize("capture", FILES, ids=[p.name for p in FILES])
def test_every_reset_gets_a_cause_or_a_reason(capture: Path) -> None:
    connections, findings, _ = diagnose_capture(capture)
    for conn in connections:
        finding = findings.get(conn.uid)
        if conn.resets:
            assert finding is not None, f"{conn.uid}: RST without a finding"
        if finding is None:
            continue
        if finding.cause is None:
            assert finding.undetermined_reason and finding.confidence == 0.0
        else:
            assert 0.35 <= finding.confidence <= 1.0 and finding.evidence and finding.fix
            assert all(a.confidence < finding.confidence for a in finding.alternatives)
        assert finding.uid == conn.uid and finding.vantage
