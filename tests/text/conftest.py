"""Fixtures of the tcpdump text reader's tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from text_captures import record_loopback_capture


@pytest.fixture(scope="session", params=["lo", "any"])
def loopback_pcap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real loopback sockets (refused, clean close, reset after data, IPv6 clean close), captured on ``lo``
    (Ethernet frames) and on ``any`` (Linux cooked v2: text lines start with the interface and direction)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to capture on loopback")
    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump")
    interface: str = request.param
    return record_loopback_capture(tmp_path_factory.mktemp(interface) / f"{interface}.pcap", interface)
