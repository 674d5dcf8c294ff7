"""Fixtures of the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_captures import write_mixed_capture


@pytest.fixture
def mixed_pcap(tmp_path: Path) -> Path:
    return write_mixed_capture(tmp_path / "mixed.pcap")
