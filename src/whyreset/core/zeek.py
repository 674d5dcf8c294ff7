"""Zeek's view of a connection: ``conn_state``, ``history``, ``orig_bytes``/``resp_bytes``, ``missed_bytes``,
plus the Community ID (v1) and a Zeek-like ``uid``.

Sources mirrored (Zeek 6/7): ``scripts/base/protocols/conn/main.zeek`` (``conn_state``: the ordered decision
below), ``src/packet_analysis/protocol/tcp/TCPSessionAdapter.cc`` (endpoint states, ``update_history``,
``update_window``, ``update_last_seq``), ``src/analyzer/protocol/tcp/TCP_Endpoint.cc`` (``Size``, ``DidRxmit``,
``ZeroWindow``, ``Gap``), ``src/analyzer/protocol/tcp/TCP_Reassembler.cc`` (``Undelivered``: when a gap is
reported) and ``src/Conn.cc`` (``CheckHistory``, ``ScaledHistoryEntry``, ``FlipRoles`` adding ``^``).

Zeek's endpoint states (INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET) only change on the
first packets of an endpoint and on SYN/FIN/RST, so `ZeekEmulator` runs on those rows only; the letters that depend
on bulk rows (``D A T W G``) are found with numpy and merged in packet order. History letters: upper case for the
originator; ``S H F R`` are repeated when their sequence number changes; ``A D I Q`` once per direction; ``T W G``
on the 1st, 10th, 100th... occurrence, a ``G`` for every missing range an acknowledgment moves past (as Zeek's
reassembler reports gaps; `whyreset.core.analysis`). ``C``, bad checksums, is never produced: the packet table
carries no checksum verdict.

Known differences, kept small on purpose: Zeek's originator is the first packet's sender unless that packet is a
SYN-ACK; ours follows `Connection.orig_inferred_by`, and ``^`` is prepended whenever our originator did not send
the first packet. Gaps are counted in any state, where Zeek counts them only while both endpoints are established
or closing cleanly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ipaddress
import operator
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np

from whyreset.core.seqmath import IntArray
from whyreset.core.slots import slot_builder
from whyreset.model import ACK, FIN, RST, SYN, Array, format_addr

TOO_LARGE_SEQ_DELTA = 1_048_576
"""Zeek ignores SYN/RST sequence numbers that jump further than this (TCPSessionAdapter.cc)."""

HIST_SYN = 0x1
HIST_FIN = 0x2
HIST_RST = 0x4
HIST_FIN_RST = 0x8
HIST_DATA = 0x10
HIST_ACK = 0x20
HIST_MULTI_FLAG = 0x40

RSTOS0_HISTORY = re.compile(r"\^?S[^HAFGIQ]*R.*")


class ZeekState(Enum):
    """TCP_ENDPOINT_* in Zeek."""

    INACTIVE = 0
    SYN_SENT = 1
    SYN_ACK_SENT = 2
    PARTIAL = 3
    ESTABLISHED = 4
    CLOSED = 5
    RESET = 6


@dataclass(frozen=True, slots=True)
class ZeekSummary:
    """What Zeek's conn.log would say about the connection's TCP state."""

    conn_state: str
    """S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR or OTH."""
    history: str
    """The history string."""
    orig_bytes: int
    """Zeek's orig_bytes: originator sequence space, from its highest sequence or acknowledged number."""
    resp_bytes: int
    """Zeek's resp_bytes."""
    missed_bytes: int
    """Bytes in content gaps (data the peer acknowledged but the capture never saw)."""
    orig_state: ZeekState
    """Final Zeek endpoint state of the originator."""
    resp_state: ZeekState
    """Final Zeek endpoint state of the responder."""


class _Endpoint:
    __slots__ = ("fin_count", "last_fin", "last_rst", "last_syn", "prev_state", "state")

    def __init__(self) -> None:
        self.state = ZeekState.INACTIVE
        self.prev_state = ZeekState.INACTIVE
        self.last_syn = 0
        self.last_fin = 0
        self.last_rst = 0
        self.fin_count = 0

    def set_state(self, new: ZeekState) -> None:
        if new is not self.state:
            self.prev_state = self.state
            self.state = new


class ZeekEmulator:
    """Zeek's two endpoint state machines and its control-letter history for one connection."""

    def __init__(self) -> None:
        self.orig = _Endpoint()
        self.resp = _Endpoint()
        self.seen = 0
        self.letters: list[tuple[int, int, str]] = []
        """(row, order within the row, letter)."""

    def _check(self, mask: int, code: str, is_orig: bool, row: int) -> bool:
        """Conn::CheckHistory: add the letter the first time; return True when it was already seen."""
        if not is_orig:
            mask <<= 16
            code = code.lower()
        if self.seen & mask == 0:
            self.seen |= mask
            self.letters.append((row, 0, code))
            return False
        return True

    def _add(self, code: str, is_orig: bool, row: int) -> None:
        self.letters.append((row, 0, code if is_orig else code.lower()))

    def packet(self, row: int, is_orig: bool, flags: int, rel_seq: int, length: int) -> None:
        """Process one packet that may change state (SYN/FIN/RST or one of an endpoint's first packets)."""
        endpoint, peer = (self.orig, self.resp) if is_orig else (self.resp, self.orig)
        self._history(row, is_orig, flags, rel_seq, length, endpoint)
        if flags & FIN:
            endpoint.fin_count += 1
        state = endpoint.state
        if state is ZeekState.INACTIVE:
            self._inactive(endpoint, peer, is_orig, flags, length)
        elif state in (ZeekState.SYN_SENT, ZeekState.SYN_ACK_SENT):
            if flags & FIN:
                endpoint.set_state(ZeekState.CLOSED)
            if flags & RST:
                endpoint.set_state(ZeekState.RESET)
        elif state in (ZeekState.ESTABLISHED, ZeekState.PARTIAL):
            self._established(endpoint, peer, flags)
        elif state is ZeekState.CLOSED and flags & RST and peer.state is not ZeekState.CLOSED:
            endpoint.set_state(ZeekState.RESET)

    def _history(self, row: int, is_orig: bool, flags: int, rel_seq: int, length: int, endpoint: _Endpoint) -> None:
        bits = bool(flags & SYN) + bool(flags & FIN) + bool(flags & RST)
        if bits > 1:
            if flags & FIN and flags & RST:
                self._check(HIST_FIN_RST, "I", is_orig, row)
            else:
                self._check(HIST_MULTI_FLAG, "Q", is_orig, row)
        elif bits == 1:
            if flags & SYN:
                code = "H" if flags & ACK else "S"
                if self._check(HIST_SYN, code, is_orig, row) and rel_seq != endpoint.last_syn:
                    self._add(code, is_orig, row)
                endpoint.last_syn = rel_seq
            if flags & FIN:
                if self._check(HIST_FIN, "F", is_orig, row) and rel_seq + length != endpoint.last_fin:
                    self._add("F", is_orig, row)
                endpoint.last_fin = rel_seq + length
            if flags & RST:
                if self._check(HIST_RST, "R", is_orig, row) and rel_seq != endpoint.last_rst:
                    self._add("R", is_orig, row)
                endpoint.last_rst = rel_seq

    def _inactive(self, endpoint: _Endpoint, peer: _Endpoint, is_orig: bool, flags: int, length: int) -> None:
        if flags & SYN:
            if is_orig:
                endpoint.set_state(ZeekState.SYN_ACK_SENT if flags & ACK else ZeekState.SYN_SENT)
            else:
                if peer.state is ZeekState.SYN_SENT:
                    peer.set_state(ZeekState.ESTABLISHED)
                endpoint.set_state(ZeekState.ESTABLISHED)
        if flags & FIN:
            endpoint.set_state(ZeekState.CLOSED)
        if flags & RST:
            endpoint.set_state(ZeekState.RESET)
        if endpoint.state is ZeekState.INACTIVE:
            if not is_orig and length == 0 and self.orig.state is ZeekState.SYN_SENT:
                pass  # an ACK of the SYN before the SYN-ACK: not a partial connection (Zeek's comment)
            elif flags & ACK and peer.state is ZeekState.ESTABLISHED:
                endpoint.set_state(ZeekState.ESTABLISHED)
            else:
                endpoint.set_state(ZeekState.PARTIAL)

    def _established(self, endpoint: _Endpoint, peer: _Endpoint, flags: int) -> None:
        if flags & SYN and endpoint.state is ZeekState.PARTIAL and peer.state is ZeekState.INACTIVE and not flags & ACK:
            endpoint.set_state(ZeekState.SYN_SENT)
        if flags & FIN and not flags & RST:
            endpoint.set_state(ZeekState.CLOSED)
            if peer.state is ZeekState.RESET and peer.prev_state is ZeekState.CLOSED:
                peer.set_state(ZeekState.CLOSED)
        if flags & RST:
            endpoint.set_state(ZeekState.RESET)


def scaled_positions(mask: Array) -> IntArray:
    """Rows of the 1st, 10th, 100th... true value of ``mask`` (Zeek's ScaledHistoryEntry, base 10)."""
    rows = np.flatnonzero(mask)
    picks: list[int] = []
    threshold = 1
    while threshold <= len(rows):
        picks.append(int(rows[threshold - 1]))
        threshold *= 10
    return np.asarray(picks, np.int64)


def conn_state(orig: ZeekState, resp: ZeekState, orig_size: int, resp_size: int, history: str) -> str:
    """``Conn::conn_state`` from main.zeek, same order of tests."""
    o_inactive = orig in (ZeekState.INACTIVE, ZeekState.PARTIAL)
    r_inactive = resp in (ZeekState.INACTIVE, ZeekState.PARTIAL)
    if resp is ZeekState.RESET:
        if orig in (ZeekState.SYN_SENT, ZeekState.SYN_ACK_SENT) or (
            orig is ZeekState.RESET and orig_size == 0 and resp_size == 0
        ):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if orig is ZeekState.RESET:
        if r_inactive:
            return "RSTOS0" if RSTOS0_HISTORY.fullmatch(history) else "OTH"
        return "RSTO"
    if resp is ZeekState.CLOSED and orig is ZeekState.CLOSED:
        return "SF"
    if orig is ZeekState.CLOSED:
        return "SH" if r_inactive else "S2"
    if resp is ZeekState.CLOSED:
        return "SHR" if o_inactive else "S3"
    if orig is ZeekState.SYN_SENT and resp is ZeekState.INACTIVE:
        return "S0"
    if orig is ZeekState.ESTABLISHED and resp is ZeekState.ESTABLISHED:
        return "S1"
    return "OTH"


@dataclass(frozen=True, slots=True)
class ZeekRows:
    """One connection's rows as the Zeek summary needs them (connection order)."""

    flags: Array
    from_orig: Array
    rel_seq: IntArray
    rel_ack: IntArray
    payload: IntArray
    window: Array
    flipped: bool
    """The originator did not send the first packet (Zeek's ``^``)."""
    first_gap_row_orig: int
    """Row of the peer ACK that revealed the originator's first content gap, or -1."""
    first_gap_row_resp: int
    missed_bytes: int
    shortcut: ZeekShortcut | None = None
    """Facts the batch already computed; without it everything is derived from the rows (slower)."""
    later_gap_rows_orig: tuple[int, ...] = ()
    """Rows of the peer ACKs that revealed the originator's 10th, 100th... content gap."""
    later_gap_rows_resp: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ZeekShortcut:
    """Per-connection facts precomputed for a whole batch, so `summarise` does no numpy work on plain rows."""

    fed_rows: list[int]
    """Rows (of the connection) that can change Zeek's endpoint states, in order."""
    shape: bytes
    """The memo key of those rows (`shape_code` each)."""
    load_fed: Callable[[], list[tuple[int, bool, int, int, int]]]
    """(row, from_orig, flags, rel_seq, payload) of the fed rows, made only when the shape is new."""
    plain_letters: list[tuple[int, int, str]]
    """The D/A letters (first plain data / pure ACK per direction)."""
    bulk_candidates: bool
    """Some row may yield W or T (zero window, retransmitted data): run the state-aware bulk letters."""
    own_last: tuple[int, int]
    """(orig, resp) highest sequence end, relative (Zeek's LastSeq)."""
    peer_acked: tuple[int, int]
    """(orig, resp) highest acknowledgment received from the peer outside RSTs (Zeek's AckSeq)."""


def _fed_rows(rows: ZeekRows, flags: IntArray) -> list[tuple[int, bool, int, int, int]]:
    n = len(flags)
    control = (flags & (SYN | FIN | RST)) != 0
    early = np.zeros(n, bool)
    for side in (True, False):
        early[np.flatnonzero(rows.from_orig == side)[:3]] = True
    fed = np.flatnonzero(control | early)
    return [
        (row, bool(rows.from_orig[row]), int(flags[row]), int(rows.rel_seq[row]), int(rows.payload[row]))
        for row in fed.tolist()
    ]


class EndpointEnd(NamedTuple):
    """An endpoint after the emulation: what `Size` and `conn_state` read."""

    state: ZeekState
    prev_state: ZeekState
    sent_fin: bool


class Emulation(NamedTuple):
    """The emulator's output for one connection, in positions of the fed rows (shared by equal shapes)."""

    letters: tuple[tuple[int, int, str], ...]
    """(fed row index, order within the row, letter)."""
    states_after: tuple[tuple[ZeekState, ZeekState], ...]
    """(originator, responder) state after each fed row."""
    orig: EndpointEnd
    resp: EndpointEnd


_EMULATIONS: dict[bytes, Emulation] = {}
EMULATION_CACHE_LIMIT = 65_536


def shape_code(from_orig: bool, flags: int, has_payload: bool, repeats: bool) -> int:
    """One fed row of the memo key in a byte: SYN/FIN/RST/ACK bits, data, repeated sequence number, side."""
    return (flags & (SYN | FIN | RST)) | ((flags & ACK) >> 1) | (has_payload << 4) | (repeats << 5) | (from_orig << 6)


def emulate(fed: Sequence[tuple[int, bool, int, int, int]]) -> Emulation:
    """Run (or recall) Zeek's endpoint machines over fed rows ``(row, from_orig, flags, rel_seq, length)``.

    The result depends on each row's side and flags, on whether it carries data, and on whether its SYN,
    FIN or RST sequence number repeats the endpoint's previous one (Zeek's history test): the memo key.
    """
    return emulate_shape(_shape(fed), lambda: fed)


def emulate_shape(shape: bytes, load_fed: Callable[[], Sequence[tuple[int, bool, int, int, int]]]) -> Emulation:
    """`emulate` for a connection whose memo key (`shape_code` per fed row) is already known."""
    known = _EMULATIONS.get(shape)
    if known is not None:
        return known
    emulator = ZeekEmulator()
    states = []
    for position, (_, is_orig, flags, rel_seq, payload) in enumerate(load_fed()):
        emulator.packet(position, is_orig, flags, rel_seq, payload)
        states.append((emulator.orig.state, emulator.resp.state))
    result = Emulation(
        letters=tuple(emulator.letters),
        states_after=tuple(states),
        orig=EndpointEnd(emulator.orig.state, emulator.orig.prev_state, emulator.orig.fin_count > 0),
        resp=EndpointEnd(emulator.resp.state, emulator.resp.prev_state, emulator.resp.fin_count > 0),
    )
    if len(_EMULATIONS) >= EMULATION_CACHE_LIMIT:
        _EMULATIONS.clear()
    _EMULATIONS[shape] = result
    return result


def _shape(fed: Sequence[tuple[int, bool, int, int, int]]) -> bytes:
    last: dict[tuple[bool, int], int] = {}
    shape = bytearray()
    for _, is_orig, flags, rel_seq, payload in fed:
        control = flags & (SYN | FIN | RST)
        repeats = False
        if control in (SYN, FIN, RST):
            value = rel_seq + payload if control == FIN else rel_seq
            repeats = last.get((is_orig, control), 0) == value
            last[(is_orig, control)] = value
        shape.append(shape_code(is_orig, flags, payload > 0, repeats))
    return bytes(shape)


_new_summary = slot_builder(ZeekSummary)
_LETTER_ORDER = operator.itemgetter(0, 1)
"""History letters sort by (row, order within the row), stable otherwise."""


def summarise_plain(
    shape: bytes,
    load_fed: Callable[[], Sequence[tuple[int, bool, int, int, int]]],
    fed_rows: list[int],
    letter_rows: tuple[int, int, int, int, int, int],
    own_last: tuple[int, int],
    peer_acked: tuple[int, int],
    flipped: bool,
    missed_bytes: int,
) -> ZeekSummary:
    """`summarise` for a connection no W or T letter can come from: no row arrays, only what the batch found.

    ``shape``, ``load_fed``, ``fed_rows``, ``own_last`` and ``peer_acked`` are as in `ZeekShortcut`;
    ``letter_rows`` holds the rows of the D, A, d, a, G and g letters, or -1 (`PLAIN_LETTERS`). The history is
    memoised by everything it depends on (the shape, where its rows and the other letters sit in the
    connection): connections of one kind share it.
    """
    run = emulate_shape(shape, load_fed)
    key = (shape, tuple(fed_rows), letter_rows, flipped)
    history = _HISTORIES.get(key)
    if history is None:
        # Emulator letters first: the sort is stable, so (row, order) ties keep the emulator's letter ahead.
        letters = [(fed_rows[position], order, code) for position, order, code in run.letters]
        letters += [
            (row, order, code) for row, (order, code) in zip(letter_rows, PLAIN_LETTERS, strict=True) if row >= 0
        ]
        letters.sort(key=_LETTER_ORDER)
        history = ("^" if flipped else "") + "".join([code for _, _, code in letters])
        if len(_HISTORIES) >= EMULATION_CACHE_LIMIT:
            _HISTORIES.clear()
        _HISTORIES[key] = history
    return _summary_with(run, history, own_last, peer_acked, missed_bytes)


PLAIN_LETTERS = ((0, "D"), (0, "A"), (0, "d"), (0, "a"), (3, "G"), (3, "g"))
"""(order within the row, letter) of `summarise_plain`'s ``letter_rows``: the first data and pure ACK of each
side, and the first content gap each side's peer revealed."""
_HISTORIES: dict[tuple[bytes, tuple[int, ...], tuple[int, ...], bool], str] = {}
"""`summarise_plain`'s memo of histories."""
_CONN_STATES: dict[tuple[ZeekState, ZeekState, bool, str], str] = {}
"""`_summary_with`'s memo of `conn_state`."""


class PlainRows(NamedTuple):
    """One connection's columns as Python lists (connection order), for `summarise_small`."""

    from_orig: list[bool]
    flags: list[int]
    rel_seq: list[int]
    payload: list[int]
    window: list[int]


def summarise_small(
    shape: bytes,
    load_fed: Callable[[], Sequence[tuple[int, bool, int, int, int]]],
    fed_rows: list[int],
    gap_letters: list[tuple[int, int, str]],
    own_last: tuple[int, int],
    peer_acked: tuple[int, int],
    flipped: bool,
    missed_bytes: int,
    rows: PlainRows,
) -> ZeekSummary:
    """`summarise` with its bulk letters (D A W T) found by one Python pass over the rows instead of numpy: a
    connection has tens of rows, where each numpy call costs more than the pass. Same letters, same order."""
    run = emulate_shape(shape, load_fed)
    letters = [(fed_rows[position], order, code) for position, order, code in run.letters]
    letters += _bulk_letters_small(rows, fed_rows, run.states_after)
    letters += gap_letters
    return _summary_of(run, letters, flipped, own_last, peer_acked, missed_bytes)


def _summary_of(
    run: Emulation,
    letters: list[tuple[int, int, str]],
    flipped: bool,
    own_last: tuple[int, int],
    peer_acked: tuple[int, int],
    missed_bytes: int,
) -> ZeekSummary:
    """History from the letters in row order (emulator letters ahead on ties: the sort is stable), sizes and
    conn_state from the emulated endpoints."""
    letters.sort(key=_LETTER_ORDER)
    history = ("^" if flipped else "") + "".join([code for _, _, code in letters])
    return _summary_with(run, history, own_last, peer_acked, missed_bytes)


def _summary_with(
    run: Emulation, history: str, own_last: tuple[int, int], peer_acked: tuple[int, int], missed_bytes: int
) -> ZeekSummary:
    """Sizes and conn_state from the emulated endpoints, with the history made."""
    orig_size = size_from(own_last[0], peer_acked[0], run.orig)
    resp_size = size_from(own_last[1], peer_acked[1], run.resp)
    # conn_state reads the sizes only as "both zero": memoised on that.
    key = (run.orig.state, run.resp.state, not orig_size and not resp_size, history)
    state = _CONN_STATES.get(key)
    if state is None:
        state = conn_state(run.orig.state, run.resp.state, orig_size, resp_size, history)
        if len(_CONN_STATES) >= EMULATION_CACHE_LIMIT:
            _CONN_STATES.clear()
        _CONN_STATES[key] = state
    return _new_summary(
        conn_state=state,
        history=history,
        orig_bytes=orig_size,
        resp_bytes=resp_size,
        missed_bytes=missed_bytes,
        orig_state=run.orig.state,
        resp_state=run.resp.state,
    )


def _bulk_letters_small(
    rows: PlainRows, fed_rows: list[int], states_after: tuple[tuple[ZeekState, ZeekState], ...]
) -> list[tuple[int, int, str]]:
    """`_bulk_letters` (without the gap letters) as one pass per side over Python lists."""
    letters: list[tuple[int, int, str]] = []
    n = len(rows.flags)
    before: list[tuple[ZeekState, ZeekState]] = []
    fed_at = 0
    state = (ZeekState.INACTIVE, ZeekState.INACTIVE)
    for row in range(n):  # each endpoint's state before the row was processed
        while fed_at < len(fed_rows) and fed_rows[fed_at] < row:
            state = states_after[fed_at]
            fed_at += 1
        before.append(state)
    for is_orig, upper in ((True, True), (False, False)):
        own_index, peer_index = (0, 1) if is_orig else (1, 0)
        data_row = ack_row = -1
        zero_rows: list[int] = []
        retransmitted: list[int] = []
        initial = previous = 0
        first = True
        for row in range(n):
            if rows.from_orig[row] != is_orig:
                continue
            flags, payload, rel_seq = rows.flags[row], rows.payload[row], rows.rel_seq[row]
            own_state, peer_state = before[row][own_index], before[row][peer_index]
            if not flags & (SYN | FIN | RST):
                if payload > 0 and data_row < 0:
                    data_row = row
                elif payload == 0 and flags & ACK and ack_row < 0:
                    ack_row = row
            if (
                rows.window[row] == 0
                and not flags & RST
                and peer_state is not ZeekState.CLOSED
                and own_state is not ZeekState.RESET
            ):
                zero_rows.append(row)
            end = rel_seq + (0 if flags & RST else payload) + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            trusted = own_state is not ZeekState.RESET
            if first:
                initial = previous = end if flags & SYN else rel_seq
                first = False
                previous = max(previous, end if trusted else initial)
                continue
            if trusted and payload > 0 and end <= previous:
                retransmitted.append(row)
            previous = max(previous, end if trusted else initial)
        if data_row >= 0:
            letters.append((data_row, 0, "D" if upper else "d"))
        if ack_row >= 0:
            letters.append((ack_row, 0, "A" if upper else "a"))
        letters += [(row, 1, "W" if upper else "w") for row in _scaled(zero_rows)]
        letters += [(row, 2, "T" if upper else "t") for row in _scaled(retransmitted)]
    return letters


def _scaled(rows: list[int]) -> list[int]:
    """The 1st, 10th, 100th... of ``rows`` (`scaled_positions` on a list)."""
    picks = []
    threshold = 1
    while threshold <= len(rows):
        picks.append(rows[threshold - 1])
        threshold *= 10
    return picks


def _letter_rows(letters: list[tuple[int, int, str]]) -> tuple[int, int, int, int, int, int]:
    """`summarise_plain`'s ``letter_rows`` from (row, order, letter) triples."""
    row_of = {code: row for row, _, code in letters}
    d_orig, a_orig, d_resp, a_resp, g_orig, g_resp = (row_of.get(code, -1) for _, code in PLAIN_LETTERS)
    return d_orig, a_orig, d_resp, a_resp, g_orig, g_resp


def summarise(rows: ZeekRows) -> ZeekSummary:
    """Run the emulator over the state-changing rows and merge in the bulk letters."""
    shortcut = rows.shortcut
    later_gaps = rows.later_gap_rows_orig or rows.later_gap_rows_resp
    if shortcut is not None and not shortcut.bulk_candidates and not later_gaps:
        return summarise_plain(
            shortcut.shape,
            shortcut.load_fed,
            shortcut.fed_rows,
            _letter_rows(shortcut.plain_letters + _gap_letters(rows)),
            shortcut.own_last,
            shortcut.peer_acked,
            rows.flipped,
            rows.missed_bytes,
        )
    flags = rows.flags.astype(np.int64)
    n = len(flags)
    if shortcut is not None:
        fed_rows = shortcut.fed_rows
        run = emulate_shape(shortcut.shape, shortcut.load_fed)
    else:
        fed = _fed_rows(rows, flags)
        fed_rows = [item[0] for item in fed]
        run = emulate(fed)
    letters = [(fed_rows[position], order, code) for position, order, code in run.letters]
    fed_index = np.asarray(fed_rows, np.int64)
    fed_orig_state = [pair[0] for pair in run.states_after]
    fed_resp_state = [pair[1] for pair in run.states_after]
    before_orig, before_resp = _states_before(fed_index, fed_orig_state, fed_resp_state, n)
    letters += _bulk_letters(rows, flags, before_orig, before_resp)
    letters.sort(key=_LETTER_ORDER)
    history = ("^" if rows.flipped else "") + "".join(code for _, _, code in letters)
    if shortcut is None:
        orig_size = _zeek_size(rows, flags, True, run.orig)
        resp_size = _zeek_size(rows, flags, False, run.resp)
    else:
        orig_size = size_from(shortcut.own_last[0], shortcut.peer_acked[0], run.orig)
        resp_size = size_from(shortcut.own_last[1], shortcut.peer_acked[1], run.resp)
    state = conn_state(run.orig.state, run.resp.state, orig_size, resp_size, history)
    return ZeekSummary(
        conn_state=state,
        history=history,
        orig_bytes=orig_size,
        resp_bytes=resp_size,
        missed_bytes=rows.missed_bytes,
        orig_state=run.orig.state,
        resp_state=run.resp.state,
    )


def _states_before(
    fed: IntArray, orig_states: list[ZeekState], resp_states: list[ZeekState], n: int
) -> tuple[IntArray, IntArray]:
    """Per row, each endpoint's Zeek state before the row was processed (state codes)."""
    codes_o = np.asarray([ZeekState.INACTIVE.value] + [s.value for s in orig_states], np.int64)
    codes_r = np.asarray([ZeekState.INACTIVE.value] + [s.value for s in resp_states], np.int64)
    last_fed_before = np.searchsorted(fed, np.arange(n), side="left")  # number of fed rows strictly before
    return codes_o[last_fed_before], codes_r[last_fed_before]


def _bulk_letters(
    rows: ZeekRows, flags: IntArray, before_orig: IntArray, before_resp: IntArray
) -> list[tuple[int, int, str]]:
    letters: list[tuple[int, int, str]] = []
    plain = (flags & (SYN | FIN | RST)) == 0
    has_ack = (flags & ACK) != 0
    zeek_end = rows.rel_seq + np.where(flags & RST, 0, rows.payload) + ((flags & SYN) != 0) + ((flags & FIN) != 0)
    for is_orig, letter_case in ((True, str.upper), (False, str.lower)):
        mine = rows.from_orig == is_orig
        own_state = before_orig if is_orig else before_resp
        peer_state = before_resp if is_orig else before_orig
        data = np.flatnonzero(mine & plain & (rows.payload > 0))
        if len(data):
            letters.append((int(data[0]), 0, letter_case("D")))
        acks = np.flatnonzero(mine & plain & (rows.payload == 0) & has_ack)
        if len(acks):
            letters.append((int(acks[0]), 0, letter_case("A")))
        zero = (
            mine
            & (rows.window == 0)
            & ((flags & RST) == 0)
            & (peer_state != ZeekState.CLOSED.value)
            & (own_state != ZeekState.RESET.value)
        )
        letters += [(int(r), 1, letter_case("W")) for r in scaled_positions(zero)]
        letters += [
            (int(r), 2, letter_case("T")) for r in scaled_positions(_retransmitted(rows, mine, zeek_end, own_state))
        ]
    return letters + _gap_letters(rows)


def _gap_letters(rows: ZeekRows) -> list[tuple[int, int, str]]:
    letters = []
    if rows.first_gap_row_orig >= 0:
        letters.append((rows.first_gap_row_orig, 3, "G"))
    if rows.first_gap_row_resp >= 0:
        letters.append((rows.first_gap_row_resp, 3, "g"))
    letters += [(row, 3, "G") for row in rows.later_gap_rows_orig]
    letters += [(row, 3, "g") for row in rows.later_gap_rows_resp]
    return letters


def _retransmitted(rows: ZeekRows, mine: Array, zeek_end: IntArray, own_state: IntArray) -> Array:
    """Zeek's update_last_seq: data whose end does not advance the endpoint's last sequence number."""
    index = np.flatnonzero(mine)
    result = np.zeros(len(mine), bool)
    if len(index) == 0:
        return result
    ends = zeek_end[index]
    first_flags = int(rows.flags[index[0]])
    initial = ends[0] if first_flags & SYN else rows.rel_seq[index[0]]
    trusted = own_state[index] != ZeekState.RESET.value
    advancing = np.where(trusted, ends, initial)
    previous = np.maximum.accumulate(np.concatenate(([initial], advancing[:-1])))
    previous = np.maximum(previous, initial)
    result[index] = trusted & (rows.payload[index] > 0) & (ends <= previous)
    result[index[0]] = False
    return result


def _zeek_size(rows: ZeekRows, flags: IntArray, is_orig: bool, endpoint: EndpointEnd) -> int:
    """TCP_Endpoint::Size: highest of last sequence and acknowledged number, minus the SYN and FIN octets."""
    mine = rows.from_orig == is_orig
    peer_acks = (rows.from_orig != is_orig) & ((flags & ACK) != 0) & ((flags & RST) == 0)
    ends = rows.rel_seq + np.where(flags & RST, 0, rows.payload) + ((flags & SYN) != 0) + ((flags & FIN) != 0)
    own = ends[mine & (((flags & RST) == 0) | (np.abs(rows.rel_seq) <= TOO_LARGE_SEQ_DELTA))]
    last = int(own.max()) if len(own) else 0
    acked = int(rows.rel_ack[peer_acks].max()) if peer_acks.any() else 0
    return size_from(last, acked, endpoint)


def size_from(last: int, acked: int, endpoint: EndpointEnd) -> int:
    """Size() from the endpoint's highest sequence end and the highest acknowledgment it received."""
    if endpoint.prev_state is ZeekState.SYN_SENT and endpoint.state is ZeekState.RESET and acked > 1:
        return 0
    size = max(last, acked, 0)
    if size:
        size -= 1
    if endpoint.sent_fin and size:
        size -= 1
    return size


def community_id(saddr: str, daddr: str, sport: int, dport: int, proto: int = 6, seed: int = 0) -> str:
    """Community ID v1 (corelight community-id-spec): base64 SHA-1 of seed, addresses, proto, ports."""
    return community_id_packed(_packed(saddr), _packed(daddr), sport, dport, proto, seed)


@functools.lru_cache(maxsize=65536)
def _packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def community_id_packed(src: bytes, dst: bytes, sport: int, dport: int, proto: int = 6, seed: int = 0) -> str:
    """`community_id` from packed addresses (4 bytes for IPv4, 16 for IPv6)."""
    if (src, sport) > (dst, dport):
        src, dst, sport, dport = dst, src, dport, sport
    data = struct.pack("!H", seed) + src + dst + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_PAIRS = [high + low for high in _BASE62 for low in _BASE62]
"""Two base62 digits per entry: half the divisions of a digit-by-digit conversion (one uid per connection)."""


def zeek_uid(community: str, first_ts_ns: int, first_frame: int) -> str:
    """``C`` + base62 of a 96-bit hash of the connection's identity: stable for a given capture."""
    digest = hashlib.blake2b(f"{community}|{first_ts_ns}|{first_frame}".encode(), digest_size=12).digest()
    value = int.from_bytes(digest, "big")
    pairs = []
    while value:
        value, digits = divmod(value, 3844)
        pairs.append(_BASE62_PAIRS[digits])
    return "C" + "".join(reversed(pairs)).lstrip("0").rjust(17, "0")


def community_ids(src_hi: Array, src_lo: Array, dst_hi: Array, dst_lo: Array, sport: Array, dport: Array) -> list[str]:
    """`community_id` of many TCP connections at once (addresses as the packet table's halves): the hashed
    records are laid out with numpy, and the SHA-1 digests base64-encoded in one call."""
    src_hi, src_lo, dst_hi, dst_lo = (np.asarray(a, np.uint64) for a in (src_hi, src_lo, dst_hi, dst_lo))
    sport, dport = np.asarray(sport, np.int64), np.asarray(dport, np.int64)
    src_v4, dst_v4 = _is_ipv4(src_hi, src_lo), _is_ipv4(dst_hi, dst_lo)
    # The lower endpoint first: packed addresses of one family compare as their (hi, lo) halves do.
    swap = (src_hi > dst_hi) | ((src_hi == dst_hi) & ((src_lo > dst_lo) | ((src_lo == dst_lo) & (sport > dport))))
    low = (np.where(swap, dst_hi, src_hi), np.where(swap, dst_lo, src_lo), np.where(swap, dport, sport))
    high = (np.where(swap, src_hi, dst_hi), np.where(swap, src_lo, dst_lo), np.where(swap, sport, dport))
    digests = np.zeros((len(src_hi), 21), np.uint8)  # 21 bytes: 28 base64 characters with no padding between
    for v4, width in ((True, 4), (False, 16)):
        picked = np.flatnonzero((src_v4 == v4) & (dst_v4 == v4))
        if not len(picked):
            continue
        size = 2 + 2 * width + 6  # seed, addresses, proto, zero, ports
        records = np.zeros((len(picked), size), np.uint8)
        records[:, 2 : 2 + width] = _address_bytes(low[0][picked], low[1][picked], width)
        records[:, 2 + width : 2 + 2 * width] = _address_bytes(high[0][picked], high[1][picked], width)
        records[:, 2 + 2 * width] = 6
        records[:, size - 4 : size - 2] = _be16(low[2][picked])
        records[:, size - 2 :] = _be16(high[2][picked])
        flat = records.tobytes()
        sha1 = hashlib.sha1
        joined = b"".join([sha1(flat[at : at + size]).digest() for at in range(0, len(flat), size)])
        digests[picked, :20] = np.frombuffer(joined, np.uint8).reshape(-1, 20)
    encoded = np.frombuffer(base64.b64encode(digests.tobytes()), np.uint8).reshape(-1, 28).copy()
    encoded[:, 27] = ord("=")  # the 21st byte was padding: base64 of 20 bytes ends in one '='
    ids = _strings(np.concatenate([np.full((len(encoded), 2), (ord("1"), ord(":")), np.uint8), encoded], axis=1))
    for conn in np.flatnonzero(src_v4 != dst_v4).tolist():  # mixed families (never on the wire): one by one
        ids[conn] = community_id(
            format_addr(int(src_hi[conn]), int(src_lo[conn])),
            format_addr(int(dst_hi[conn]), int(dst_lo[conn])),
            int(sport[conn]),
            int(dport[conn]),
        )
    return ids


def zeek_uids(community: Sequence[str], first_ts_ns: Sequence[int], first_frame: Sequence[int]) -> list[str]:
    """`zeek_uid` of many connections at once: hashed one by one, the base62 digits found with numpy."""
    blake2b = hashlib.blake2b
    joined = b"".join(
        [
            blake2b(f"{cid}|{ts}|{frame}".encode(), digest_size=12).digest()
            for cid, ts, frame in zip(community, first_ts_ns, first_frame, strict=True)
        ]
    )
    # 96-bit big-endian values as three 32-bit limbs, divided by 62 seventeen times (62**17 > 2**96): long
    # division by limb, each remainder below 62 * 2**32 (fits in int64).
    limbs = np.frombuffer(joined, ">u4").reshape(-1, 3).astype(np.int64)
    digits = np.empty((len(limbs), 18), np.uint8)
    digits[:, 0] = ord("C")
    alphabet = np.frombuffer(_BASE62.encode(), np.uint8)
    for place in range(17, 0, -1):
        remainder = np.zeros(len(limbs), np.int64)
        for limb in range(3):
            current = (remainder << 32) | limbs[:, limb]
            limbs[:, limb], remainder = np.divmod(current, 62)
        digits[:, place] = alphabet[remainder]
    return _strings(digits)


def _is_ipv4(hi: Array, lo: Array) -> Array:
    """IPv4-mapped halves (as `format_addr` reads them)."""
    return np.asarray((hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF)))


def _address_bytes(hi: Array, lo: Array, width: int) -> Array:
    """Packed addresses (network order), ``width`` bytes each: the low 4 bytes for IPv4, else all 16."""
    both = np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(-1, 16)
    return both[:, 16 - width :]


def _be16(values: Array) -> Array:
    return np.asarray(values, ">u2").view(np.uint8).reshape(-1, 2)


def _strings(ascii_rows: Array) -> list[str]:
    """Each row of ASCII codes as a str."""
    width = ascii_rows.shape[1]
    texts: list[str] = np.ascontiguousarray(ascii_rows, np.uint32).view(f"<U{width}").ravel().tolist()
    return texts
