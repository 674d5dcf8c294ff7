"""``whyreset analyze`` end to end: terminal, JSON, Zeek logs, stdin, truncated and unreadable inputs, exit
statuses, and a capture of real kernel sockets on loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_captures import write_mixed_capture
from click.testing import CliRunner

from whyreset.analysis import ExitStatus
from whyreset.cli import main
from whyreset.report.zeek import CONN_FIELDS, WHYRESET_FIELDS

CORPUS = Path("/work/shared/corpus")
PYTHON = sys.executable


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def json_records(stdout: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_terminal_summary_lists_abnormal_connections(mixed_pcap: Path) -> None:
    status, out, err = run("analyze", str(mixed_pcap))
    assert status == ExitStatus.FINDINGS, err
    assert "4 connections" in out
    assert "By outcome" in out
    assert "Abnormal connections (3)" in out
    assert "RST from resp 10.2.0.2:81" in out  # the refused SYN
    assert "final states:" in out
    assert "10.2.0.1:41000 -> 10.2.0.2:80" not in out  # the clean one is not listed without --all


def test_all_lists_every_connection(mixed_pcap: Path) -> None:
    status, out, _ = run("analyze", "--all", str(mixed_pcap))
    assert status == ExitStatus.FINDINGS
    assert "Connections (4)" in out and "10.2.0.1:41000 -> 10.2.0.2:80" in out
    assert "[2001:db8::10]:50000 -> [2001:db8::20]:443" in out


def test_json_lines_follow_the_schema(mixed_pcap: Path) -> None:
    status, out, _ = run("analyze", "--json", str(mixed_pcap))
    assert status == ExitStatus.FINDINGS
    records = json_records(out)
    assert len(records) == 4
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert len({r["uid"] for r in records}) == 4
    for record in records:
        assert record["schema_version"] == 1
        assert isinstance(record["ts"], float) and record["source"] == str(mixed_pcap)
        assert record["outcome"] in {"clean", "reset", "timeout", "half_closed", "open", "not_established"}
        assert record["cause"] is None or isinstance(record["cause"], str)
    clean, refused, v6, hostile = records
    assert clean["outcome"] == "clean" and clean["conn_state"] == "SF" and clean["rst"] is None
    assert refused["outcome"] == "not_established" and refused["conn_state"] == "REJ"
    assert refused["rst"]["sender"] == "resp" and refused["rst"]["ack"] == 8
    assert v6["ip_version"] == 6 and v6["orig_h"] == "2001:db8::10" and v6["outcome"] == "reset"
    assert hostile["rst"]["has_payload_text"] is True and hostile["rst"]["payload_text"] is None


def test_show_payload_escapes_hostile_text_in_the_terminal(mixed_pcap: Path) -> None:
    status, out, _ = run("analyze", "--show-payload", str(mixed_pcap))
    assert status == ExitStatus.FINDINGS
    assert "[bold red]pwned[/bold red]" in out  # literal: not interpreted as rich markup
    assert "\x1b[2J" not in out and "\x1b]0;evil" not in out  # escape sequences never reach the terminal
    _, hidden, _ = run("analyze", str(mixed_pcap))
    assert "pwned" not in hidden


def test_zeek_logs(mixed_pcap: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "zeek"
    status, _, _ = run("analyze", "--zeek", str(out_dir), str(mixed_pcap))
    assert status == ExitStatus.FINDINGS
    conn_lines = (out_dir / "conn.log").read_text().splitlines()
    assert conn_lines[0] == "#separator \\x09"
    assert conn_lines[6] == "#fields\t" + "\t".join(f.name for f in CONN_FIELDS)
    rows = [line.split("\t") for line in conn_lines if not line.startswith("#")]
    assert len(rows) == 4 and all(len(row) == len(CONN_FIELDS) for row in rows)
    why_rows = [line.split("\t") for line in (out_dir / "whyreset.log").read_text().splitlines() if line[0] != "#"]
    assert len(why_rows) == 3 and all(len(row) == len(WHYRESET_FIELDS) for row in why_rows)
    assert {row[1] for row in why_rows} <= {row[1] for row in rows}  # joined on uid


def test_zeek_json_needs_zeek_dir(mixed_pcap: Path) -> None:
    status, _, err = run("analyze", "--zeek-json", str(mixed_pcap))
    assert status == ExitStatus.USAGE and "--zeek DIR" in err


def test_zeek_json_variant(mixed_pcap: Path, tmp_path: Path) -> None:
    run("analyze", "--zeek", str(tmp_path), "--zeek-json", "--json", str(mixed_pcap))
    rows = [json.loads(line) for line in (tmp_path / "conn.log").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["id.orig_p"] == 41000 and rows[0]["proto"] == "tcp"


def test_truncated_capture_gives_partial_analysis(mixed_pcap: Path, tmp_path: Path) -> None:
    data = mixed_pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-30])  # the last record (the hostile RST) is cut in the middle
    status, out, err = run("analyze", "--json", str(cut))
    assert status == ExitStatus.PARTIAL_INPUT
    records = json_records(out)
    assert len(records) == 4  # every connection is still there, the last one without its RST
    assert records[3]["rst"] is None
    error_lines = [line for line in err.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith(f"whyreset: {cut}:")
    status, out, _ = run("analyze", str(cut))
    assert status == ExitStatus.PARTIAL_INPUT and "error:" in out


@pytest.mark.parametrize("content", [None, b"", b"\x00" * 64, b"this is not a capture at all\n" * 3])
def test_unreadable_input(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "input.pcap"
    if content is not None:
        path.write_bytes(content)
    status, _, err = run("analyze", str(path))
    if content == b"":
        assert status in (ExitStatus.OK, ExitStatus.NO_INPUT)  # an empty input holds no connection at all
    else:
        assert status == ExitStatus.NO_INPUT, err
        assert err.startswith(f"whyreset: {path}:")


def test_worst_status_wins_over_several_inputs(mixed_pcap: Path, tmp_path: Path) -> None:
    status, out, _ = run("analyze", "--json", str(mixed_pcap), str(tmp_path / "missing.pcap"))
    assert status == ExitStatus.NO_INPUT
    assert len(json_records(out)) == 4  # the readable input is still analysed


def test_usage_errors() -> None:
    assert run("analyze")[0] == ExitStatus.USAGE
    assert run("analyze", "-", "-")[0] == ExitStatus.USAGE
    assert run("nonsense")[0] == ExitStatus.USAGE


def test_stdin_and_python_m(mixed_pcap: Path) -> None:
    data = mixed_pcap.read_bytes()
    result = subprocess.run(
        [PYTHON, "-m", "whyreset", "analyze", "--json", "-"], input=data, capture_output=True, timeout=120
    )
    assert result.returncode == ExitStatus.FINDINGS, result.stderr
    from_stdin = json_records(result.stdout.decode())
    _, out, _ = run("analyze", "--json", str(mixed_pcap))
    from_file = json_records(out)
    assert [r["uid"] for r in from_stdin] == [r["uid"] for r in from_file]
    assert all(r["source"] == "-" for r in from_stdin)


def test_version_and_help() -> None:
    status, out, _ = run("--version")
    assert status == 0 and "whyreset" in out
    status, out, _ = run("analyze", "--help")
    assert status == 0 and "Exit status" in out


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared corpus is not on this machine")
def test_every_corpus_capture_is_analysed(tmp_path: Path) -> None:
    for path in sorted(CORPUS.glob("*.pcap*")):
        status, out, err = run("analyze", "--json", "--zeek", str(tmp_path / path.name), str(path))
        assert status in (ExitStatus.OK, ExitStatus.FINDINGS, ExitStatus.PARTIAL_INPUT), (path.name, err)
        records = json_records(out)
        assert records, path.name
        for record in records:
            if record["abnormal"] and record["diagnosis"] is not None:
                assert record["cause"] is not None or record["diagnosis"]["undetermined_reason"], path.name


# --- real kernel sockets ----------------------------------------------------------------------------------

# Run inside a private network namespace: its loopback is ours alone (and capturing on the host's loopback is
# not possible in every sandbox). A refused connect, then a server that closes with the request unread.
SOCKETS_SCRIPT = """
import socket, sys, threading, time
closed_port, server_port = int(sys.argv[1]), int(sys.argv[2])
try:
    socket.create_connection(("127.0.0.1", closed_port), 5)
    sys.exit("connect to a closed port succeeded")
except ConnectionRefusedError:
    pass
listener = socket.create_server(("127.0.0.1", server_port))
def serve():
    conn, _ = listener.accept()
    time.sleep(0.2)  # the request arrives and stays unread
    conn.close()  # unread data: the kernel sends RST instead of FIN (RFC 2525 2.17)
server = threading.Thread(target=serve)
server.start()
client = socket.create_connection(("127.0.0.1", server_port), 5)
client.sendall(b"a request the server never reads")
server.join(5)
client.settimeout(5)
try:
    client.recv(100)
    sys.exit("expected a reset")
except ConnectionResetError:
    pass
"""


@contextmanager
def private_netns() -> Iterator[str]:
    name = f"wrcli{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and capturing need root")
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed")
def test_real_loopback_capture(tmp_path: Path) -> None:
    """Real sockets in a private namespace, captured by tcpdump, analysed by the CLI."""
    closed_port, server_port = 7001, 7002
    pcap = tmp_path / "loopback.pcap"
    script = tmp_path / "sockets.py"
    script.write_text(SOCKETS_SCRIPT)
    with private_netns() as netns:
        capture_filter = f"tcp port {closed_port} or tcp port {server_port}"
        tcpdump = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "tcpdump",
                "-i",
                "lo",
                "-U",
                "-n",
                "-w",
                str(pcap),
                capture_filter,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tcpdump.stderr is not None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "listening on" not in tcpdump.stderr.readline():
                pass
            time.sleep(0.5)  # "listening on" comes a moment before the capture really starts
            sockets = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    sys.executable,
                    str(script),
                    str(closed_port),
                    str(server_port),
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert sockets.returncode == 0, sockets.stderr
            time.sleep(0.5)  # let tcpdump write the last packets
        finally:
            tcpdump.send_signal(signal.SIGINT)
            tcpdump.wait(10)
    status, out, err = run("analyze", "--json", str(pcap))
    assert status == ExitStatus.FINDINGS, err
    by_port = {record["resp_p"]: record for record in json_records(out)}
    refused, unread = by_port[closed_port], by_port[server_port]
    assert refused["outcome"] == "not_established" and refused["conn_state"] == "REJ"
    assert refused["rst"]["sender"] == "resp" and refused["rst"]["acceptability"] == "syn_sent_ack_ok"
    assert unread["outcome"] == "reset" and unread["rst"]["sender"] == "resp"
    assert unread["orig_final_state"] == "CLOSED" and unread["resp_final_state"] == "CLOSED"
    if refused["diagnosis"] is not None:
        assert refused["cause"] == "refused"
        assert unread["cause"] == "close_with_unread_data"


def test_conftest_capture_is_reproducible(tmp_path: Path) -> None:
    a = write_mixed_capture(tmp_path / "a.pcap").read_bytes()
    b = write_mixed_capture(tmp_path / "b.pcap").read_bytes()
    assert a == b


def test_max_deferred_zero_diagnoses_early_and_says_so(mixed_pcap: Path) -> None:
    """With no room for deferred connections, each abnormal one is diagnosed as it ends (same connections, a
    warning on stderr counts them); the default defers them and warns about nothing."""
    _, default, default_err = run("analyze", "--json", str(mixed_pcap))
    status, early, err = run("analyze", "--json", "--max-deferred", "0", str(mixed_pcap))
    assert status == ExitStatus.FINDINGS
    assert sorted(r["uid"] for r in json_records(early)) == sorted(r["uid"] for r in json_records(default))
    assert "3 abnormal connection(s) were diagnosed before the end of the capture" in err
    assert "diagnosed before the end" not in default_err
    status, _, err = run("analyze", "--json", "--max-deferred", "-1", str(mixed_pcap))
    assert status == ExitStatus.USAGE and "max-deferred" in err


def test_max_deferred_help_states_the_real_default() -> None:
    from whyreset.analysis import DEFAULT_MAX_DEFERRED

    _, out, _ = run("analyze", "--help")
    assert f"default {DEFAULT_MAX_DEFERRED}" in " ".join(out.split())


def test_gzip_pcapng_and_tcpdump_text_inputs_give_the_same_connections(mixed_pcap: Path, tmp_path: Path) -> None:
    """Read any capture: the same traffic as gzip'd pcap, pcapng and tcpdump text, the same connections."""
    import gzip

    from whyreset.ingest import craft

    _, out, _ = run("analyze", "--json", str(mixed_pcap))
    expected = [(r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["outcome"]) for r in json_records(out)]

    gz = tmp_path / "mixed.pcap.gz"
    gz.write_bytes(gzip.compress(mixed_pcap.read_bytes()))
    ng = tmp_path / "mixed.pcapng"
    from cli_captures import T0

    records = []
    data = mixed_pcap.read_bytes()
    offset = 24
    while offset < len(data):  # re-frame the pcap's records as pcapng enhanced packet blocks
        seconds, fraction, caplen, _wire = (
            int.from_bytes(data[offset + i : offset + i + 4], "little") for i in (0, 4, 8, 12)
        )
        records.append((seconds * 1_000_000_000 + fraction, data[offset + 16 : offset + 16 + caplen], 0))
        offset += 16 + caplen
    assert records[0][0] == T0
    craft.write_pcapng(ng, records, interfaces=[craft.Interface(craft.LINKTYPE_ETHERNET, tsresol=9)])
    inputs = [gz, ng]
    if shutil.which("tcpdump"):
        text = tmp_path / "mixed.txt"
        dump = subprocess.run(["tcpdump", "-r", str(mixed_pcap), "-nn", "-tt", "-v"], capture_output=True, timeout=60)
        text.write_bytes(dump.stdout)
        inputs.append(text)
    for path in inputs:
        status, out, err = run("analyze", "--json", str(path))
        assert status == ExitStatus.FINDINGS, (path.name, err)
        got = [(r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"], r["outcome"]) for r in json_records(out)]
        assert got == expected, path.name


def test_progress_is_never_drawn_over_json(mixed_pcap: Path) -> None:
    from whyreset.cli import _want_progress

    assert _want_progress(True, str(mixed_pcap), as_json=True) is False
    assert _want_progress(True, str(mixed_pcap), as_json=False) is True
    assert _want_progress(None, "-", as_json=False) is False
    assert _want_progress(None, str(mixed_pcap), as_json=False) is False  # small file (or no terminal)


def test_live_prints_a_connection_before_the_input_ends(tmp_path: Path) -> None:
    """--live on a pipe: a connection that is over is printed while the writer still holds the pipe open."""
    import select

    from whyreset.ingest import craft

    t0 = 1_700_000_000_000_000_000
    second = 1_000_000_000
    c, s = "10.9.0.1", "10.9.0.2"

    def record(t_ns: int, ip: bytes) -> bytes:
        return craft.pcap_record(t_ns, craft.frame(craft.LINKTYPE_ETHERNET, ip))

    refused = [
        record(t0, craft.tcp_packet(c, s, 42000, 81, seq=7, flags="S")),
        record(t0 + 1000, craft.tcp_packet(s, c, 81, 42000, seq=0, ack=8, flags="RA")),
    ]
    # Capture time moves 30 s on: the refused connection is over for the tracker.
    later = [record(t0 + 30 * second, craft.tcp_packet(c, s, 42001, 80, seq=1, flags="S"))]
    process = subprocess.Popen(
        [PYTHON, "-m", "whyreset", "analyze", "--json", "--live", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(craft.pcap_header() + b"".join(refused + later))
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "nothing printed while the pipe was still open"
        first = json.loads(process.stdout.readline())
        assert first["resp_p"] == 81 and first["outcome"] == "not_established"
    finally:
        process.stdin.close()
        rest = process.stdout.read()
        process.wait(30)
    assert [json.loads(line)["resp_p"] for line in rest.splitlines()] == [80]
    assert process.returncode == ExitStatus.FINDINGS


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and capturing need root")
@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")
@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed")
def test_real_tcpdump_pipe(tmp_path: Path) -> None:
    """``tcpdump -w - -U | whyreset analyze --live --json -`` on real sockets in a private namespace."""
    closed_port, server_port = 7101, 7102
    script = tmp_path / "sockets.py"
    script.write_text(SOCKETS_SCRIPT)
    with private_netns() as netns:
        capture = ["tcpdump", "--immediate-mode", "-i", "lo", "-U", "-n", "-w", "-"]
        capture_filter = f"tcp port {closed_port} or tcp port {server_port}"
        tcpdump = subprocess.Popen(
            ["ip", "netns", "exec", netns, *capture, capture_filter],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=False,
        )
        assert tcpdump.stdout is not None and tcpdump.stderr is not None
        analyzer = subprocess.Popen(
            [PYTHON, "-m", "whyreset", "analyze", "--json", "--live", "-"],
            stdin=tcpdump.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        tcpdump.stdout.close()  # the analyser holds the read end now
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and b"listening on" not in tcpdump.stderr.readline():
                pass
            time.sleep(0.5)
            ports = [str(closed_port), str(server_port)]
            sockets = subprocess.run(
                ["ip", "netns", "exec", netns, sys.executable, str(script), *ports],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert sockets.returncode == 0, sockets.stderr
            time.sleep(0.5)
        finally:
            tcpdump.send_signal(signal.SIGINT)
            tcpdump.wait(10)
            out, err = analyzer.communicate(timeout=60)
    assert analyzer.returncode == ExitStatus.FINDINGS, err.decode()
    by_port = {record["resp_p"]: record for record in json_records(out.decode())}
    assert by_port[closed_port]["conn_state"] == "REJ"
    assert by_port[server_port]["outcome"] == "reset" and by_port[server_port]["rst"]["sender"] == "resp"
