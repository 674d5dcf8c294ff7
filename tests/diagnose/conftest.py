"""Every diagnosis made by these tests also checks that triage (diagnose.triage) dropped no candidate.

The verdict runs only the rules whose cause can apply to a connection's shape. That is an optimisation, so it
must never change a diagnosis: here each ranking is recomputed with every rule and compared, on every scripted
path, seed, lab capture and random table the tests diagnose.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from whyreset.diagnose import verdict
from whyreset.diagnose.context import DiagnosisContext
from whyreset.diagnose.facts import Facts
from whyreset.diagnose.rules.common import Candidate
from whyreset.diagnose.vantage import Vantage


@pytest.fixture(autouse=True)
def triage_drops_no_candidate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    rank = verdict.rank

    def audited(facts: Facts, context: DiagnosisContext, vantage: Vantage, *, triage: bool = True) -> list[Candidate]:
        ranked = rank(facts, context, vantage, triage=triage)
        if triage:
            every_rule = rank(facts, context, vantage, triage=False)
            assert [(c.cause, c.score) for c in ranked] == [(c.cause, c.score) for c in every_rule], (
                f"triage dropped a candidate of {facts.conn.uid}"
            )
        return ranked

    monkeypatch.setattr(verdict, "rank", audited)
    yield
