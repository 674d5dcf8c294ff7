"""The lab's network topology and injector: pure parts everywhere, namespaces when root."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from whyreset.lab import netns
from whyreset.lab.inject import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Endpoint,
    FlowTable,
    RawInjector,
    RstPlacement,
    Segment,
    flow_table_from_pcap,
    forge_rst,
    parse_ip_tcp,
    read_pcap_packets,
    rst_seq,
)
from whyreset.lab.netns import Topology, Verdict, parse_net_counters, plan_topology

SRC = Path(__file__).resolve().parents[2] / "src"


# ------------------------------------------------------------------------------------------------------------
# Pure: addressing plan, counters, segments


def test_plan_is_a_function_of_the_seed_and_stays_inside_lab_ranges() -> None:
    first, again, other = plan_topology(5, pid=4242), plan_topology(5, pid=4242), plan_topology(6, pid=4242)
    assert first == again
    assert first != other
    for host in first.hosts:
        for iface in host.interfaces:
            assert iface.v4.ip.is_private and str(iface.v4.ip).startswith("10.")
            assert iface.v6.ip in ipaddress.ip_network("2001:db8::/32")
            assert len(iface.name) <= 15
        assert host.netns.startswith(netns.NAME_PREFIX)
    ttls = {host.ttl for host in first.hosts}
    assert len(ttls) == 3, "client, server and router must be told apart by TTL"
    assert first.client.interfaces[0].v4.network == first.router.interfaces[0].v4.network
    assert first.server.interfaces[0].v4.network == first.router.interfaces[1].v4.network


def test_parse_net_counters_reads_header_value_pairs() -> None:
    text = "TcpExt: SyncookiesSent TCPAbortOnClose\nTcpExt: 1 7\nIcmp: InMsgs InDestUnreachs\nIcmp: 3 2\n"
    assert parse_net_counters(text) == {"SyncookiesSent": 1, "TCPAbortOnClose": 7, "Icmp.InMsgs": 3,
                                        "Icmp.InDestUnreachs": 2}  # fmt: skip
    assert parse_net_counters("Icmp6InDestUnreachs  4\nIp6InReceives 9\n", snmp6=True) == {
        "Icmp6InDestUnreachs": 4,
        "Ip6InReceives": 9,
    }


def test_verdict_targets() -> None:
    assert Verdict.DROP.target(False) == ["-j", "DROP"]
    assert Verdict.ADMIN_PROHIBITED.target(True)[-1] == "icmp6-adm-prohibited"
    assert Verdict.TCP_RESET.target(False)[-1] == "tcp-reset"


def _ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.parametrize(("src", "dst"), [("10.1.2.3", "10.1.3.4"), ("2001:db8::1", "2001:db8:1::2")])
def test_built_segments_parse_back_with_valid_checksums(src: str, dst: str) -> None:
    segment = Segment(Endpoint(src, 4000), Endpoint(dst, 80), 2**32 - 5, 77, RST | ACK, 0, 201, 9, b"bye")
    packet = segment.packet()
    parsed = parse_ip_tcp(packet)
    assert parsed is not None
    assert (parsed.src, parsed.dst, parsed.seq, parsed.ack, parsed.flags, parsed.ttl, parsed.payload) == (
        segment.src, segment.dst, segment.seq, 77, RST | ACK, 201, b"bye",
    )  # fmt: skip
    ip = ipaddress
    if segment.v6:
        tcp = packet[40:]
        pseudo = ip.ip_address(src).packed + ip.ip_address(dst).packed + struct.pack("!I3xB", len(tcp), 6)
    else:
        assert _ones_complement_sum(packet[:20]) == 0xFFFF  # IPv4 header checksum
        tcp = packet[20:]
        pseudo = ip.ip_address(src).packed + ip.ip_address(dst).packed + struct.pack("!xBH", 6, len(tcp))
    assert _ones_complement_sum(pseudo + tcp) == 0xFFFF  # TCP checksum


def _handshake_table() -> tuple[FlowTable, Endpoint, Endpoint]:
    client, server = Endpoint("10.0.0.1", 5555), Endpoint("10.0.1.1", 80)
    table = FlowTable()
    wscale7 = b"\x01\x03\x03\x07"
    table.feed(Segment(client, server, 1000, 0, SYN, 64240, options=wscale7))
    table.feed(Segment(server, client, 5000, 1001, SYN | ACK, 65160, options=wscale7))
    table.feed(Segment(client, server, 1001, 5001, ACK, 500))
    table.feed(Segment(client, server, 1001, 5001, PSH | ACK, 500, payload=b"x" * 100))
    table.feed(Segment(server, client, 5001, 1101, PSH | ACK, 400, payload=b"y" * 20))
    table.feed(Segment(client, server, 1101, 5021, ACK, 500))
    table.feed(Segment(server, client, 5021, 1101, RST, 0))  # forged or not, it changes no state
    return table, client, server


def test_flow_table_follows_sequence_numbers_and_scaled_windows() -> None:
    table, client, server = _handshake_table()
    flow = table.get(client, server)
    assert flow is not None
    assert flow.receiver_next(client) == 5021
    assert flow.receiver_next(server) == 1101
    assert flow.receiver_window(client) == 500 << 7
    assert flow.sender_next(server) == 5021


def test_rst_placements_relative_to_the_receiver_window() -> None:
    table, client, _server = _handshake_table()
    flow = table.get(client, _server)
    assert flow is not None
    window = 500 << 7
    assert rst_seq(flow, client, RstPlacement.EXACT) == 5021
    assert 5021 < rst_seq(flow, client, RstPlacement.IN_WINDOW, offset=10) < 5021 + window
    assert rst_seq(flow, client, RstPlacement.IN_WINDOW, offset=10**9) == 5021 + window - 1
    outside = rst_seq(flow, client, RstPlacement.OUT_OF_WINDOW, offset=3)
    assert (outside - 5021) % 2**32 >= window
    forged = forge_rst(flow, client, RstPlacement.EXACT, ttl=200)
    assert (forged.src, forged.dst, forged.flags & (RST | FIN), forged.ttl) == (_server, client, RST, 200)


# ------------------------------------------------------------------------------------------------------------
# Root: real namespaces

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or bool(netns.missing_tools()),
    reason=f"needs root and {', '.join(netns.missing_tools()) or 'ip/iptables/tcpdump'}",
)


def _our_leftovers(pid: int) -> list[str]:
    return [name for name in netns.list_namespaces() if name.startswith(f"{netns.NAME_PREFIX}{pid}n")]


def _root_state() -> tuple[str, str, str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = "\n".join(line.split(":")[1].strip() for line in links.splitlines())
    rules4 = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=False).stdout
    rules6 = subprocess.run(["ip6tables", "-S"], capture_output=True, text=True, check=False).stdout
    return names, rules4, rules6


@pytest.mark.root
@needs_root
def test_topology_forwards_both_families_with_per_host_ttl_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before = _root_state()
    with Topology(seed=21) as topo:
        assert set(_our_leftovers(os.getpid())) == {host.netns for host in topo.hosts}
        topo.filter_port(Verdict.TCP_RESET, 9, v6=False)  # a rule inside the router, gone with it
        for family in (socket.AF_INET, socket.AF_INET6):
            listener = topo.socket(topo.server, family)
            listener.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 7000))
            listener.listen()
            client = topo.socket(topo.client, family)
            client.settimeout(2)
            started = time.monotonic()
            client.connect((topo.server.addr(family), 7000))
            assert time.monotonic() - started < 0.5, "no neighbour-discovery stall on the first packet"
            accepted, peer = listener.accept()
            assert peer[0] == topo.client.addr(family)
            for sock in (client, accepted, listener):
                sock.close()
        ttl = topo.sysctls(topo.server, ["net.ipv4.ip_default_ttl", "net.ipv6.conf.all.hop_limit"])
        assert ttl == {"net.ipv4.ip_default_ttl": str(topo.server.ttl),
                       "net.ipv6.conf.all.hop_limit": str(topo.server.ttl)}  # fmt: skip
        assert topo.sysctls(topo.router, ["net.ipv4.ip_forward"])["net.ipv4.ip_forward"] == "1"
        assert "ActiveOpens" in topo.counters(topo.client)
    assert _our_leftovers(os.getpid()) == []
    assert _root_state() == before, "links or root iptables rules changed"


@pytest.mark.root
@needs_root
def test_reboot_replaces_the_host_with_the_same_addresses() -> None:
    with Topology(seed=22) as topo:
        listener = topo.socket(topo.server)
        listener.bind(("0.0.0.0", 7001))
        listener.listen()
        client = topo.socket(topo.client)
        client.settimeout(2)
        client.connect((topo.server.v4, 7001))
        old_server, _ = listener.accept()
        topo.reboot("server")
        client.send(b"anyone there?")
        with pytest.raises(ConnectionResetError):
            client.recv(100)  # the new stack knows no connection: RST
        fresh = topo.socket(topo.server)
        fresh.bind((topo.server.v4, 7001))  # same address exists in the new namespace
        fresh.close()
        for sock in (client, old_server, listener):
            sock.close()
    assert _our_leftovers(os.getpid()) == []


@pytest.mark.root
@needs_root
def test_sigterm_tears_the_topology_down_and_cleanup_stale_removes_killed_runs(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from whyreset.lab.netns import Topology
        topo = Topology(seed=23).up()
        print(" ".join(host.netns for host in topo.hosts), flush=True)
        time.sleep(30)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    for kill_with in (signal.SIGTERM, signal.SIGKILL):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        names = child.stdout.readline().split()
        assert len(names) == 3 and all(name in netns.list_namespaces() for name in names)
        child.send_signal(kill_with)
        child.wait(timeout=10)
        if kill_with == signal.SIGTERM:
            assert not set(names) & set(netns.list_namespaces()), "SIGTERM must unwind the cleanup"
        else:
            assert set(names) <= set(netns.list_namespaces()), "SIGKILL leaves them (nothing can run)"
            removed = netns.cleanup_stale()
            assert set(names) <= set(removed)
            assert not set(names) & set(netns.list_namespaces())


@pytest.mark.root
@needs_root
def test_an_exact_rst_forged_from_a_pcap_resets_and_an_out_of_window_one_does_not(tmp_path: Path) -> None:
    with Topology(seed=24) as topo:
        capture = topo.capture(topo.router, tmp_path / "router.pcap", bpf="tcp")
        listener = topo.socket(topo.server)
        listener.bind(("0.0.0.0", 7002))
        listener.listen()
        client = topo.socket(topo.client)
        client.settimeout(2)
        client.connect((topo.server.v4, 7002))
        accepted, _ = listener.accept()
        accepted.settimeout(2)
        client.sendall(b"q" * 300)
        accepted.recv(1000)
        accepted.sendall(b"r" * 700)
        client.recv(1000)
        time.sleep(0.1)
        capture.stop()
        flow = flow_table_from_pcap(tmp_path / "router.pcap").get(
            Endpoint(topo.client.v4, client.getsockname()[1]), Endpoint(topo.server.v4, 7002)
        )
        assert flow is not None
        raw = topo.socket(topo.router, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        injector = RawInjector(raw_v4=raw)
        # The capture ended before these: the server's RCV.NXT moves on, the client's (nothing more from the
        # server) stays where the pcap left it.
        injector.send(forge_rst(flow, flow.a, RstPlacement.OUT_OF_WINDOW, ttl=topo.router.ttl))
        client.sendall(b"still here")
        assert accepted.recv(100) == b"still here"
        injector.send(forge_rst(flow, flow.a, RstPlacement.EXACT, ttl=topo.router.ttl))
        with pytest.raises(ConnectionResetError):
            client.recv(100)
        injector.close()
        for sock in (client, accepted, listener):
            sock.close()


@pytest.mark.parametrize(("magic", "endian", "linktype", "header"), [
    (0xA1B2C3D4, "<", 1, b"\x00" * 12 + b"\x08\x00"),  # microseconds, Ethernet
    (0xA1B23C4D, ">", 113, b"\x00" * 14 + b"\x08\x00"),  # nanoseconds, big-endian, Linux cooked
    (0xA1B2C3D4, "<", 101, b""),  # raw IP
])  # fmt: skip
def test_read_pcap_packets_handles_the_classic_variants(
    tmp_path: Path, magic: int, endian: str, linktype: int, header: bytes
) -> None:
    segment = Segment(Endpoint("10.9.8.7", 1234), Endpoint("10.9.9.1", 443), 7, 9, SYN, 1000, 61)
    record = header + segment.packet()
    data = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    data += struct.pack(endian + "IIII", 1_700_000_000, 250, len(record), len(record)) + record
    path = tmp_path / "one.pcap"
    path.write_bytes(data)
    ((ts_ns, packet),) = read_pcap_packets(path)
    assert ts_ns == 1_700_000_000 * 10**9 + (250 if magic == 0xA1B23C4D else 250_000)
    parsed = parse_ip_tcp(packet)
    assert parsed is not None and (parsed.src, parsed.flags, parsed.ttl) == (segment.src, SYN, 61)
