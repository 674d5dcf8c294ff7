"""Capture readers: pcap, pcapng (plain or gzip) and tcpdump text, into chunks of the packet table.

`iter_capture` is the entry point; `whyreset.ingest.craft` builds packets and capture files for tests and
benchmarks.
"""

from __future__ import annotations

from whyreset.ingest.reader import DEFAULT_CHUNK_RECORDS, iter_capture, read_capture

__all__ = ["DEFAULT_CHUNK_RECORDS", "iter_capture", "read_capture"]
