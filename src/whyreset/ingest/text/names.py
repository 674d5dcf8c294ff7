"""Hosts and ports as tcpdump prints them, turned back into addresses and port numbers.

Without ``-n`` tcpdump prints resolved host names (``bong.server``) and service names (``ssh``). Text cannot
say which address a name stood for, so a name becomes a *synthetic* address derived from a hash of the name:
stable for a given name in every run, distinct from every real address the capture can hold, and reported in
``report.limits``.

- IPv4 packets: 240.0.0.0/4 ("reserved for future use", RFC 1112 4; never routed), 28 bits of SHA-256 of the
  name.
- IPv6 packets: fd00::/8 unique-local space with 120 bits of the hash (RFC 4193 picks such prefixes at random
  too).
- ``localhost`` is 127.0.0.1 / ::1: that name has one meaning.

Unknown service names become a synthetic port in 49152..65535 from the same kind of hash (stable per name),
also reported. Collisions between two names in one read are resolved by rehashing with a counter, so distinct
names never merge into one flow.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from whyreset.ingest.text.services import TCP_SERVICE_PORTS
from whyreset.model import IPV4_MAPPED_LO_PREFIX

_LOCALHOST = {4: (0, IPV4_MAPPED_LO_PREFIX | 0x7F000001), 6: (0, 1)}
_SYNTH_V4_PREFIX = 0xF0000000
_SYNTH_V6_PREFIX = 0xFD << 120
_SYNTH_PORT_BASE = 49152
_SYNTH_PORT_SPAN = 65536 - _SYNTH_PORT_BASE


def _hash_int(name: str, salt: int) -> int:
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


@dataclass(slots=True)
class NameBook:
    """Resolves the host and port strings of one read, remembering what it had to invent."""

    limits: list[str]
    """The read's ``report.limits``: each invented address or port is noted there once."""
    _hosts: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    _taken_hosts: set[tuple[int, int]] = field(default_factory=set)
    _ports: dict[str, int] = field(default_factory=dict)
    _taken_ports: set[int] = field(default_factory=set)

    def host(self, text: str, ip_version: int) -> tuple[int, int]:
        """The (hi, lo) halves for an address or host name printed by tcpdump."""
        key = (text, ip_version)
        known = self._hosts.get(key)
        if known is not None:
            return known
        halves = self._literal(text)
        if halves is None:
            halves = self._synthetic_host(text, ip_version)
        self._hosts[key] = halves
        return halves

    def port(self, text: str) -> int:
        """The port number for a decimal port or a service name."""
        if text.isdigit():
            value = int(text)
            if value > 65535:
                raise ValueError(f"port {value} out of range")
            return value
        known = self._ports.get(text)
        if known is not None:
            return known
        listed = TCP_SERVICE_PORTS.get(text)
        value = listed if listed is not None else self._synthetic_port(text)
        self._ports[text] = value
        return value

    @staticmethod
    def check_port(text: str) -> None:
        """Raise ValueError unless ``text`` can be a port as tcpdump prints one (digits or a service name)."""
        if text.isdigit():
            if int(text) > 65535:
                raise ValueError(f"port {text} out of range")
        elif not text or not (text[0].isalpha() and text.replace("-", "").replace("_", "").isalnum()):
            raise ValueError(f"{text!r} is not a port or service name")

    @staticmethod
    def _literal(text: str) -> tuple[int, int] | None:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return None
        value = int(ip) | IPV4_MAPPED_LO_PREFIX if ip.version == 4 else int(ip)
        return value >> 64, value & 0xFFFFFFFFFFFFFFFF

    def _synthetic_host(self, name: str, ip_version: int) -> tuple[int, int]:
        if name in ("localhost", "ip6-localhost"):
            return _LOCALHOST[ip_version]
        salt = 0
        while True:
            digest = _hash_int(name, salt)
            if ip_version == 4:
                value = IPV4_MAPPED_LO_PREFIX | _SYNTH_V4_PREFIX | (digest & 0x0FFFFFFF)
            else:
                value = _SYNTH_V6_PREFIX | (digest & ((1 << 120) - 1))
            halves = (value >> 64, value & 0xFFFFFFFFFFFFFFFF)
            if halves not in self._taken_hosts:
                break
            salt += 1
        self._taken_hosts.add(halves)
        shown = ipaddress.IPv4Address(value & 0xFFFFFFFF) if ip_version == 4 else ipaddress.IPv6Address(value)
        self.limits.append(
            f"host name {name!r} carries no address in the text: synthetic address {shown} stands for it"
        )
        return halves

    def _synthetic_port(self, name: str) -> int:
        salt = 0
        while True:
            value = _SYNTH_PORT_BASE + _hash_int(name, salt) % _SYNTH_PORT_SPAN
            if value not in self._taken_ports and value not in TCP_SERVICE_PORTS.values():
                break
            salt += 1
        self._taken_ports.add(value)
        self.limits.append(
            f"service name {name!r} is not in the service table: synthetic port {value} stands for it"
        )
        return value
