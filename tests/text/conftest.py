"""Fixtures of the tcpdump text reader's tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from text_captures import record_loopback_capture

CORPUS = Path("/work/shared/corpus")
SEEDS = Path("/work/shared/seeds")


@pytest.fixture(scope="session")
def loopback_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A capture of real loopback sockets: refused, clean close, reset after data, IPv6 clean close."""
    if os.geteuid() != 0:
        pytest.skip("needs root to capture on loopback")
    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump")
    return record_loopback_capture(tmp_path_factory.mktemp("loopback") / "loopback.pcap")
