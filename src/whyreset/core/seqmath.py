"""Sequence-number arithmetic, vectorised: 32-bit wraparound, per-group unwrapping and per-group running
maxima.

TCP sequence numbers live modulo 2**32. Within one direction of one connection, consecutive segments are close
in
sequence space (far less than 2**31 apart), so the signed 32-bit difference between neighbours is the true
step;
summing the steps unwraps the whole direction into plain integers that may exceed 2**32.

Every function here works on flat arrays whose rows are already grouped: ``starts`` holds the first row of
each group
(sorted ascending, first element 0), so a whole batch of connections is handled by a few numpy calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
Array = npt.NDArray[Any]

MOD32 = 1 << 32


def seq_delta(a: int, b: int) -> int:
    """``a - b`` as a signed 32-bit difference (RFC 1982 serial arithmetic)."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD32 if d >= 1 << 31 else d


def signed_delta32(a: Array, b: Array) -> IntArray:
    """Element-wise ``a - b`` modulo 2**32, as a signed value in [-2**31, 2**31)."""
    return (a.astype(np.uint32) - b.astype(np.uint32)).view(np.int32).astype(np.int64)


def group_ids(starts: IntArray, n: int) -> IntArray:
    """Group number of every row, given each group's first row."""
    ids = np.zeros(n, np.int64)
    if len(starts) > 1:
        ids[starts[1:]] = 1
    return np.cumsum(ids)


def unwrap_groups(values: Array, starts: IntArray) -> IntArray:
    """Unwrap 32-bit values within each group: the first row keeps its value, the others add signed steps."""
    n = len(values)
    out = values.astype(np.int64)
    if n < 2:
        return out
    steps = np.empty(n, np.int64)
    steps[0] = 0
    steps[1:] = signed_delta32(values[1:], values[:-1])
    steps[starts] = 0  # a group does not continue its predecessor
    cum = np.cumsum(steps)
    base = np.repeat(out[starts] - cum[starts], np.diff(np.append(starts, n)))
    return base + cum


def group_running_max(values: IntArray, starts: IntArray, exclusive: bool, initial: IntArray | None = None) -> IntArray:
    """Running maximum within each group.

    With ``exclusive``, row i gets the maximum of the rows before it in its group (``initial`` for the
    first row of a
    group, or the int64 minimum when ``initial`` is None). Groups are separated by adding a per-group
    offset that is
    larger than the spread of the values, so one ``np.maximum.accumulate`` serves the whole batch; when
    the offsets
    would overflow int64 it falls back to one accumulate per group.
    """
    n = len(values)
    if n == 0:
        return values.astype(np.int64)
    lengths = np.diff(np.append(starts, n))
    low = np.iinfo(np.int64).min
    firsts = np.full(len(starts), low, np.int64) if initial is None else initial.astype(np.int64)
    if exclusive:
        shifted = np.empty(n, np.int64)
        shifted[1:] = values[:-1]
        shifted[starts] = firsts
        source = shifted
    else:
        source = values.astype(np.int64)
        if initial is not None:
            source = source.copy()
            source[starts] = np.maximum(source[starts], firsts)
    finite = source[source != low]
    if len(finite) == 0:
        return source
    lo, hi = int(finite.min()), int(finite.max())
    span = hi - lo + 2  # shifted values lie in [0, span): 0 for 'no value yet', 1.. for real ones
    if span * (len(starts) + 1) < 2**62:
        gid = group_ids(starts, n)
        shifted_vals = np.where(source == low, lo - 1, source) - (lo - 1) + gid * span
        acc = np.maximum.accumulate(shifted_vals) - gid * span + (lo - 1)
        return np.where(acc < lo, low, acc)
    out = np.empty(n, np.int64)
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        out[start : start + length] = np.maximum.accumulate(source[start : start + length])
    return out


def group_first_index(mask: Array, starts: IntArray, n: int) -> IntArray:
    """Per group, the index of the first row where ``mask`` is true, or -1."""
    gid = group_ids(starts, n)
    rows = np.flatnonzero(mask)
    result = np.full(len(starts), -1, np.int64)
    if len(rows):
        groups = gid[rows]
        first_of_group = np.ones(len(rows), bool)
        first_of_group[1:] = groups[1:] != groups[:-1]
        result[groups[first_of_group]] = rows[first_of_group]
    return result


def group_last_index(mask: Array, starts: IntArray, n: int) -> IntArray:
    """Per group, the index of the last row where ``mask`` is true, or -1."""
    gid = group_ids(starts, n)
    rows = np.flatnonzero(mask)
    result = np.full(len(starts), -1, np.int64)
    if len(rows):
        groups = gid[rows]
        last_of_group = np.ones(len(rows), bool)
        last_of_group[:-1] = groups[1:] != groups[:-1]
        result[groups[last_of_group]] = rows[last_of_group]
    return result
