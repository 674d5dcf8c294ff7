"""Live scenarios (root, namespaces, tcpdump, tracefs): the kernel's reasons, the applications' errnos, and
who sent each RST on the wire (tshark), for a handful of fast scenarios; then cleanup on errors and
interrupts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from lab_support import rst_senders_by_tshark

from whyreset.errors import LabError
from whyreset.lab.runner import LabContext, LabRun, ScenarioTimeout, run_scenario
from whyreset.lab.scenario import Truth
from whyreset.lab.scenarios import register
from whyreset.lab.scenarios._loopback import LoopbackScenario, Stage
from whyreset.lab.tracer import find_tracefs

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("live_lab")]

# scenario -> (tcp_send_reset reasons in order, (app, call, errno) that must appear)
EXPECTED: dict[str, tuple[list[str], list[tuple[str, str, str]]]] = {
    "refused": (["NO_SOCKET"], [("client", "connect", "ECONNREFUSED")]),
    "close_with_unread_data.server": (["TCP_ABORT_ON_CLOSE"], [("client", "recv", "ECONNRESET")]),
    "close_with_unread_data.client": (["TCP_ABORT_ON_CLOSE"], [("server", "recv", "ECONNRESET")]),
    "abortive_close.linger0": (["TCP_STATE"], [("client", "recv", "ECONNRESET")]),
    "data_after_close.close_wait_writer": (["TCP_TIMEWAIT_SOCKET"], [("client", "send", "EPIPE")]),
    "backlog_overflow.abort": (["INVALID_SYN"], [("client", "recv", "ECONNRESET")]),
    "invalid_segment.ack_to_listener": (["TCP_FLAGS"], []),
    "negative.clean_close_client_first": ([], []),
}


def _errnos(truth: Truth) -> set[tuple[str, str, str]]:
    return {(call.app, call.call, call.errno) for call in truth.socket_calls if call.errno}


@pytest.fixture(scope="module")
def runs(live_lab: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LabRun]:
    directory = tmp_path_factory.mktemp("lab")
    return {name: run_scenario(name, seed=11, keep_dir=directory, time_limit=20) for name in EXPECTED}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kernel_reasons_and_errnos(runs: dict[str, LabRun], name: str) -> None:
    truth = runs[name].truth
    reasons, errnos = EXPECTED[name]
    assert [e.reason for e in truth.kernel_resets if e.event == "tcp_send_reset"] == reasons
    assert set(errnos) <= _errnos(truth)
    assert truth.kernel == os.uname().release


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_shows_the_rst_senders_of_the_truth(runs: dict[str, LabRun], name: str) -> None:
    run = runs[name]
    [pcap] = run.pcaps.values()
    assert pcap.stat().st_size > 24
    for connection in run.truth.connections:
        assert rst_senders_by_tshark(pcap, connection.orig, connection.resp) == connection.rst_senders


def test_backlog_overflow_moves_the_listen_counters(runs: dict[str, LabRun]) -> None:
    counters = runs["backlog_overflow.abort"].truth.counters["loopback"]
    assert counters.get("ListenOverflows", 0) >= 1 and counters.get("ListenDrops", 0) >= 1


def test_same_seed_same_addresses(tmp_path: Path, runs: dict[str, LabRun]) -> None:
    again = run_scenario("refused", seed=11, keep_dir=tmp_path)
    assert again.truth.connections == runs["refused"].truth.connections


def _leftovers() -> tuple[list[str], list[str]]:
    pid = str(os.getpid())
    namespaces = [name for name in os.listdir("/run/netns") if name.startswith(f"wrlo{pid}n")]
    instances = [p.name for p in (find_tracefs() / "instances").glob(f"whyreset-{pid}*")]
    return namespaces, instances


class _Interrupted(LoopbackScenario):
    name = "test.interrupted"
    cause = None
    summary = "raises KeyboardInterrupt mid-capture (cleanup test)"

    def exercise(self, stage: Stage) -> None:
        stage.lab.set_sysctl(stage.host.netns, "net.ipv4.tcp_fin_timeout", "7")
        raise KeyboardInterrupt


class _Sleepy(LoopbackScenario):
    name = "test.sleepy"
    cause = None
    summary = "sleeps past its time bound (cleanup test)"

    def exercise(self, stage: Stage) -> None:
        stage.listen()
        time.sleep(30)


def test_cleanup_after_keyboard_interrupt_and_time_bound() -> None:
    register(_Interrupted())
    register(_Sleepy())
    with pytest.raises(KeyboardInterrupt):
        run_scenario("test.interrupted")
    started = time.monotonic()
    with pytest.raises(ScenarioTimeout):
        run_scenario("test.sleepy", time_limit=1.5)
    assert time.monotonic() - started < 10
    assert _leftovers() == ([], [])


def test_unknown_scenario_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="no scenario named"):
        run_scenario("no.such.scenario")


def test_lab_context_seeded_choices_are_reproducible(tmp_path: Path) -> None:
    import contextlib

    from whyreset.lab.scenarios import get_scenario

    scenario = get_scenario("refused")
    picks = []
    for _ in range(2):
        with contextlib.ExitStack() as stack:
            lab = LabContext(scenario, 5, tmp_path, stack)
            picks.append((lab.loopback_address(), lab.port(), lab.size(1, 10**6)))
    assert picks[0] == picks[1]


def test_keepalive_race_is_verified_by_the_kernel(tmp_path: Path) -> None:
    truth = run_scenario("keepalive_race.http_reuse", seed=4, keep_dir=tmp_path, time_limit=20).truth
    attempts = truth.extra["attempts"]
    assert attempts[-1]["rst"] is True and len(attempts) <= 3
    [raced] = [c for c in truth.connections if c.cause is not None]
    resets = [e for e in truth.kernel_resets if e.event == "tcp_send_reset" and e.dst == raced.orig]
    assert [e.reason for e in resets] in (["TCP_ABORT_ON_DATA"], ["TCP_TIMEWAIT_SOCKET"])
    failures = {c.result for c in truth.socket_calls if c.app == "client" and c.call == "get_response"}
    assert failures & {"RemoteDisconnected", "ConnectionResetError"}
    assert any(c.app == "server" and c.call == "idle_close" for c in truth.socket_calls)


def test_cli_run_shows_kernel_apps_and_analysis_side_by_side(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from whyreset.lab.cli import lab

    result = CliRunner().invoke(lab, ["run", "refused", "--seed", "5", "--keep", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for expected in ("tcp_send_reset", "NO_SOCKET", "ECONNREFUSED", "capture analysis vs truth"):
        assert expected in result.output
    assert (tmp_path / "refused.truth.json").exists() and (tmp_path / "refused.loopback.pcap").exists()


def test_cli_record_only_pattern_writes_index(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from whyreset.lab.cli import lab

    result = CliRunner().invoke(lab, ["record", str(tmp_path), "--seed", "2", "--only", "negative.half_*"])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["seed"] == 2 and [entry["name"] for entry in index["scenarios"]] == ["negative.half_close"]
    assert index["command"] == f"whyreset lab record {tmp_path} --seed 2 --only 'negative.half_*'"


def test_tracer_uses_a_private_instance_and_leaves_the_global_buffer_alone() -> None:
    from whyreset.lab.tracer import KernelTracer

    root = find_tracefs()
    global_state = [(root / name).read_text() for name in ("trace_clock", "events/tcp/tcp_send_reset/enable")]
    with KernelTracer() as tracer:
        instance = tracer.instance
        assert instance is not None and instance.name.startswith(f"whyreset-{os.getpid()}")
        assert "[boot]" in (instance / "trace_clock").read_text()
        assert (instance / "events/tcp/tcp_send_reset/enable").read_text().strip() == "1"
        assert (
            abs(tracer.offset_ns - (time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME))) < 50_000_000
        )
    assert not instance.exists()
    assert [
        (root / name).read_text() for name in ("trace_clock", "events/tcp/tcp_send_reset/enable")
    ] == global_state
