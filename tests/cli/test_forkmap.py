"""Diagnosing the held-back connections on two cores gives the same pairs, in the same order, as on one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench.generate import write_capture

from whyreset.analysis import AnalysisStream
from whyreset.forkmap import map_in_halves
from whyreset.report.jsonout import connection_record


def _square(value: int) -> int:
    return value * value


@pytest.mark.parametrize("count", [0, 1, 2, 7, 501])
def test_map_in_halves_keeps_every_result_in_order(count: int) -> None:
    items = list(range(count))
    assert list(map_in_halves(_square, items, parallel=True)) == [(i, i * i) for i in items]


def test_the_child_computes_the_second_half() -> None:
    parent = os.getpid()
    pairs = list(map_in_halves(lambda _: os.getpid(), list(range(10)), parallel=True))
    pids = [pid for _, pid in pairs]
    assert pids[:5] == [parent] * 5
    assert len(set(pids[5:])) == 1 and pids[5] != parent


def test_a_failing_child_half_is_recomputed_here() -> None:
    parent = os.getpid()

    def only_here(value: int) -> int:
        if os.getpid() != parent:
            raise RuntimeError("the child cannot do this one")
        return value + 1

    assert [result for _, result in map_in_halves(only_here, [1, 2, 3, 4], parallel=True)] == [2, 3, 4, 5]


def test_stopping_early_ends_the_child() -> None:
    pairs = map_in_halves(_square, list(range(100)), parallel=True)
    assert next(pairs) == (0, 0)
    pairs.close()  # the finally clause kills and reaps the child: no zombie left behind
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_the_stream_diagnoses_the_same_on_two_cores(tmp_path: Path) -> None:
    path = str(tmp_path / "mix.pcap")
    write_capture(path, 3000, seed=7)

    def records(parallel: bool) -> list[dict[str, object]]:
        stream = AnalysisStream(path, parallel=parallel)
        return [connection_record(conn, finding, source=stream.name) for conn, finding in stream]

    serial, parallel = records(False), records(True)
    assert len([r for r in serial if r["cause"] is not None]) > 100
    assert parallel == serial


def test_jobs_2_prints_the_same_json_as_one_job(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from whyreset.cli import main

    path = str(tmp_path / "mix.pcap")
    write_capture(path, 6000, seed=7)
    one = CliRunner().invoke(main, ["analyze", "--json", path])
    two = CliRunner().invoke(main, ["analyze", "--json", "--jobs", "2", path])
    assert one.exit_code == two.exit_code == 1
    assert one.stdout.count("\n") > 300
    assert two.stdout == one.stdout


def test_no_process_to_spare_means_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # what fork raises at RLIMIT_NPROC

    monkeypatch.setattr(os, "fork", refuse)
    assert list(map_in_halves(_square, [1, 2, 3], parallel=True)) == [(1, 1), (2, 4), (3, 9)]
