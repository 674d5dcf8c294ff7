"""Zeek logs: ``conn.log`` exactly as Zeek writes it, and ``whyreset.log`` (the diagnoses) joined on ``uid``.

Format followed (checked against Zeek's sources, see docs/zeek.md): the ASCII writer
(src/logging/writers/ascii/Ascii.cc, src/threading/formatters/Ascii.cc, src/Desc.cc) with its default options
(``LogAscii::separator`` tab, ``set_separator`` ``,``, ``empty_field`` ``(empty)``, ``unset_field`` ``-``,
``enable_utf_8`` T, meta header on), and the default ``Conn::Info`` of Zeek 7.1 and later
(scripts/base/protocols/conn/main.zeek), which ends with ``ip_proto``. The JSON variant mirrors
``LogAscii::use_json=T``: one object per line, keys in field order, unset fields left out, times as epoch
seconds.

Rules mirrored from Zeek:

- ``duration``, ``orig_bytes`` and ``resp_bytes`` are set only when the duration is > 0 (``set_conn``),
  otherwise they are unset (``-``); ``history`` is unset when empty; ``service``, ``local_orig``,
  ``local_resp`` and ``tunnel_parents`` are unset (no protocol detection, no local nets, no tunnels).
- time and interval values are printed with 6 decimals (trailing zeros kept); doubles with up to 6 decimals,
  trailing zeros removed, ``.0`` added to integral values.
- strings: empty -> ``(empty)``; a value equal to ``-`` or ``(empty)`` gets its first character escaped;
  ``\\``, ASCII control characters and bytes that are not valid UTF-8 become ``\\xNN``; valid UTF-8 passes
  through; inside a set or vector, the set separator is escaped too; a line that would start with ``#`` gets
  its ``#`` escaped.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

from whyreset.core.connection import Connection
from whyreset.diagnose.finding import Finding
from whyreset.ids import Side
from whyreset.report.jsonout import encode_json_line, is_abnormal, ns_to_epoch, payload_secrets, redact_payload

SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY_FIELD = "(empty)"
UNSET_FIELD = "-"
META_PREFIX = "#"
ZEEK_VERSION_FOLLOWED = "7.1+"
"""The default conn.log field list followed (``ip_proto`` appeared in Zeek 7.1; older ones stop before it)."""

TCP_IP_PROTO = 6


@dataclass(frozen=True, slots=True)
class LogField:
    """One column of a Zeek log."""

    name: str
    type: str
    """Zeek type name as written in ``#types`` (``time``, ``count``, ``set[string]``...)."""


_CONN_ID = (
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
)
"""Zeek's connection id prefix, shared by every log that joins conn.log on uid."""

CONN_FIELDS: tuple[LogField, ...] = tuple(
    LogField(name, type_)
    for name, type_ in (
        *_CONN_ID,
        ("proto", "enum"),
        ("service", "string"),
        ("duration", "interval"),
        ("orig_bytes", "count"),
        ("resp_bytes", "count"),
        ("conn_state", "string"),
        ("local_orig", "bool"),
        ("local_resp", "bool"),
        ("missed_bytes", "count"),
        ("history", "string"),
        ("orig_pkts", "count"),
        ("orig_ip_bytes", "count"),
        ("resp_pkts", "count"),
        ("resp_ip_bytes", "count"),
        ("tunnel_parents", "set[string]"),
        ("ip_proto", "count"),
    )
)

WHYRESET_FIELDS: tuple[LogField, ...] = tuple(
    LogField(name, type_)
    for name, type_ in (
        *_CONN_ID,
        ("outcome", "string"),
        ("cause", "string"),
        ("confidence", "double"),
        ("actor", "string"),
        ("summary", "string"),
        ("alternatives", "vector[string]"),
        ("rst_sender", "string"),
        ("rst_frame", "count"),
        ("rst_acceptability", "string"),
        ("orig_final_state", "string"),
        ("resp_final_state", "string"),
        ("undetermined_reason", "string"),
    )
)

Row = dict[str, Any]
"""Field name -> value; a missing key or None means unset."""


# --- value rendering (Zeek's ASCII formatter) ---------------------------------------------------------------


_PLAIN_TEXT = re.compile(r"[\x20-\x5b\x5d-\x7e]*")
"""Printable ASCII but the backslash: nothing to escape (most values: addresses, uids, states, summaries)."""
_PLAIN_SET_ITEM = re.compile(r"[\x20-\x2b\x2d-\x5b\x5d-\x7e]*")
"""The same without the set separator (``,``), for items of sets and vectors."""


def escape_string(value: str, *, in_set: bool = False) -> str:
    """Escape a string value as Zeek's ASCII writer does (UTF-8 mode)."""
    if value == "":
        return EMPTY_FIELD
    if (_PLAIN_SET_ITEM if in_set else _PLAIN_TEXT).fullmatch(value) and value not in (UNSET_FIELD, EMPTY_FIELD):
        return value  # the common case, without the character walk below
    escaped = "".join(_escape_char(char, in_set) for char in value)
    if value in (UNSET_FIELD, EMPTY_FIELD):
        # Reserved words are made unambiguous by escaping their first character.
        return _hex(ord(value[0])) + escaped[1:]
    return escaped


def _escape_char(char: str, in_set: bool) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a raw byte kept by surrogateescape decoding: not valid UTF-8
        return _hex(code - 0xDC00)
    if code >= 0x80:
        return char if not 0xD800 <= code <= 0xDFFF else _hex(0xEF) + _hex(0xBF) + _hex(0xBD)
    if code < 0x20 or code == 0x7F or char == "\\" or (in_set and char == SET_SEPARATOR):
        return _hex(code)
    return char


def _hex(code: int) -> str:
    return f"\\x{code:02x}"


def format_time(seconds: float) -> str:
    """``time`` and ``interval`` values: 6 decimals, trailing zeros kept."""
    return f"{seconds:.6f}"


def format_double(value: float) -> str:
    """``double`` values: up to 6 decimals, trailing zeros removed, ``.0`` kept on integral values."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("", "-"):
        text += "0"
    if "." not in text and "e" not in text and "inf" not in text and "nan" not in text:
        text += ".0"
    return text


def format_value(value: Any, type_: str) -> str:
    """One TSV cell."""
    return cell_formatter(type_)(value)


CellFormatter = Callable[[Any], str]


@functools.cache
def cell_formatter(type_: str) -> CellFormatter:
    """The function that writes the cells of a Zeek type (chosen once per column, not per cell)."""
    if type_ in ("time", "interval"):
        return lambda value: UNSET_FIELD if value is None else format_time(float(value))
    if type_ == "double":
        return lambda value: UNSET_FIELD if value is None else format_double(float(value))
    if type_ == "bool":
        return lambda value: UNSET_FIELD if value is None else ("T" if value else "F")
    if type_ in ("count", "int", "port"):
        return lambda value: UNSET_FIELD if value is None else str(int(value))
    if type_.startswith(("set[", "vector[")):
        return _format_container
    return lambda value: UNSET_FIELD if value is None else escape_string(str(value))


def _format_container(value: Any) -> str:
    if value is None:
        return UNSET_FIELD
    items = list(value)
    if not items:
        return EMPTY_FIELD
    return SET_SEPARATOR.join(escape_string(str(item), in_set=True) for item in items)


def row_formatters(fields: Sequence[LogField]) -> tuple[tuple[str, CellFormatter], ...]:
    """(field name, cell formatter) per column, for `format_row`."""
    return tuple((f.name, cell_formatter(f.type)) for f in fields)


def format_row(row: Row, fields: Sequence[LogField]) -> str:
    """One log line (without the newline)."""
    return format_cells(row, row_formatters(fields))


def format_cells(row: Row, columns: Sequence[tuple[str, CellFormatter]]) -> str:
    """`format_row` with the columns' formatters chosen beforehand (a writer chooses them once)."""
    get = row.get
    line = SEPARATOR.join(cell(get(name)) for name, cell in columns)
    if line.startswith(META_PREFIX):
        line = _hex(ord(META_PREFIX)) + line[1:]
    return line


def header_lines(path: str, fields: Sequence[LogField], open_time: float | None = None) -> list[str]:
    """The meta header Zeek writes before the first row."""
    return [
        f"{META_PREFIX}separator {_hex(ord(SEPARATOR))}",
        f"{META_PREFIX}set_separator{SEPARATOR}{SET_SEPARATOR}",
        f"{META_PREFIX}empty_field{SEPARATOR}{EMPTY_FIELD}",
        f"{META_PREFIX}unset_field{SEPARATOR}{UNSET_FIELD}",
        f"{META_PREFIX}path{SEPARATOR}{path}",
        f"{META_PREFIX}open{SEPARATOR}{zeek_timestamp(open_time)}",
        f"{META_PREFIX}fields{SEPARATOR}{SEPARATOR.join(f.name for f in fields)}",
        f"{META_PREFIX}types{SEPARATOR}{SEPARATOR.join(f.type for f in fields)}",
    ]


def zeek_timestamp(wall_time: float | None = None) -> str:
    """``#open``/``#close`` stamp: local wall-clock time as ``%Y-%m-%d-%H-%M-%S``."""
    return time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(time.time() if wall_time is None else wall_time))


# --- rows ---------------------------------------------------------------------------------------------------


def conn_row(connection: Connection) -> Row:
    """A conn.log row for one connection."""
    duration = connection.duration_ns / 1e9
    has_duration = connection.duration_ns > 0
    return {
        "ts": ns_to_epoch(connection.ts_first_ns),
        "uid": connection.uid,
        "id.orig_h": connection.orig_h,
        "id.orig_p": connection.orig_p,
        "id.resp_h": connection.resp_h,
        "id.resp_p": connection.resp_p,
        "proto": "tcp",
        "service": None,
        "duration": duration if has_duration else None,
        "orig_bytes": connection.orig.data_bytes if has_duration else None,
        "resp_bytes": connection.resp.data_bytes if has_duration else None,
        "conn_state": connection.conn_state or None,
        "local_orig": None,
        "local_resp": None,
        "missed_bytes": int(getattr(connection, "missed_bytes", 0)),
        "history": connection.history or None,
        "orig_pkts": connection.orig.packets,
        "orig_ip_bytes": connection.orig.ip_bytes,
        "resp_pkts": connection.resp.packets,
        "resp_ip_bytes": connection.resp.ip_bytes,
        "tunnel_parents": None,
        "ip_proto": TCP_IP_PROTO,
    }


def whyreset_row(connection: Connection, finding: Finding | None, *, show_payload: bool = False) -> Row:
    """A whyreset.log row: the diagnosis of one abnormal connection (RST payload scrubbed unless asked)."""
    reset = connection.first_reset
    secrets = () if show_payload else payload_secrets(connection)
    return {
        "ts": ns_to_epoch(connection.ts_first_ns),
        "uid": connection.uid,
        "id.orig_h": connection.orig_h,
        "id.orig_p": connection.orig_p,
        "id.resp_h": connection.resp_h,
        "id.resp_p": connection.resp_p,
        "outcome": str(connection.outcome),
        "cause": str(finding.cause) if finding is not None and finding.cause is not None else None,
        "confidence": finding.confidence if finding is not None else None,
        "actor": str(finding.actor) if finding is not None and finding.actor is not None else None,
        "summary": redact_payload(finding.summary, secrets) if finding is not None else None,
        "alternatives": (
            [f"{alt.cause}:{format_double(alt.confidence)}" for alt in finding.alternatives]
            if finding is not None
            else None
        ),
        "rst_sender": str(reset.sender) if reset is not None else None,
        "rst_frame": reset.frame if reset is not None else None,
        "rst_acceptability": str(reset.acceptability) if reset is not None else None,
        "orig_final_state": str(connection.final_state(Side.ORIG)),
        "resp_final_state": str(connection.final_state(Side.RESP)),
        "undetermined_reason": (redact_payload(finding.undetermined_reason, secrets) if finding is not None else None),
    }


# --- lines (the TSV writer's fast path) --------------------------------------------------------------------
#
# `ZeekLogs` writes TSV lines straight from the connection: the same cells `format_cells` makes of `conn_row` /
# `whyreset_row` (tests/report/test_zeek.py compares them on the lab corpus and hostile text), without the row
# dict and the per-cell formatter calls (~3x faster). Every line starts with its time cell, so it never needs
# the leading-``#`` escape.


class _EscapedCache(dict[str, str]):
    """`escape_string` of the values that repeat from row to row (addresses, states, causes, histories): each
    distinct one is escaped once (up to a bound), then a hit is a plain dict lookup (no Python call)."""

    max_size = 65536

    def __missing__(self, value: str) -> str:
        escaped = escape_string(value)
        if len(self) < self.max_size:
            self[value] = escaped
        return escaped


_ESCAPED = _EscapedCache()


def _conn_id_cells(connection: Connection) -> str:
    """ts, uid and the address/port cells shared by both logs."""
    return (
        f"{((connection.ts_first_ns + 500) // 1000) / 1e6:.6f}\t{escape_string(connection.uid)}"
        f"\t{_ESCAPED[connection.orig_h]}\t{connection.orig_p}"
        f"\t{_ESCAPED[connection.resp_h]}\t{connection.resp_p}"
    )


def conn_line(connection: Connection, id_cells: str | None = None) -> str:
    """The conn.log TSV line of a connection, newline included (``format_cells(conn_row(...))``); ``id_cells``
    is its `_conn_id_cells` when the caller made them already (for both logs)."""
    orig, resp = connection.orig, connection.resp
    duration_ns = connection.ts_last_ns - connection.ts_first_ns
    # Zeek sets the duration and byte counts only for a positive duration.
    sized = f"{duration_ns / 1e9:.6f}\t{orig.data_bytes}\t{resp.data_bytes}" if duration_ns > 0 else "-\t-\t-"
    conn_state, history = connection.conn_state, connection.history
    return (
        f"{id_cells or _conn_id_cells(connection)}\ttcp\t-\t{sized}"
        f"\t{_ESCAPED[conn_state] if conn_state else UNSET_FIELD}\t-\t-\t{connection.missed_bytes}"
        f"\t{_ESCAPED[history] if history else UNSET_FIELD}"
        f"\t{orig.packets}\t{orig.ip_bytes}\t{resp.packets}\t{resp.ip_bytes}\t-\t{TCP_IP_PROTO}\n"
    )


def whyreset_line(
    connection: Connection, finding: Finding | None, *, show_payload: bool = False, id_cells: str | None = None
) -> str:
    """The whyreset.log TSV line of a connection, newline included (``format_cells(whyreset_row(...))``)."""
    reset = connection.resets[0] if connection.resets else None
    if reset is None:
        rst = "-\t-\t-"
    else:
        rst = f"{_ESCAPED[reset.sender._value_]}\t{reset.frame}\t{_ESCAPED[reset.acceptability._value_]}"
    if finding is None:
        diagnosis = "-\t-\t-\t-\t-"
        undetermined = UNSET_FIELD
    else:
        has_payload = not show_payload and any(item.payload_text for item in connection.resets)
        secrets = payload_secrets(connection) if has_payload else ()
        cause, actor = finding.cause, finding.actor
        alternatives = [f"{alt.cause}:{format_double(alt.confidence)}" for alt in finding.alternatives]
        diagnosis = (
            f"{_ESCAPED[cause._value_] if cause is not None else UNSET_FIELD}"
            f"\t{format_double(float(finding.confidence))}"
            f"\t{_ESCAPED[actor._value_] if actor is not None else UNSET_FIELD}"
            f"\t{escape_string(redact_payload(finding.summary, secrets))}\t{_format_container(alternatives)}"
        )
        reason = finding.undetermined_reason
        undetermined = UNSET_FIELD if reason is None else escape_string(redact_payload(reason, secrets))
    return (
        f"{id_cells or _conn_id_cells(connection)}\t{_ESCAPED[connection.outcome._value_]}\t{diagnosis}\t{rst}"
        f"\t{_ESCAPED[connection.final_state(Side.ORIG)._value_]}"
        f"\t{_ESCAPED[connection.final_state(Side.RESP)._value_]}\t{undetermined}\n"
    )


# --- writers ------------------------------------------------------------------------------------------------


class ZeekLogWriter:
    """Writes one log (TSV with Zeek's meta header, or JSON lines) row by row; `close` writes ``#close``."""

    def __init__(
        self,
        out: IO[str],
        path: str,
        fields: Sequence[LogField],
        *,
        use_json: bool = False,
        open_time: float | None = None,
    ) -> None:
        self._out = out
        self._fields = tuple(fields)
        self._columns = row_formatters(self._fields)
        self._json_columns = json_columns(self._fields)
        self._use_json = use_json
        if not use_json:  # Zeek's JSON mode implicitly turns the meta header off
            for line in header_lines(path, self._fields, open_time):
                out.write(line + "\n")

    def write(self, row: Row) -> None:
        if self._use_json:
            self._out.write(encode_json_line(json_cells(row, self._json_columns)).decode())  # ends with its newline
        else:
            self._out.write(format_cells(row, self._columns) + "\n")

    def close(self, close_time: float | None = None) -> None:
        if not self._use_json:
            self._out.write(f"{META_PREFIX}close{SEPARATOR}{zeek_timestamp(close_time)}\n")


def json_row(row: Row, fields: Sequence[LogField]) -> dict[str, Any]:
    """The JSON object Zeek's JSON formatter writes: keys in field order, unset fields left out."""
    return json_cells(row, json_columns(fields))


JsonConverter = Callable[[Any], Any]


def json_columns(fields: Sequence[LogField]) -> tuple[tuple[str, JsonConverter], ...]:
    """(field name, value converter) per column, for `json_cells` (a writer chooses them once)."""
    return tuple((f.name, _json_converter(f.type)) for f in fields)


def _json_converter(type_: str) -> JsonConverter:
    if type_ in ("time", "interval", "double"):
        return lambda value: round(float(value), 6)
    if type_ in ("count", "int", "port"):
        return int
    if type_ == "bool":
        return bool
    if type_.startswith(("set[", "vector[")):
        return lambda value: [str(item) for item in value]
    return str


def json_cells(row: Row, columns: Sequence[tuple[str, JsonConverter]]) -> dict[str, Any]:
    """`json_row` with the columns' converters chosen beforehand."""
    get = row.get
    obj: dict[str, Any] = {}
    for name, convert in columns:
        value = get(name)
        if value is not None:
            obj[name] = convert(value)
    return obj


class ZeekLogs:
    """``conn.log`` and ``whyreset.log`` in one directory, written row by row; `close` ends them.

    Every connection gets a conn.log row; abnormal or diagnosed ones also get a whyreset.log row (same uid).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        use_json: bool = False,
        open_time: float | None = None,
        show_payload: bool = False,
    ) -> None:
        os.makedirs(directory, exist_ok=True)
        self.conn_path = os.path.join(directory, "conn.log")
        self.whyreset_path = os.path.join(directory, "whyreset.log")
        self._show_payload = show_payload
        self._use_json = use_json
        self._open_time = open_time
        self._conn_out = open(self.conn_path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed in close)
        self._why_out = open(self.whyreset_path, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._conn_log = ZeekLogWriter(self._conn_out, "conn", CONN_FIELDS, use_json=use_json, open_time=open_time)
        self._why_log = ZeekLogWriter(
            self._why_out, "whyreset", WHYRESET_FIELDS, use_json=use_json, open_time=open_time
        )

    def write(self, connection: Connection, finding: Finding | None) -> None:
        wanted = finding is not None or is_abnormal(connection, finding)
        if not self._use_json:
            id_cells = _conn_id_cells(connection)  # the same first six cells in both logs
            self._conn_out.write(conn_line(connection, id_cells))
            if wanted:
                line = whyreset_line(connection, finding, show_payload=self._show_payload, id_cells=id_cells)
                self._why_out.write(line)
            return
        self._conn_log.write(conn_row(connection))
        if wanted:
            self._why_log.write(whyreset_row(connection, finding, show_payload=self._show_payload))

    def close(self) -> None:
        self._conn_log.close(self._open_time)
        self._why_log.close(self._open_time)
        self._conn_out.close()
        self._why_out.close()

    def __enter__(self) -> ZeekLogs:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def write_zeek_logs(
    directory: str | os.PathLike[str],
    analyses: Iterable[tuple[Sequence[Connection], dict[str, Finding]]],
    *,
    use_json: bool = False,
    open_time: float | None = None,
    show_payload: bool = False,
) -> tuple[str, str]:
    """Write ``conn.log`` (every connection) and ``whyreset.log`` (abnormal ones) into ``directory``.

    Several inputs share the same pair of logs, as when Zeek reads several traces. Returns both paths.
    """
    with ZeekLogs(directory, use_json=use_json, open_time=open_time, show_payload=show_payload) as logs:
        for connections, findings in analyses:
            for connection in connections:
                logs.write(connection, findings.get(connection.uid))
    return logs.conn_path, logs.whyreset_path
