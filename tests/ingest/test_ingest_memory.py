"""Memory stays bounded by the chunk size, not the capture size (regular files are memory-mapped)."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from whyreset.ingest import craft, iter_capture


@pytest.fixture(scope="module")
def big_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 200,000-packet pcap (about 56 MB), built once for the module."""
    path = tmp_path_factory.mktemp("memory") / "big.pcap"
    return path, _big_capture(path)


def _big_capture(path: Path, n: int = 200_000) -> int:
    rng = np.random.default_rng(3)
    batch = craft.bulk_tcp_frames(
        src=rng.integers(0, 2**32, n, dtype=np.uint32), dst=rng.integers(0, 2**32, n, dtype=np.uint32),
        sport=rng.integers(1024, 65536, n), dport=443, seq=rng.integers(0, 2**32, n), flags=0x18,
        payload_len=rng.integers(0, 400, n), ts_val=np.arange(n),
    )  # fmt: skip
    craft.write_pcap_bulk(path, np.arange(n) * 1000, batch)
    return path.stat().st_size


def _peak_while_reading(source: object) -> tuple[int, int]:
    tracemalloc.start()
    try:
        rows = sum(len(chunk.packets) for chunk in iter_capture(source, chunk_records=10_000))  # type: ignore[arg-type]
        return rows, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reading_a_file_does_not_load_it(big_capture: tuple[Path, int]) -> None:
    path, size = big_capture
    rows, peak = _peak_while_reading(str(path))
    assert rows == 200_000
    assert peak < size / 4, (peak, size)


def test_reading_a_pipe_keeps_a_bounded_window(big_capture: tuple[Path, int]) -> None:
    path, size = big_capture
    producer = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE)
    try:
        rows, peak = _peak_while_reading(producer.stdout)
    finally:
        producer.wait(30)
    assert rows == 200_000
    # The stream window is at most a few read batches (8 MB each), whatever the capture size.
    assert peak < min(size * 0.8, 48 << 20), (peak, size)
