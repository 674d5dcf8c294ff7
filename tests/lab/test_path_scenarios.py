"""Each path scenario runs on real namespaces, and its truth and captures show the facts of its cause: who
sent each RST (by address and TTL), ICMP errors, retransmissions then silence, the kernel's reset reason.

The captures are decoded here with a few lines of struct (independent of whyreset's readers under test).
"""

from __future__ import annotations

import ipaddress
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from whyreset.ids import CauseId
from whyreset.lab import netns
from whyreset.lab.inject import ACK, FIN, RST, SYN, read_pcap_packets
from whyreset.lab.runner import LabRun, missing_needs, run_scenario
from whyreset.lab.scenario import Truth
from whyreset.lab.scenarios import all_scenarios, get_scenario
from whyreset.lab.scenarios.path_base import PATH_NEEDS, RST_VIEWS_KEY

SEED = int(os.environ.get("WHYRESET_LAB_SEED", "3"))
"""Seed of every scenario run (set WHYRESET_LAB_SEED to try others: addresses, TTLs, ports, families
change)."""
PATH_SCENARIOS = sorted(s.name for s in all_scenarios() if s.name in {
    "icmp_unreachable.router_reject", "syn_unanswered.router_drop", "keepalive_timeout.black_hole",
    "retransmission_timeout.user_timeout", "retransmission_timeout.retries2",
    "idle_state_dropped.conntrack_expiry", "peer_lost_state.server_reboot", "peer_lost_state.client_reboot",
    "middlebox_reset.idle_reject", "middlebox_reset.forged_both", "injected_reset.blind_rst",
})  # fmt: skip

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_needs(PATH_NEEDS)), reason="; ".join(missing_needs(PATH_NEEDS)) or "ok"),
]


# ------------------------------------------------------------------------------------------------------------
# Decoding the captures


@dataclass(frozen=True, slots=True)
class Packet:
    ts_ns: int
    src: str
    dst: str
    ttl: int
    proto: int
    """6 TCP, 1 ICMP, 58 ICMPv6."""
    icmp: tuple[int, int] | None = None
    """(type, code)."""
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    payload_len: int = 0


def decode(ts_ns: int, raw: bytes) -> Packet | None:
    if raw[0] >> 4 == 4:
        ihl, total, ttl, proto = (raw[0] & 15) * 4, struct.unpack_from("!H", raw, 2)[0], raw[8], raw[9]
        src, dst, body = (
            str(ipaddress.IPv4Address(raw[12:16])),
            str(ipaddress.IPv4Address(raw[16:20])),
            raw[ihl:total],
        )
    elif raw[0] >> 4 == 6:
        ttl, proto = raw[7], raw[6]
        src, dst, body = (
            str(ipaddress.IPv6Address(raw[8:24])),
            str(ipaddress.IPv6Address(raw[24:40])),
            raw[40:],
        )
    else:
        return None
    if proto in (1, 58):
        return Packet(ts_ns, src, dst, ttl, proto, icmp=(body[0], body[1]))
    if proto != 6:
        return None
    sport, dport, seq, ack, offset_flags = struct.unpack_from("!HHIIH", body)
    data = len(body) - (offset_flags >> 12) * 4
    return Packet(ts_ns, src, dst, ttl, 6, None, sport, dport, seq, ack, offset_flags & 0x1FF, data)


def packets(run: LabRun, point: str) -> list[Packet]:
    decoded = (decode(ts, raw) for ts, raw in read_pcap_packets(run.pcaps[point]))
    return [packet for packet in decoded if packet is not None]


def hosts(truth: Truth) -> dict[str, dict[str, object]]:
    described = truth.extra["hosts"]
    assert isinstance(described, dict)
    return described


def owner(truth: Truth, addr: str) -> str:
    for role, info in hosts(truth).items():
        if addr in info["v4"] or addr in info["v6"]:  # type: ignore[operator]
            return role
    raise AssertionError(f"{addr} belongs to no lab host")


def ttl_of(truth: Truth, role: str) -> int:
    value = hosts(truth)[role]["ttl"]
    assert isinstance(value, int)
    return value


def rsts(packets_: list[Packet]) -> list[Packet]:
    return [p for p in packets_ if p.proto == 6 and p.flags & RST]


def calls(truth: Truth, app: str, call: str) -> list[tuple[str, str | None]]:
    return [(c.result, c.errno) for c in truth.socket_calls if c.app == app and c.call == call]


def retransmitted_then_silent(packets_: list[Packet], sender: str) -> int:
    """How often the sender's last data segment was retransmitted, checking nothing else follows from it."""
    data = [p for p in packets_ if p.src == sender and p.payload_len]
    last = data[-1]
    copies = [p for p in data if p.seq == last.seq]
    after = [p for p in packets_ if p.ts_ns > last.ts_ns]
    assert not after, f"expected silence after the last retransmission, got {after}"
    return len(copies) - 1


# ------------------------------------------------------------------------------------------------------------
# Running (each scenario once per test session)


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LabRun]:
    done: dict[str, LabRun] = {}

    def run(name: str) -> LabRun:
        if name not in done:
            done[name] = run_scenario(name, seed=SEED, keep_dir=tmp_path_factory.mktemp(name))
            leftovers = [
                n for n in netns.list_namespaces() if n.startswith(f"{netns.NAME_PREFIX}{os.getpid()}n")
            ]
            assert leftovers == [], f"{name} left namespaces behind"
        return done[name]

    return run


def test_every_path_scenario_is_registered_with_its_cause() -> None:
    assert len(PATH_SCENARIOS) == 11
    for name in PATH_SCENARIOS:
        scenario = get_scenario(name)
        assert scenario.cause is not None and name.startswith(str(scenario.cause))
        assert scenario.needs == PATH_NEEDS


def test_icmp_unreachable(lab_run: Callable[[str], LabRun]) -> None:
    run = lab_run("icmp_unreachable.router_reject")
    truth = run.truth
    errors = [p for p in packets(run, "client") if p.icmp]
    assert {(p.proto, p.icmp) for p in errors} == {(1, (3, 3)), (1, (3, 13)), (58, (1, 1)), (58, (1, 4))}
    assert all(owner(truth, p.src) == "router" and p.ttl == ttl_of(truth, "router") for p in errors)
    icmp4, icmp6 = (sum(p.proto == proto for p in errors) for proto in (1, 58))
    assert truth.extra["icmp_counters"]["client"] == {
        "Icmp.InDestUnreachs": icmp4,
        "Icmp6InDestUnreachs": icmp6,
    }
    assert sorted(calls(truth, "client", "connect")) == sorted(
        [("ConnectionRefusedError", "ECONNREFUSED"), ("OSError", "EHOSTUNREACH"),
         ("ConnectionRefusedError", "ECONNREFUSED"), ("PermissionError", "EACCES")]
    )  # fmt: skip
    assert packets(run, "server") == [], "the SYNs never reach the server"
    assert [c.cause for c in truth.connections] == [CauseId.ICMP_UNREACHABLE] * 4


def test_syn_unanswered(lab_run: Callable[[str], LabRun]) -> None:
    run = lab_run("syn_unanswered.router_drop")
    client = packets(run, "client")
    syns = [p for p in client if p.flags & SYN]
    assert len(syns) >= 3 and len({p.seq for p in syns}) == 1 and not any(p.flags & ACK for p in syns)
    assert not rsts(client) and packets(run, "server") == []
    assert calls(run.truth, "client", "connect") == [("timeout", "ETIMEDOUT")]
    assert run.truth.counters["client"].get("TCPSynRetrans", 0) == len(syns) - 1


def test_keepalive_timeout(lab_run: Callable[[str], LabRun]) -> None:
    run = lab_run("keepalive_timeout.black_hole")
    truth = run.truth
    client = packets(run, "client")
    (reset,) = rsts(client)
    assert owner(truth, reset.src) == "client" and reset.ttl == ttl_of(truth, "client")
    last_data = max(p.ts_ns for p in client if p.payload_len)
    probes = [
        p for p in client if p.ts_ns > last_data and owner(truth, p.src) == "client" and not p.flags & RST
    ]
    assert len(probes) >= 2 and all(p.payload_len == 0 for p in probes)
    assert not rsts(packets(run, "server")), "the client's RST dies in the black hole"
    sent = [k for k in truth.kernel_resets if k.event == "tcp_send_reset"]
    assert [(k.netns, k.reason) for k in sent] == [("client", "TCP_KEEPALIVE_TIMEOUT")]
    assert ("timeout", "ETIMEDOUT") in calls(truth, "client", "recv")
    assert truth.counters["client"]["TCPKeepAlive"] >= 2


@pytest.mark.parametrize(
    "name",
    [
        "retransmission_timeout.user_timeout",
        "retransmission_timeout.retries2",
        "idle_state_dropped.conntrack_expiry",
    ],
)
def test_retransmissions_then_silence(lab_run: Callable[[str], LabRun], name: str) -> None:
    run = lab_run(name)
    truth = run.truth
    client_addr = next(c.orig for c in truth.connections).rsplit(":", 1)[0].strip("[]")
    client = packets(run, "client")
    assert retransmitted_then_silent(client, client_addr) >= 3
    assert not rsts(client) and not [k for k in truth.kernel_resets if k.event == "tcp_send_reset"]
    last = [p for p in client if p.payload_len][-1]
    assert not [p for p in packets(run, "server") if p.seq == last.seq and p.payload_len], "never delivered"
    assert ("timeout", "ETIMEDOUT") in calls(truth, "client", "recv")
    assert truth.counters["client"]["TCPAbortOnTimeout"] == 1
    if name.startswith("idle_state_dropped"):
        earlier = [p for p in client if p.ts_ns < last.ts_ns and p.seq != last.seq]
        assert last.ts_ns - earlier[-1].ts_ns > 2_000_000_000, "the request follows the idle period"


@pytest.mark.parametrize(
    ("name", "rebooted", "survivor"),
    [
        ("peer_lost_state.server_reboot", "server", "client"),
        ("peer_lost_state.client_reboot", "client", "server"),
    ],
)
def test_peer_lost_state(lab_run: Callable[[str], LabRun], name: str, rebooted: str, survivor: str) -> None:
    run = lab_run(name)
    truth = run.truth
    (reset,) = rsts(packets(run, survivor))
    assert owner(truth, reset.src) == rebooted
    assert reset.ttl == ttl_of(truth, rebooted) - 1, "the peer's own TTL, one router hop away"
    sent = [(k.netns, k.reason) for k in truth.kernel_resets if k.event == "tcp_send_reset"]
    assert sent == [(rebooted, "NO_SOCKET")]
    assert ("ConnectionResetError", "ECONNRESET") in calls(truth, survivor, "recv")
    assert f"{rebooted}_rebooted" in truth.captures


@pytest.mark.parametrize("name", ["middlebox_reset.idle_reject", "middlebox_reset.forged_both"])
def test_middlebox_reset_carries_the_router_ttl_toward_both_ends(
    lab_run: Callable[[str], LabRun], name: str
) -> None:
    run = lab_run(name)
    truth = run.truth
    router_ttl = ttl_of(truth, "router")
    (to_client,) = rsts(packets(run, "client"))
    (to_server,) = rsts(packets(run, "server"))
    assert (
        owner(truth, to_client.src) == "server" and to_client.ttl == router_ttl != ttl_of(truth, "server") - 1
    )
    assert (
        owner(truth, to_server.src) == "client" and to_server.ttl == router_ttl != ttl_of(truth, "client") - 1
    )
    assert not [k for k in truth.kernel_resets if k.event == "tcp_send_reset"], "no endpoint sent them"
    received = {k.netns for k in truth.kernel_resets if k.event == "tcp_receive_reset"}
    assert received == {"client", "server"}
    assert ("ConnectionResetError", "ECONNRESET") in calls(truth, "client", "recv")
    assert truth.connections[0].rst_senders == ("path", "path")


def test_injected_reset_is_ignored_out_of_window_and_challenged_in_window(
    lab_run: Callable[[str], LabRun],
) -> None:
    run = lab_run("injected_reset.blind_rst")
    truth = run.truth
    client = packets(run, "client")
    out_of_window, in_window = rsts(client)
    assert out_of_window.ttl == in_window.ttl == ttl_of(truth, "router")
    between = [p for p in client if out_of_window.ts_ns < p.ts_ns < in_window.ts_ns]
    assert between == [], "an out-of-window RST is dropped silently"
    challenge = next(p for p in client if p.ts_ns > in_window.ts_ns)
    assert owner(truth, challenge.src) == "client" and challenge.flags == ACK and challenge.payload_len == 0
    assert challenge.seq == in_window.ack, "the challenge ACK carries the client's SND.NXT"
    assert truth.counters["client"]["TCPChallengeACK"] == 1
    fins = [p for p in client if p.flags & FIN]
    assert {owner(truth, p.src) for p in fins} == {"client", "server"}, "closed cleanly afterwards"
    assert not [c for c in truth.socket_calls if c.errno == "ECONNRESET"]


def test_captures_hold_only_lab_addresses(lab_run: Callable[[str], LabRun]) -> None:
    run = lab_run("middlebox_reset.forged_both")
    for point in run.truth.captures:
        for packet in packets(run, point):
            owner(run.truth, packet.src)
            owner(run.truth, packet.dst)


def rst_sender(truth: Truth, reset: Packet) -> str:
    """``orig``/``resp`` when the RST carries its endpoint's own TTL (minus the router hop), ``path`` when it
    carries the router's; anything else is a contradiction."""
    role = owner(truth, reset.src)
    router_ttl = ttl_of(truth, "router")
    if reset.ttl == router_ttl:
        return "path"
    assert reset.ttl in (ttl_of(truth, role), ttl_of(truth, role) - 1), (
        f"RST with TTL {reset.ttl} from {role}"
    )
    return {"client": "orig", "server": "resp"}[role]


@pytest.mark.parametrize("name", PATH_SCENARIOS)
def test_each_capture_shows_the_rst_senders_declared_for_it(
    lab_run: Callable[[str], LabRun], name: str
) -> None:
    run = lab_run(name)
    views = run.truth.extra[RST_VIEWS_KEY]
    assert set(views) == set(run.truth.captures), "every capture point has a declared view"
    for point in run.truth.captures:
        seen = [rst_sender(run.truth, reset) for reset in rsts(packets(run, point))]
        assert seen == views[point], f"{point}: {seen}"
    senders = [sender for view in views.values() for sender in view]
    for connection in run.truth.connections:
        assert set(connection.rst_senders) <= set(senders) | {"path"}
