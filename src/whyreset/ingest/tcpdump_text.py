"""Read the text that tcpdump prints (pasted in tickets and blog posts) into the packet table.

Entry points for the format sniffer: `looks_like_tcpdump_text` and `iter_text_capture`. The text goes through
four stages, each in `whyreset.ingest.text`:

1. `records`: physical lines -> one record per packet (line numbers, -v continuation lines, wrapped lines,
   noise).
2. `fields`: a record -> TCP fields as printed (or not-TCP / ICMP error / bad line).
3. `sequence`: relative sequence numbers -> absolute ones (tcpdump's own base rule), pure-ACK seq inference.
4. here: host/port names -> addresses (`names`), timestamps (`timestamps`) and numpy columns, a chunk at a
   time.

What text cannot carry is written once each into ``report.limits``: payload bytes (``captured_payload`` is 0),
TTL and IP id without -v, the frame length (IP length or a header estimate instead), the seq of pure ACKs
without -vv, the date, the addresses behind host names. Frame numbers are the packet order (1-based) among
packet records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import BinaryIO

import numpy as np

from whyreset.ingest.text.fields import BadLine, IcmpFields, NotTcp, TcpFields, parse_record
from whyreset.ingest.text.names import NameBook
from whyreset.ingest.text.records import LineCounts, iter_records, match_packet_line
from whyreset.ingest.text.sequence import SequenceResolver
from whyreset.ingest.text.timestamps import TimeResolver
from whyreset.model import (
    SACK_COLUMN,
    SACK_MAX_BLOCKS,
    Capture,
    IcmpError,
    PacketTable,
    ReadReport,
    format_addr,
)

FORMAT_NAME = "tcpdump-text"
_PLAIN_COLUMNS = (
    ("ip_version", "ip_version"),
    ("ip_id", "ip_id"),
    ("ip_df", "ip_df"),
    ("flags", "flags"),
    ("window", "window"),
    ("payload_len", "payload_len"),
    ("opt_mss", "mss"),
    ("opt_wscale", "wscale"),
    ("opt_sack_perm", "sack_perm"),
    ("opt_has_ts", "has_ts"),
    ("opt_ts_val", "ts_val"),
    ("opt_ts_ecr", "ts_ecr"),
)
"""Columns copied as they are from a `TcpFields` attribute."""
_TCP_HINT_RE = re.compile(r"Flags \[[^\]]*\]|\d+:\d+\(\d+\) (?:ack \d+ )?win \d+| > \S+: [SFRP.]+ ")

LIMIT_NO_TTL = "no TTL in text without -v: ttl is 0 and IP id 0"
LIMIT_NO_PAYLOAD = "text carries no payload bytes: captured_payload is 0"
LIMIT_RST_TEXT = "RST payloads are the text tcpdump -v printed (control and non-ASCII bytes escaped its way)"
LIMIT_RST_TEXT_CUT = "tcpdump prints at most 30 bytes of an RST payload: longer ones are cut"
LIMIT_FRAME_FROM_IP = "no link-layer length in text without -e: frame_len is the IP packet length"
LIMIT_FRAME_ESTIMATED = "no packet length in text without -v/-e: frame_len estimated from headers and payload length"
LIMIT_CHECKSUM_OFFLOAD = (
    "tcpdump reported incorrect TCP checksums: usual for packets captured on the sending host "
    "(checksum offload), not an error"
)
LIMIT_ICMP_UNQUOTED = (
    "ICMP errors printed without their quoted segment and naming no TCP port (host or network unreachable "
    "without -v, ICMPv6 other than port unreachable): counted, not linked to a connection"
)
LIMIT_ICMP_UNPORTED = (
    "ICMP port unreachable errors printed without their quoted segment (without -v, and every ICMPv6 one) name "
    "only the destination port: each is linked to the connections from that host to that port open at its time"
)


def looks_like_tcpdump_text(head: bytes) -> bool:
    """Whether the first bytes of an input look like tcpdump text: a packet line that prints a TCP segment."""
    if b"\x00" in head[:4096]:
        return False
    text = head.decode("utf-8", "replace")
    seen_packet_line = False
    for line in text.splitlines()[:2000]:
        stripped = line.strip()
        if match_packet_line(stripped) is None:
            continue
        seen_packet_line = True
        if _TCP_HINT_RE.search(stripped):
            return True
    # -v and tcpdump 3.x put the TCP fields on the next line: a packet line plus a TCP hint anywhere will do.
    return seen_packet_line and _TCP_HINT_RE.search(text) is not None


def iter_text_capture(stream: BinaryIO, report: ReadReport, chunk_records: int = 262144) -> Iterator[Capture]:
    """Parse tcpdump text from ``stream``: a `Capture` per ``chunk_records`` TCP segments, and one at the end.

    Never raises for bad content: unparsable packet lines go to ``report.bad_lines`` and reading continues.
    """
    if not report.format.startswith(FORMAT_NAME):
        report.format = FORMAT_NAME  # the sniffer may have said more ("tcpdump-text+gzip"): keep that
    reader = _TextReader(report, max(1, chunk_records))
    yield from reader.run(stream)


@dataclass(slots=True)
class _TextReader:
    report: ReadReport
    chunk_records: int
    names: NameBook = field(init=False)
    times: TimeResolver = field(init=False)
    sequences: SequenceResolver = field(init=False)
    counts: LineCounts = field(default_factory=LineCounts)
    frame: int = 0
    pending: list[TcpFields] = field(default_factory=list)
    pending_frames: list[int] = field(default_factory=list)
    icmp: list[tuple[int, IcmpFields]] = field(default_factory=list)
    noted: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.names = NameBook(self.report.limits)
        self.times = TimeResolver(self.report.limits)
        self.sequences = SequenceResolver(self.report.limits)

    def run(self, stream: BinaryIO) -> Iterator[Capture]:
        emitted = False
        for record in iter_records(stream, self.counts):
            self.counts.skipped += record.dropped_lines
            parsed = parse_record(record)
            self._take(parsed)
            if len(self.pending) + len(self.icmp) >= self.chunk_records:
                yield self._flush()
                emitted = True
        self.report.skipped_lines = self.counts.skipped
        if self.pending or self.icmp or not emitted:
            yield self._flush()

    def _take(self, parsed: TcpFields | NotTcp | IcmpFields | BadLine) -> None:
        # Every packet record takes a frame number, unparsable ones too: frames stay aligned with the capture.
        self.report.records += 1
        self.frame += 1
        if isinstance(parsed, BadLine):
            self.report.bad_lines.append((parsed.line_no, parsed.reason))
            return
        if isinstance(parsed, TcpFields):
            parsed.run = self.counts.runs
            if parsed.fragment:
                self.report.fragments += 1
            self.pending.append(parsed)
            self.pending_frames.append(self.frame)
        elif isinstance(parsed, IcmpFields):
            if parsed.quoted is not None:
                parsed.quoted.run = self.counts.runs
                if not parsed.quoted.sport:
                    self._note(LIMIT_ICMP_UNPORTED)
            self.report.non_tcp += 1
            self.icmp.append((self.frame, parsed))
        else:
            if parsed.fragment:
                self.report.fragments += 1
            if parsed.unquoted_icmp:
                self._note(LIMIT_ICMP_UNQUOTED)
            if parsed.ip:
                self.report.non_tcp += 1
            else:
                self.report.non_ip += 1

    def _flush(self) -> Capture:
        segments, frames = self.pending, self.pending_frames
        self.pending, self.pending_frames = [], []
        self.report.skipped_lines = self.counts.skipped
        icmp, self.icmp = self.icmp, []
        if icmp:
            self._resolve_with_quotes(segments, frames, icmp)
        else:
            self.sequences.resolve(segments)
        row_times, icmp_times = self._timestamps(segments, frames, icmp)
        table = self._table(segments, frames, row_times)
        errors = [self._icmp_error(frame, error, icmp_times[frame]) for frame, error in icmp]
        self.report.tcp_segments += len(table)
        return Capture(
            packets=table,
            icmp_errors=errors,
            rst_payloads=self._rst_payloads(segments, frames),
            report=self.report,
        )

    def _rst_payloads(self, segments: list[TcpFields], frames: list[int]) -> dict[int, bytes]:
        payloads = {}
        for frame, segment in zip(frames, segments, strict=True):
            if segment.rst_text is None:
                continue
            payloads[frame] = segment.rst_text
            self._note(LIMIT_RST_TEXT)
            if segment.rst_text_cut:
                self._note(LIMIT_RST_TEXT_CUT)
        return payloads

    def _resolve_with_quotes(
        self, segments: list[TcpFields], frames: list[int], icmp: list[tuple[int, IcmpFields]]
    ) -> None:
        """Restore the sequence numbers of rows and ICMP quotes together, in frame order, as tcpdump did."""
        in_order = sorted(
            [(frame, segment) for frame, segment in zip(frames, segments, strict=True)]
            + [(frame, error.quoted) for frame, error in icmp if error.quoted is not None],
            key=lambda pair: pair[0],
        )
        self.sequences.resolve([segment for _, segment in in_order])

    def _timestamps(
        self, segments: list[TcpFields], frames: list[int], icmp: list[tuple[int, IcmpFields]]
    ) -> tuple[list[int], dict[int, int]]:
        """Capture times of the rows, and of the ICMP errors by frame.

        Both are resolved together, in frame order, so that -ttt deltas add up.
        """
        if not icmp:
            kinds = [segment.time_kind for segment in segments]
            values = [segment.time_value for segment in segments]
            return self.times.resolve(kinds, values, frames), {}
        stamped = sorted(
            [(frame, s.time_kind, s.time_value) for frame, s in zip(frames, segments, strict=True)]
            + [(frame, error.time_kind, error.time_value) for frame, error in icmp]
        )
        times = self.times.resolve(
            [kind for _, kind, _ in stamped],
            [value for _, _, value in stamped],
            [frame for frame, _, _ in stamped],
        )
        by_frame = {frame: ts for (frame, _, _), ts in zip(stamped, times, strict=True)}
        return [by_frame[frame] for frame in frames], {frame: by_frame[frame] for frame, _ in icmp}

    def _table(self, segments: list[TcpFields], frames: list[int], row_times: list[int]) -> PacketTable:
        table = PacketTable.empty(len(segments))
        if not segments:
            return table
        columns = table.columns
        count = len(segments)

        def gather(name: str, attribute: str) -> None:
            values = map(attrgetter(attribute), segments)
            columns[name][:] = np.fromiter(values, columns[name].dtype, count)

        hosts = self._host_halves(segments)
        ports = {text: self.names.port(text) for s in segments for text in (s.sport, s.dport)}
        columns["frame"][:] = frames
        columns["ts_ns"][:] = row_times
        columns["frame_len"][:] = np.fromiter(map(self._frame_len, segments), np.uint32, count)
        columns["ip_len"][:] = np.fromiter(map(_ip_len, segments), np.uint32, count)
        columns["ttl"][:] = np.fromiter(map(self._ttl, segments), np.uint8, count)
        for end in ("src", "dst"):
            halves = [hosts[getattr(s, end), s.ip_version] for s in segments]
            columns[f"{end}_hi"][:] = np.fromiter((hi for hi, _ in halves), np.uint64, count)
            columns[f"{end}_lo"][:] = np.fromiter((lo for _, lo in halves), np.uint64, count)
        columns["sport"][:] = np.fromiter((ports[s.sport] for s in segments), np.uint16, count)
        columns["dport"][:] = np.fromiter((ports[s.dport] for s in segments), np.uint16, count)
        columns["seq"][:] = np.fromiter((s.seq or 0 for s in segments), np.uint32, count)
        columns["ack"][:] = np.fromiter((s.ack or 0 for s in segments), np.uint32, count)
        for name, attribute in _PLAIN_COLUMNS:
            gather(name, attribute)
        self._fill_sack(columns[SACK_COLUMN], columns["sack_count"], segments)
        if any(s.payload_len for s in segments):
            self._note(LIMIT_NO_PAYLOAD)
        if any(s.bad_checksum for s in segments):
            self._note(LIMIT_CHECKSUM_OFFLOAD)
        return table

    def _host_halves(self, segments: list[TcpFields]) -> dict[tuple[str, int], tuple[int, int]]:
        """(host text, IP version) -> address halves, for every host of the chunk (looked up once each)."""
        keys = {(s.src, s.ip_version) for s in segments} | {(s.dst, s.ip_version) for s in segments}
        return {key: self.names.host(*key) for key in keys}

    @staticmethod
    def _fill_sack(blocks: np.ndarray, counts: np.ndarray, segments: list[TcpFields]) -> None:
        for row, segment in enumerate(segments):
            if segment.sack:
                kept = segment.sack[:SACK_MAX_BLOCKS]
                counts[row] = len(kept)
                blocks[row, : len(kept)] = kept

    def _ttl(self, segment: TcpFields) -> int:
        if segment.ttl is None:
            self._note(LIMIT_NO_TTL)
            return 0
        return min(segment.ttl, 255)

    def _frame_len(self, segment: TcpFields) -> int:
        if segment.frame_len is not None:
            return segment.frame_len
        if segment.ip_len is not None:
            self._note(LIMIT_FRAME_FROM_IP)
            return segment.ip_len
        self._note(LIMIT_FRAME_ESTIMATED)
        return _ip_len(segment)

    def _icmp_error(self, frame: int, error: IcmpFields, ts_ns: int) -> IcmpError:
        quoted = error.quoted
        assert quoted is not None  # fields only builds IcmpFields around a quoted segment
        ip_version = error.ip_version
        return IcmpError(
            frame=frame,
            ts_ns=ts_ns,
            reporter=format_addr(*self.names.host(error.reporter, ip_version)),
            ttl=error.ttl,
            ip_version=ip_version,
            icmp_type=error.icmp_type,
            icmp_code=error.icmp_code,
            quoted_src=format_addr(*self.names.host(quoted.src, ip_version)),
            quoted_dst=format_addr(*self.names.host(quoted.dst, ip_version)),
            quoted_sport=self.names.port(quoted.sport) if quoted.sport else None,
            quoted_dport=self.names.port(quoted.dport),
            quoted_seq=quoted.seq,
        )

    def _note(self, text: str) -> None:
        if text not in self.noted:
            self.noted.add(text)
            self.report.limits.append(text)


def _ip_len(segment: TcpFields) -> int:
    """The IP packet length printed by -v, else estimated from the headers and the payload length."""
    if segment.ip_len is not None:
        return segment.ip_len
    ip_header = 20 if segment.ip_version == 4 else 40
    return ip_header + 20 + segment.options_len + segment.payload_len


__all__ = ["FORMAT_NAME", "iter_text_capture", "looks_like_tcpdump_text"]
