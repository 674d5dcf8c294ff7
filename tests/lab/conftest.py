"""Fixtures of the lab tests: skip the live ones when the machine cannot run the lab."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from whyreset.lab.runner import missing_needs
from whyreset.lab.scenario import Need

LIVE_NEEDS = frozenset({Need.ROOT, Need.NETNS, Need.TCPDUMP, Need.TRACEFS})


@pytest.fixture(scope="session")
def live_lab() -> Iterator[None]:
    """Skip unless root, ip, tcpdump and tracefs are here (the lab runs real namespaces and captures)."""
    missing = missing_needs(LIVE_NEEDS)
    if missing:
        pytest.skip("lab needs " + "; ".join(missing))
    yield
