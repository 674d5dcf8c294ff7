"""The Python API behind the CLI: lazy import, progress, registration that survives a broken module."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import click
import pytest

from whyreset.analysis import ExitStatus, analyze, analyze_path


def test_import_whyreset_stays_light() -> None:
    code = "import sys, whyreset; assert 'numpy' not in sys.modules, 'numpy imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    code = "import whyreset; print(whyreset.analyze.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "whyreset.analysis"


def test_progress_reports_bytes_up_to_the_file_size(mixed_pcap: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    analyze(str(mixed_pcap), progress=lambda done, total: calls.append((done, total)))
    size = mixed_pcap.stat().st_size
    assert calls and calls[-1] == (size, size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_file_object_and_path_give_the_same_records(mixed_pcap: Path) -> None:
    from_path = analyze_path(mixed_pcap).records()
    from_stream = analyze(io.BytesIO(mixed_pcap.read_bytes())).records()
    assert [r["uid"] for r in from_path] == [r["uid"] for r in from_stream]
    assert [r["outcome"] for r in from_path] == [r["outcome"] for r in from_stream]


def test_analysis_holds_connections_findings_and_report(mixed_pcap: Path) -> None:
    analysis = analyze(str(mixed_pcap))
    assert analysis.report.format == "pcap" and analysis.report.records == 20
    assert len(analysis.connections) == 4 and analysis.failure is None
    assert analysis.status is ExitStatus.FINDINGS
    if analysis.diagnosed:
        assert set(analysis.findings) <= {conn.uid for conn in analysis.connections}
    without = analyze(str(mixed_pcap), diagnose=False)
    assert without.findings == {} and not without.diagnosed
    assert all(record["cause"] is None for record in without.records())


def test_a_broken_command_module_warns_and_the_rest_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from whyreset import cli

    real_import = importlib.import_module

    def fake_import(name: str, package: str | None = None) -> object:
        if name == "whyreset.lab.cli":
            raise RuntimeError("boom in lab.cli")
        return real_import(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    group = click.Group("whyreset")
    warnings = io.StringIO()
    cli._register_subcommands(group, warn=warnings)
    assert "lab" not in group.commands
    assert "boom in lab.cli" in warnings.getvalue() and "lab" in warnings.getvalue()
    if real_import("whyreset.diagnose.cli") is not None:
        assert {"explain", "rules"} <= set(group.commands)
