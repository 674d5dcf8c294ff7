"""Sequence arithmetic: signed 32-bit deltas, per-group unwrapping and running maxima."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from whyreset.core.seqmath import group_running_max, seq_delta, signed_delta32, unwrap_groups


def test_seq_delta_wraps() -> None:
    assert seq_delta(5, 2**32 - 5) == 10
    assert seq_delta(2**32 - 5, 5) == -10
    assert signed_delta32(np.array([3], np.uint32), np.array([2**32 - 1], np.uint32)).tolist() == [4]


def test_unwrap_crosses_zero_per_group() -> None:
    values = np.array([2**32 - 10, 2**32 - 1, 5, 100, 7, 2**32 - 3, 1], np.uint32)
    starts = np.array([0, 4], np.int64)
    out = unwrap_groups(values, starts)
    assert out.tolist() == [2**32 - 10, 2**32 - 1, 2**32 + 5, 2**32 + 100, 7, -3, 1]


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=50))
def test_unwrap_recovers_true_positions(start: int, steps: list[int]) -> None:
    true = np.cumsum([start, *steps]).astype(np.int64)
    wrapped = (true % 2**32).astype(np.uint32)
    out = unwrap_groups(wrapped, np.array([0], np.int64))
    assert (out - out[0]).tolist() == (true - true[0]).tolist()


def test_group_running_max_exclusive_and_initial() -> None:
    values = np.array([5, 3, 9, 1, 2, 0], np.int64)
    starts = np.array([0, 3], np.int64)
    out = group_running_max(values, starts, exclusive=True, initial=np.array([4, -7], np.int64))
    assert out.tolist() == [4, 5, 5, -7, 1, 2]
    inclusive = group_running_max(values, starts, exclusive=False)
    assert inclusive.tolist() == [5, 5, 9, 1, 2, 2]


@given(st.lists(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=20), min_size=1, max_size=10))
def test_group_running_max_matches_per_group(groups: list[list[int]]) -> None:
    values = np.asarray([v for g in groups for v in g], np.int64)
    starts = np.cumsum([0] + [len(g) for g in groups[:-1]]).astype(np.int64)
    out = group_running_max(values, starts, exclusive=False)
    expected = np.concatenate([np.maximum.accumulate(np.asarray(g, np.int64)) for g in groups])
    assert out.tolist() == expected.tolist()
