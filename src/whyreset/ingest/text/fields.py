"""One packet record of tcpdump text, parsed into fields.

Layers, outside in, as tcpdump prints them:

1. ``-e`` link header: ``MAC > MAC, ethertype IPv4 (0x0800), length 74: `` (Ethernet), `` In MAC (oui ..)
   ethertype IPv4 (0x0800), length 80: `` (Linux cooked), with ``vlan N, p N, ethertype ..., `` for 802.1Q.
   The first ``length N`` is the frame length. With ``-e`` tcpdump drops the ``IP`` word: the ethertype says
   it.
2. ``IP`` / ``IP6``, then under ``-v`` the IP header in parentheses: ``(tos 0x0, ttl 64, id 1, offset 0, flags
   [DF], proto TCP (6), length 60)`` or ``(flowlabel 0x1, hlim 64, next-header TCP (6) payload length: 40)``.
3. ``src.port > dst.port: `` then the transport. TCP in tcpdump 4.x: ``Flags [S.], cksum 0x1 (correct), seq
   1:5, ack 1, win 5, urg 1, options [...], length 4``. TCP in tcpdump 3.x: ``S [tcp sum ok] 1:1(0) ack 1 win
   5 <mss 1460,nop> (DF) (ttl 128, id 1, len 48)``, where the ACK bit shows only as ``ack N`` and URG as ``urg
   N``.

Also read: ``tcpdump -i any``'s ``eth0  In  `` prefix, ``-e`` on raw-IP links (``ip: ``), tcpdump 4.0's
``S, cksum 0x1 (correct), 1:1(0) ...``, the RST payload text of ``-v`` (``[RST text]``), and ICMP errors
with the TCP segment they quote (under ``-v``). ``-q`` lines carry no TCP fields: they are bad lines, with a
reason.

Sequence and SACK numbers are returned as printed (maybe relative); `whyreset.ingest.text.sequence` restores
them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from whyreset.ingest.text.names import NameBook
from whyreset.ingest.text.records import STAMPED_START_RE, Record
from whyreset.ingest.text.timestamps import TimeKind, clock_to_ns, date_to_ns, epoch_to_ns
from whyreset.model import ACK, CWR, ECE, FIN, NS, PSH, RST, SYN, URG

_MODERN_FLAG_BITS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, ".": ACK, "U": URG, "E": ECE, "W": CWR, "e": NS}
_OLD_FLAG_BITS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "E": ECE, "W": CWR, ".": 0}

_LINK_RE = re.compile(
    r"(?P<link>.*?ethertype (?P<etype>[^,(]+?)(?: \(0x[0-9a-fA-F]+\))?, length (?P<flen>\d+): )"
    r"(?:vlan \d+, p \d+, ethertype (?P<etype2>[^,(]+?)(?: \(0x[0-9a-fA-F]+\))?, )*"
)
_ENDPOINTS_RE = re.compile(r"(?P<src>\S+) > (?P<dst>\S+?):(?:\s|$)")
MODERN_TCP_RE = re.compile(
    r"Flags \[(?P<flags>[^\]]*)\]"
    r"(?:, cksum 0x[0-9a-fA-F]+ \((?P<cksum>[^)]*)\))?"
    r"(?:, seq (?P<seq>\d+)(?::(?P<seq_end>\d+))?)?"
    r"(?:, ack (?P<ack>\d+))?"
    r", win (?P<win>\d+)"
    r"(?:, urg (?P<urg>\d+))?"
    r"(?:, options \[(?:nop,nop,TS val (?P<ts_val>\d+) ecr (?P<ts_ecr>\d+)|(?P<opts>.*?))\])?"
    r", length (?P<len>\d+)"
)
_INTERFACE_PATTERN = r"\S+ +(?:In|Out|B|M|P) +"
"""``tcpdump -i any`` (Linux cooked v2) prints the interface and direction first: ``eth0  In  IP ...``."""
_INTERFACE_RE = re.compile(_INTERFACE_PATTERN)
_ONE_LINE_TCP_RE = re.compile(
    f"(?:{_INTERFACE_PATTERN})?" + r"(?P<ip>IP6?) (?P<src>[^\s(]\S*) > (?P<dst>\S+?): " + MODERN_TCP_RE.pattern
)
OLD_TCP_RE = re.compile(
    r"(?P<flags>[SFRPWEU]+|\.)"
    r"(?: \[(?P<cksum>[^\]]*)\]|, cksum 0x[0-9a-fA-F]+ \((?P<cksum4>[^()]*(?:\([^)]*\))?)\),)?"
    r"(?: (?P<seq>\d+):(?P<seq_end>\d+)\((?P<len>\d+)\))?"
    r"(?: ack (?P<ack>\d+))?"
    r" win (?P<win>\d+)"
    r"(?: urg (?P<urg>\d+))?"
    r"(?: <(?P<opts>[^>]*)>)?"
    r"(?P<trailer>.*)$"
)
_QUIET_TCP_RE = re.compile(r"tcp \d+$")
_RST_TEXT_RE = re.compile(r" \[!?RST(?P<cut>\+)? (?P<text>.*)\]")
"""tcpdump -v's print of an RST payload (print_tcp_rst_data): at most 30 bytes, ``+`` when cut."""
_OLD_TCP_HINT_RE = re.compile(r"(?:[SFRPWEU]+|\.)(?: \[|, cksum | \d+:\d+\(| ack \d| win \d)")
_TTL_RE = re.compile(r"\b(?:ttl|hlim)\s+(\d+)")
_ID_RE = re.compile(r"\bid (\d+)")
_OFFSET_RE = re.compile(r"\boffset (\d+)")
_IP_FLAGS_RE = re.compile(r"\bflags \[([^\]]*)\]")
_PROTO_RE = re.compile(r"\b(?:proto:?|next-header) (\S+) \((\d+)\)")
_V4_LENGTH_RE = re.compile(r"\b(?:length:?|len) (\d+)")
_V6_PAYLOAD_RE = re.compile(r"payload length:? (\d+)")
_SACK_BLOCK_RE = re.compile(r"\{(\d+):(\d+)\}")
_OPT_NUMBER_RE = re.compile(r"\d+")

# Bytes each known option takes in the header, to estimate the header length when nothing else says it.
_OPTION_SIZES = {"mss": 4, "wscale": 3, "sackOK": 2, "TS": 10, "timestamp": 10, "nop": 1, "eol": 1, "md5": 18}


@dataclass(slots=True)
class TcpFields:
    """The fields of one TCP segment line, with sequence numbers as printed."""

    line_no: int
    time_kind: TimeKind
    time_value: int
    ip_version: int
    src: str
    dst: str
    sport: str
    dport: str
    flags: int
    seq: int | None
    """Printed sequence number; None when tcpdump did not print one (pure ACK without -vv)."""
    ack: int | None
    window: int
    payload_len: int
    ttl: int | None = None
    ip_id: int = 0
    ip_df: bool = False
    ip_len: int | None = None
    """Whole IP packet length from the -v header (IPv6: payload length + 40)."""
    frame_len: int | None = None
    """Frame length from the -e link header."""
    fragment: bool = False
    mss: int = 0
    wscale: int = -1
    sack_perm: bool = False
    has_ts: bool = False
    ts_val: int = 0
    ts_ecr: int = 0
    sack: list[tuple[int, int]] = field(default_factory=list)
    options_len: int = 0
    """Estimated length of the options in bytes (a multiple of 4)."""
    bad_checksum: bool = False
    quoted: bool = False
    """Quoted inside an ICMP error: its seq is restored like the others but never inferred."""
    run: int = 0
    """Which tcpdump run printed it: banners separate runs, and each run has its own relative bases."""
    rst_text: bytes | None = None
    """The RST payload tcpdump -v prints as ``[RST text]`` (at most 30 bytes: tcpdump cuts longer ones)."""
    rst_text_cut: bool = False


@dataclass(frozen=True, slots=True)
class NotTcp:
    """A packet that carries no TCP segment."""

    ip: bool
    """True for IP packets that are not TCP (UDP, ICMP...), False for non-IP frames (ARP, LLDP...)."""
    fragment: bool = False
    unquoted_icmp: bool = False
    """An ICMP error printed without its quoted segment or a destination port (a host or network unreachable
    without -v, an ICMPv6 prohibited): it may concern TCP, and cannot be linked to a connection."""


@dataclass(frozen=True, slots=True)
class IcmpFields:
    """An ICMP error line; the quoted segment's fields are set when the text carries them (-v)."""

    line_no: int
    time_kind: TimeKind
    time_value: int
    ip_version: int
    reporter: str
    ttl: int
    icmp_type: int
    icmp_code: int
    quoted: TcpFields | None


@dataclass(frozen=True, slots=True)
class BadLine:
    """A record that looks like a packet but cannot be parsed."""

    line_no: int
    reason: str


ParsedRecord = TcpFields | NotTcp | IcmpFields | BadLine


class _Unparsable(Exception):
    """Internal: the record looked like TCP but a field could not be read."""


def parse_record(record: Record) -> ParsedRecord:
    """Parse one record; a wrapped record is tried with wraps joined by a space, then with no space."""
    if not record.lines:
        fast = _ONE_LINE_TCP_RE.match(record.start["rest"])
        if fast is not None:
            try:
                return _one_line_tcp(record, fast)
            except (_Unparsable, ValueError) as exc:
                return BadLine(record.line_no, str(exc) or type(exc).__name__)
    result = _parse_text(record, record.text(" "))
    if isinstance(result, BadLine) and record.has_wraps():
        retry = _parse_text(record, record.text(""))
        if not isinstance(retry, BadLine):
            return retry
    return result


def _parse_time(record: Record) -> tuple[TimeKind, int]:
    start = record.start
    if start.re is not STAMPED_START_RE:
        return TimeKind.NONE, 0  # a tcpdump -t line
    clock = start["clock"]
    if clock:
        return TimeKind.CLOCK, clock_to_ns(clock)
    if start["date"]:
        return TimeKind.DATE, _in_int64(date_to_ns(start["date"], start["dclock"]))
    if start["epoch"]:
        return TimeKind.EPOCH, _in_int64(epoch_to_ns(start["epoch"]))
    return TimeKind.NONE, 0


def _in_int64(ns: int) -> int:
    if not 0 <= ns < 1 << 62:
        raise _Unparsable(f"timestamp {ns} ns is out of range")
    return ns


def _parse_text(record: Record, text: str) -> ParsedRecord:
    try:
        return _parse_layers(record, text)
    except (_Unparsable, ValueError) as exc:
        return BadLine(record.line_no, str(exc) or type(exc).__name__)


def _parse_layers(record: Record, text: str) -> ParsedRecord:
    ip_version = 0
    frame_len: int | None = None
    pos = 0
    fast = _ONE_LINE_TCP_RE.match(text)
    if fast is not None:
        return _one_line_tcp(record, fast)
    if text.startswith(("ip: ", "ip6: ")):
        # -e on a raw-IP link (DLT_RAW) prints the family in lower case instead of a MAC header.
        ip_version = 6 if text.startswith("ip6") else 4
        return _parse_network(record, text, text.index(" ") + 1, ip_version, None)
    interface = _INTERFACE_RE.match(text)
    if interface is not None and text.startswith(("IP ", "IP6 "), interface.end()):
        return _parse_network(record, text, interface.end(), 0, None)
    if not text.startswith(("IP ", "IP6 ")):
        link = _LINK_RE.match(text)
        if link is None:
            # tcpdump 3.x printed no "IP" word: "src.port > dst.port: S ..." is IP all the same.
            if _ENDPOINTS_RE.match(text) is None:
                return NotTcp(ip=False)
            return _parse_network(record, text, 0, 0, None)
        ethertype = link["etype2"] or link["etype"]
        if ethertype not in ("IPv4", "IPv6"):
            return NotTcp(ip=False)
        ip_version = 4 if ethertype == "IPv4" else 6
        frame_len = _u32(link["flen"], "frame length")
        pos = link.end()
    return _parse_network(record, text, pos, ip_version, frame_len)


def _parse_network(record: Record, text: str, pos: int, ip_version: int, frame_len: int | None) -> ParsedRecord:
    if text.startswith("IP6 ", pos):
        ip_version, pos = 6, pos + 4
    elif text.startswith("IP ", pos):
        ip_version, pos = ip_version or 4, pos + 3
    header = ""
    if text.startswith("(", pos):
        end = _matching_paren(text, pos)
        header, pos = text[pos + 1 : end], end + 1
        while text.startswith(" ", pos):
            pos += 1
    endpoints = _ENDPOINTS_RE.match(text, pos)
    if endpoints is None:
        if "Flags [" in text:
            raise _Unparsable("no 'source > destination:' before the TCP flags")
        return NotTcp(ip=ip_version != 0)
    body = text[endpoints.end() :]
    src, dst = endpoints["src"], endpoints["dst"]
    if not ip_version:
        ip_version = 6 if src.count(":") >= 2 else 4
    proto = _PROTO_RE.search(header) if header else None
    fragment = bool(header) and _is_fragment(header)
    if proto is not None and proto[2] != "6":
        if proto[2] in ("1", "58"):
            return _parse_icmp(record, ip_version, header, src, dst, body)
        return NotTcp(ip=True, fragment=fragment)
    time_kind, time_value = _parse_time(record)
    if body.startswith("Flags ["):
        segment = _parse_modern_tcp(record.line_no, body)
    elif _OLD_TCP_HINT_RE.match(body):
        segment = _parse_old_tcp(record.line_no, body)
    elif _QUIET_TCP_RE.match(body):
        raise _Unparsable("tcpdump -q prints no TCP flags or sequence numbers")
    elif body.startswith(("ICMP ", "ICMP6")):
        return _parse_icmp(record, ip_version, header, src, dst, body)
    else:
        return NotTcp(ip=True, fragment=fragment)
    segment.time_kind, segment.time_value = time_kind, time_value
    segment.ip_version, segment.frame_len, segment.fragment = ip_version, frame_len, fragment
    segment.src, segment.sport = _split_endpoint(src)
    segment.dst, segment.dport = _split_endpoint(dst)
    if header:
        _apply_ip_header(segment, header, ip_version)
    return segment


def _one_line_tcp(record: Record, match: re.Match[str]) -> TcpFields:
    """Fast path for the default output: ``IP[6] src.port > dst.port: Flags [..] ...`` on one line."""
    segment = _modern_segment(record.line_no, match)
    segment.time_kind, segment.time_value = _parse_time(record)
    segment.ip_version = 6 if match["ip"] == "IP6" else 4
    segment.src, segment.sport = _split_endpoint(match["src"])
    segment.dst, segment.dport = _split_endpoint(match["dst"])
    return segment


def _matching_paren(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    raise _Unparsable("unbalanced parentheses in the IP header")


def _is_fragment(header: str) -> bool:
    offset = _OFFSET_RE.search(header)
    flags = _IP_FLAGS_RE.search(header)
    return (offset is not None and offset[1] != "0") or (flags is not None and "+" in flags[1])


def _split_endpoint(text: str) -> tuple[str, str]:
    host, dot, port = text.rpartition(".")
    if not dot or not host or not port:
        raise _Unparsable(f"endpoint {text!r} has no port")
    if not (port.isdigit() and len(port) < 5):  # four digits or fewer cannot be out of range
        NameBook.check_port(port)
    return host, port


def _new_segment(line_no: int, flags: int, match: re.Match[str]) -> TcpFields:
    seq, ack, window, length, checksum = match.group("seq", "ack", "win", "len", "cksum")
    segment = TcpFields(
        line_no,
        TimeKind.NONE,
        0,
        0,
        "",
        "",
        "",
        "",
        flags,
        _u32(seq, "seq") if seq is not None else None,
        _u32(ack, "ack") if ack is not None else None,
        _u16(window, "window"),
        _u32(length, "length") if length is not None else 0,
    )
    if checksum and ("incorrect" in checksum or "bad" in checksum):
        segment.bad_checksum = True
    return segment


def _u32(text: str, what: str) -> int:
    value = int(text)
    if value > 0xFFFFFFFF:
        raise _Unparsable(f"{what} {value} does not fit 32 bits")
    return value


def _u16(text: str, what: str) -> int:
    value = int(text)
    if value > 0xFFFF:
        raise _Unparsable(f"{what} {value} does not fit 16 bits")
    return value


def _parse_modern_tcp(line_no: int, body: str) -> TcpFields:
    match = MODERN_TCP_RE.match(body)
    if match is None:
        raise _Unparsable("TCP fields do not read as 'Flags [..], seq, ack, win, options [..], length N'")
    return _modern_segment(line_no, match)


_MODERN_FLAGS_SEEN: dict[str, int] = {}
"""Printed flag strings already decoded (a few dozen at most: the string is a set of letters)."""


def _modern_flag_bits(printed: str) -> int:
    if printed == "none":
        return 0
    flags = 0
    for char in printed:
        bit = _MODERN_FLAG_BITS.get(char)
        if bit is None:
            raise _Unparsable(f"unknown TCP flag {char!r}")
        flags |= bit
    return flags


def _modern_segment(line_no: int, match: re.Match[str]) -> TcpFields:
    printed = match["flags"]
    flags = _MODERN_FLAGS_SEEN.get(printed)
    if flags is None:
        flags = _modern_flag_bits(printed)
        _MODERN_FLAGS_SEEN[printed] = flags
    segment = _new_segment(line_no, flags, match)
    ts_val, ts_ecr, options = match.group("ts_val", "ts_ecr", "opts")
    if ts_val is not None:
        # What Linux puts on nearly every segment after the handshake, read by the line's own regex.
        segment.has_ts, segment.options_len = True, 12
        segment.ts_val, segment.ts_ecr = int(ts_val) & 0xFFFFFFFF, int(ts_ecr) & 0xFFFFFFFF
    elif options:
        _apply_options(segment, options)
    if flags & RST and segment.payload_len:
        rst_text = _RST_TEXT_RE.match(match.string, match.end())
        if rst_text is not None:
            segment.rst_text = rst_text["text"].encode("utf-8", "replace")
            segment.rst_text_cut = bool(rst_text["cut"])
    return segment


def _parse_old_tcp(line_no: int, body: str) -> TcpFields:
    match = OLD_TCP_RE.match(body)
    if match is None:
        raise _Unparsable("tcpdump 3.x TCP fields do not read as 'FLAGS seq:end(len) ack N win N <options>'")
    flags = 0
    for char in match["flags"]:
        flags |= _OLD_FLAG_BITS[char]
    if match["ack"] is not None:
        flags |= ACK
    if match["urg"] is not None:
        flags |= URG
    segment = _new_segment(line_no, flags, match)
    if match["cksum4"] and "incorrect" in match["cksum4"]:
        segment.bad_checksum = True  # tcpdump 4.0's "S, cksum 0x1 (incorrect (-> 0x2)), 1:1(0) ..."
    if match["opts"]:
        _apply_options(segment, match["opts"])
    trailer = match["trailer"]
    if "(DF)" in trailer:
        segment.ip_df = True
    ttl = _TTL_RE.search(trailer)
    if ttl is not None:
        segment.ttl = int(ttl[1])
        ip_id = _ID_RE.search(trailer)
        length = _V4_LENGTH_RE.search(trailer)
        segment.ip_id = _u32(ip_id[1], "IP id") if ip_id else 0
        segment.ip_len = _u16(length[1], "IP length") if length else None
    return segment


def _split_options(text: str) -> list[str]:
    """Split tcpdump's option list on commas that are not inside ``{...}`` (mptcp prints commas there)."""
    if "{" not in text:
        return [item.strip() for item in text.split(",")]
    items, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(text[start:index].strip())
            start = index + 1
    items.append(text[start:].strip())
    return items


def _apply_options(segment: TcpFields, text: str) -> None:
    size = 0
    for item in _split_options(text):
        name, _, rest = item.partition(" ")
        if name == "mss":
            segment.mss = _u16(rest, "mss")
        elif name == "wscale":
            segment.wscale = min(_u32(rest, "wscale"), 127)
        elif name == "sackOK":
            segment.sack_perm = True
        elif name in ("TS", "timestamp"):
            numbers = _OPT_NUMBER_RE.findall(rest)
            if len(numbers) != 2:
                raise _Unparsable(f"timestamp option {item!r} lacks val/ecr")
            segment.has_ts = True
            segment.ts_val, segment.ts_ecr = int(numbers[0]) & 0xFFFFFFFF, int(numbers[1]) & 0xFFFFFFFF
        elif name == "sack":
            segment.sack = [
                (_u32(left, "SACK edge"), _u32(right, "SACK edge")) for left, right in _SACK_BLOCK_RE.findall(rest)
            ]
            size += 2 + 8 * len(segment.sack)
            continue
        size += _OPTION_SIZES.get(name, 2)
    segment.options_len = (size + 3) // 4 * 4


def _apply_ip_header(segment: TcpFields, header: str, ip_version: int) -> None:
    ttl = _TTL_RE.search(header)
    if ttl is not None:
        segment.ttl = int(ttl[1])
    if ip_version == 6:
        payload = _V6_PAYLOAD_RE.search(header)
        segment.ip_len = _u16(payload[1], "IPv6 payload length") + 40 if payload else None
        return
    ip_id = _ID_RE.search(header)
    flags = _IP_FLAGS_RE.search(header)
    length = _V4_LENGTH_RE.search(header)
    segment.ip_id = _u32(ip_id[1], "IP id") if ip_id else 0
    segment.ip_df = flags is not None and "DF" in flags[1]
    segment.ip_len = _u16(length[1], "IP length") if length else None


# ICMP errors: tcpdump's wording -> (type, code), IPv4 then ICMPv6.
_ICMP4_FORMS: tuple[tuple[re.Pattern[str], int, int], ...] = (
    (re.compile(r"ICMP (?P<addr>\S+) tcp port (?P<port>\S+) unreachable"), 3, 3),
    (re.compile(r"ICMP host (?P<addr>\S+) unreachable - admin prohibited filter"), 3, 13),
    (re.compile(r"ICMP host (?P<addr>\S+) unreachable - admin prohibited"), 3, 10),
    (re.compile(r"ICMP net (?P<addr>\S+) unreachable - admin prohibited"), 3, 9),
    (re.compile(r"ICMP host (?P<addr>\S+) unreachable"), 3, 1),
    (re.compile(r"ICMP net (?P<addr>\S+) unreachable"), 3, 0),
    (re.compile(r"ICMP (?P<addr>\S+) protocol \d+ unreachable"), 3, 2),
    (re.compile(r"ICMP (?P<addr>\S+) unreachable - need to frag"), 3, 4),
    (re.compile(r"ICMP time exceeded in-transit"), 11, 0),
)
_ICMP6_CODES = {
    "unreachable route": 0,
    "unreachable prohibited": 1,
    "unreachable beyond scope": 2,
    "unreachable address": 3,
    "unreachable port": 4,
}
_QUOTE_START_RE = re.compile(r"(?:^|\s)(?=\S+ > \S+?: )")
_QUOTED_RE = re.compile(r"(?P<src>\S+\.[\w-]+) > (?P<dst>\S+?\.[\w-]+): +(?P<tcp>.*)$")


def _parse_icmp(record: Record, ip_version: int, header: str, src: str, dst: str, body: str) -> ParsedRecord:
    kind: tuple[int, int] | None = None
    if ip_version == 4:
        for pattern, icmp_type, code in _ICMP4_FORMS:
            if pattern.match(body):
                kind = (icmp_type, code)
                break
    elif "destination unreachable" in body:
        for words, code in _ICMP6_CODES.items():
            if words in body:
                kind = (1, code)
        kind = kind or (1, 0)
    elif "time exceeded" in body:
        kind = (3, 0)
    if kind is None:
        return NotTcp(ip=True)
    quoted = _parse_quoted(record, body) or _unported_quote(record.line_no, dst, body)
    if quoted is None:  # tcpdump names neither the quoted protocol nor its ports: it may concern TCP
        return NotTcp(ip=True, unquoted_icmp=True)
    time_kind, time_value = _parse_time(record)
    ttl = _TTL_RE.search(header) if header else None
    return IcmpFields(
        line_no=record.line_no,
        time_kind=time_kind,
        time_value=time_value,
        ip_version=ip_version,
        reporter=src,
        ttl=int(ttl[1]) if ttl else 0,
        icmp_type=kind[0],
        icmp_code=kind[1],
        quoted=quoted,
    )


def _parse_quoted(record: Record, body: str) -> TcpFields | None:
    """The TCP segment an ICMP error quotes, printed by tcpdump -v after the error (None without -v).

    A quote cut after the ports (``[|tcp]``: RFC 792's minimum of 8 TCP bytes) still names the connection;
    its seq is then unknown here.
    """
    # The quote follows the quoted packet's IP header: find 'src.port > dst.port: ' after the ICMP wording.
    for candidate in _QUOTE_START_RE.finditer(body):
        match = _QUOTED_RE.match(body, candidate.end())
        if match is None:
            continue
        tcp = match["tcp"]
        try:
            if tcp.startswith("Flags"):
                segment = _parse_modern_tcp(record.line_no, tcp)
            elif _OLD_TCP_HINT_RE.match(tcp):
                segment = _parse_old_tcp(record.line_no, tcp)
            else:
                segment = _bare_segment(record.line_no)
            segment.src, segment.sport = _split_endpoint(match["src"])
            segment.dst, segment.dport = _split_endpoint(match["dst"])
        except (_Unparsable, ValueError):
            continue
        segment.quoted = True
        return segment
    return None


def _unported_quote(line_no: int, icmp_dst: str, body: str) -> TcpFields | None:
    """What an ICMP error printed without its quote tells of the segment it answers: ``ADDR tcp port PORT`` (a
    port unreachable without -v, or any ICMPv6 port unreachable) names its destination; its sender is the
    host the error was sent to; its source port is not shown (``sport`` empty)."""
    match = _UNPORTED_RE.search(body)
    if match is None:
        return None
    segment = _bare_segment(line_no)
    segment.src, segment.sport = icmp_dst, ""
    segment.dst, segment.dport = match["addr"], match["port"]
    segment.quoted = True
    return segment


_UNPORTED_RE = re.compile(r"(?:^|[\s,])(?P<addr>[^\s,]+) tcp port (?P<port>[\w-]+)")


def _bare_segment(line_no: int) -> TcpFields:
    """A quoted segment known only by its addresses and ports."""
    return TcpFields(line_no, TimeKind.NONE, 0, 0, "", "", "", "", 0, None, None, 0, 0)
