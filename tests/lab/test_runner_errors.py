"""Without root, tools or tracefs the lab says so in one line (a LabError), never with a traceback."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from whyreset.errors import LabError
from whyreset.ingest.craft import internet_checksum
from whyreset.lab import runner
from whyreset.lab.cli import lab
from whyreset.lab.scenario import Need


def test_not_root_is_a_clear_lab_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match=r"cannot run refused: missing root"):
        runner.run_scenario("refused")


def test_missing_tcpdump_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(runner.shutil, "which", lambda tool: None if tool == "tcpdump" else real_which(tool))
    assert any("tcpdump" in reason for reason in runner.missing_needs(frozenset({Need.TCPDUMP})))


def test_missing_tracefs_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tracefs() -> None:
        raise LabError("tracefs is not available")

    monkeypatch.setattr(runner, "find_tracefs", no_tracefs)
    assert runner.missing_needs(frozenset({Need.TRACEFS})) == ["tracefs is not available"]


def test_cli_run_reports_the_lab_error_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(lab, ["run", "refused"])
    assert result.exit_code == 1
    assert "Error: cannot run refused: missing root" in result.output
    assert "Traceback" not in result.output


def test_cli_list_names_every_scenario_and_its_cause() -> None:
    result = CliRunner().invoke(lab, ["list"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("refused", "keepalive_race.http_reuse", "negative.half_close", "backlog_overflow.abort"):
        assert name in result.output


def test_errno_names() -> None:
    assert runner.errno_name(ConnectionResetError(104, "reset")) == "ECONNRESET"
    assert runner.errno_name(TimeoutError("timed out")) == "ETIMEDOUT"
    assert runner.errno_name(ValueError("x")) is None


def test_internet_checksum_of_a_known_ipv4_header() -> None:
    # The classic example header (Wikipedia, RFC 1071 style): its checksum is 0xb861.
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert internet_checksum(header) == 0xB861
    patched = header[:10] + (0xB861).to_bytes(2, "big") + header[12:]
    assert internet_checksum(patched) == 0
