"""The catalogue itself: complete, consistent, rendered (terminal and Markdown), and the error-line
mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from whyreset.diagnose.catalogue import CATALOGUE, ENTRIES
from whyreset.diagnose.cli import explain, rules
from whyreset.diagnose.render import entry_markdown, explain_line, index_markdown
from whyreset.diagnose.symptoms import MESSAGES, RUNTIMES, Errno, Operation, errno_for_icmp, match_error_line
from whyreset.ids import CauseId

DOCS = Path(__file__).resolve().parents[2] / "docs" / "causes"


def test_one_entry_per_cause_id() -> None:
    assert [e.cause for e in ENTRIES].count(CauseId.REFUSED) == 1
    assert set(CATALOGUE) == set(CauseId)
    assert len(ENTRIES) == len(CauseId)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.cause.value for e in ENTRIES])
def test_entry_is_complete(entry: object) -> None:
    from whyreset.diagnose.catalogue import CatalogueEntry

    assert isinstance(entry, CatalogueEntry)
    assert entry.title and entry.what_happens and entry.signature
    assert entry.evidence and entry.kernel_reasons and entry.fix and entry.roles
    assert entry.decisive_capture and entry.seeds
    assert entry.family in {"handshake", "close", "path", "timeout"}
    assert entry.rule.__module__.endswith(entry.family) or entry.cause in {
        CauseId.LISTENER_CLOSED,
        CauseId.IDLE_STATE_DROPPED,
    }
    assert entry.cause not in entry.look_alikes


def test_seed_coverage_matches_the_design_table() -> None:
    by_seed: dict[str, set[CauseId]] = {}
    for entry in ENTRIES:
        for seed in entry.seeds:
            by_seed.setdefault(seed, set()).add(entry.cause)
    assert set(by_seed) == {"000", "001", "002", "003", "004"}
    assert CauseId.CLOSE_WAIT_LEAK in by_seed["003"] and CauseId.CLOSE_WAIT_LEAK in by_seed["004"]
    assert CauseId.KEEPALIVE_RACE in by_seed["001"]


@pytest.mark.parametrize(
    ("line", "runtime", "errno"),
    [
        ("java.net.SocketException: Connection reset", "java", Errno.ECONNRESET),
        ("java.net.SocketException: Connection reset by peer", "java", Errno.ECONNRESET),
        ("java.net.SocketException: Broken pipe (Write failed)", "java", Errno.EPIPE),
        ("java.net.ConnectException: Connection refused (Connection refused)", "java", Errno.ECONNREFUSED),
        ("ConnectionResetError: [Errno 104] Connection reset by peer", "python", Errno.ECONNRESET),
        ("BrokenPipeError: [Errno 32] Broken pipe", "python", Errno.EPIPE),
        (
            "requests.exceptions.ConnectionError: ('Connection aborted.', RemoteDisconnected('Remote end "
            "closed "
            "connection without response'))",
            "python",
            Errno.EOF,
        ),
        ("httpx.RemoteProtocolError: Server disconnected without sending a response.", "python", Errno.EOF),
        ("read tcp 10.1.2.3:5555->10.1.2.4:80: read: connection reset by peer", "go", Errno.ECONNRESET),
        ("write tcp 10.1.2.3:5555->10.1.2.4:80: write: broken pipe", "go", Errno.EPIPE),
        ("dial tcp 10.1.2.4:80: connect: connection refused", "go", Errno.ECONNREFUSED),
        ("Error: read ECONNRESET", "node", Errno.ECONNRESET),
        ("Error: write EPIPE", "node", Errno.EPIPE),
        ("Error: connect ETIMEDOUT 10.0.0.9:443", "node", Errno.ETIMEDOUT),
        ("curl: (56) Recv failure: Connection reset by peer", "curl", Errno.ECONNRESET),
        ("curl: (52) Empty reply from server", "curl", Errno.EOF),
        (
            "curl: (7) Failed to connect to localhost port 9999 after 0 ms: Connection refused",
            "curl",
            Errno.ECONNREFUSED,
        ),
        (
            "2024/01/01 [error] 7#7: *9 recv() failed (104: Connection reset by peer) while reading response "
            "header "
            'from upstream, client: 1.2.3.4, upstream: "http://10.0.0.2:8080/"',
            "nginx",
            Errno.ECONNRESET,
        ),
        (
            "upstream prematurely closed connection while reading response header from upstream",
            "nginx",
            Errno.EOF,
        ),
        (
            "connect() failed (111: Connection refused) while connecting to upstream",
            "nginx",
            Errno.ECONNREFUSED,
        ),
        (
            "upstream timed out (110: Connection timed out) while reading response header",
            "nginx",
            Errno.ETIMEDOUT,
        ),
        ("writev() failed (32: Broken pipe) while sending request to upstream", "nginx", Errno.EPIPE),
    ],
)
def test_error_lines_are_recognised(line: str, runtime: str, errno: Errno) -> None:
    hits = match_error_line(line)
    assert hits, line
    assert any(h.runtime == runtime and h.errno is errno for h in hits[:3]), [(h.runtime, h.errno) for h in hits]
    found = explain_line(line)
    assert found.causes and found.decide


def test_reset_lines_lead_with_reset_causes_and_refusals_with_refused() -> None:
    reset = explain_line("ConnectionResetError: [Errno 104] Connection reset by peer")
    assert reset.causes[0] in {CauseId.KEEPALIVE_RACE, CauseId.CLOSE_WITH_UNREAD_DATA}
    assert CauseId.PEER_LOST_STATE in reset.causes and CauseId.REFUSED not in reset.causes
    refused = explain_line("dial tcp 10.0.0.2:80: connect: connection refused")
    assert refused.causes[0] is CauseId.REFUSED
    eof = explain_line("http.client.RemoteDisconnected: Remote end closed connection without response")
    assert CauseId.KEEPALIVE_RACE in eof.causes[:2]


def test_every_runtime_has_the_core_errors() -> None:
    for runtime in RUNTIMES:
        errnos = {m.errno for m in MESSAGES if m.runtime == runtime}
        assert {Errno.ECONNRESET, Errno.ECONNREFUSED, Errno.ETIMEDOUT, Errno.EOF} <= errnos, runtime


def test_icmp_errno_mapping() -> None:
    assert errno_for_icmp(4, 3, 3) is Errno.ECONNREFUSED
    assert errno_for_icmp(4, 3, 13) is Errno.EHOSTUNREACH
    assert errno_for_icmp(4, 3, 0) is Errno.ENETUNREACH
    assert errno_for_icmp(6, 1, 4) is Errno.ECONNREFUSED
    assert errno_for_icmp(6, 1, 1) is Errno.EHOSTUNREACH


def test_client_only_runtime_is_not_shown_as_a_server() -> None:
    view = CATALOGUE[CauseId.ABORTIVE_CLOSE].roles[0].view
    assert "curl: (56)" in view.render("curl", client=True)
    assert "not applicable" in view.render("curl", client=False)
    assert view.render("nginx", client=False).startswith("recv() failed (104") or "client" in view.render(
        "nginx", client=False
    )
    assert Operation.READ is view.operation


def test_cli_explain_cause_and_line() -> None:
    runner = CliRunner()
    result = runner.invoke(explain, ["keepalive_race"])
    assert result.exit_code == 0, result.output
    assert "Keep-alive race" in result.output and "Fix" in result.output
    result = runner.invoke(explain, ["curl: (56) Recv failure: Connection reset by peer"])
    assert result.exit_code == 0, result.output
    assert "close_with_unread_data" in result.output and "Which capture decides" in result.output
    result = runner.invoke(explain, ["nothing", "known", "here"])
    assert result.exit_code == 1


def test_cli_rules_lists_every_entry_and_writes_markdown(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(rules, [], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for cause in CauseId:
        assert cause.value in result.output
    result = runner.invoke(rules, ["--markdown", str(tmp_path / "causes")])
    assert result.exit_code == 0
    written = sorted(p.name for p in (tmp_path / "causes").iterdir())
    assert written == sorted([f"{c.value}.md" for c in CauseId] + ["README.md"])


def test_committed_docs_are_generated_from_the_catalogue() -> None:
    if not DOCS.is_dir():
        pytest.skip("docs/causes not generated in this checkout")
    for entry in ENTRIES:
        assert (DOCS / f"{entry.cause.value}.md").read_text(encoding="utf-8") == entry_markdown(entry), (
            f"docs/causes/{entry.cause.value}.md is stale: run `whyreset rules --markdown docs/causes`"
        )
    assert (DOCS / "README.md").read_text(encoding="utf-8") == index_markdown()


def test_findings_show_the_connections_own_addresses_in_messages() -> None:
    from diagnose.script import CLIENT, SERVER, Path
    from whyreset.model import ACK, RST, SYN

    path = Path(capture_at=0.0)
    c = path.conn(client=("10.7.7.7", 51000), server=("10.8.8.8", 6443))
    arrival = c.send(CLIENT, 0, 0, flags=SYN)
    c.send(SERVER, 0, arrival, flags=RST | ACK, seq=0)
    finding = path.only_finding()
    assert finding is not None
    assert finding.symptoms["go"]["orig"].startswith("dial tcp 10.8.8.8:6443: connect: connection refused")
    assert "Failed to connect to 10.8.8.8 port 6443" in finding.symptoms["curl"]["orig"]
