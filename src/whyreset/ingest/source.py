"""Where capture bytes come from: a memory-mapped regular file, or a stream read as it arrives.

Regular files are memory-mapped, so a capture larger than RAM is walked without being loaded (the kernel
pages it in and out). Mapped pages that the process has touched count in its resident memory until it unmaps
them: `PageReleaser` hands them back once the reader has moved past them, so reading a file costs a window of
it, not its size. Everything else (standard input, pipes, sockets, gzip, file objects) is a
`ByteStream`: reads return what is available now instead of waiting for a full buffer, so
``tcpdump -w - -U | whyreset analyze -`` sees packets while the capture runs. ``more_ready`` tells the
reader whether more bytes are waiting, so that it can batch them when the producer is fast and hand over
what it has when the producer pauses.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import select
import stat
import zlib
from typing import IO, Protocol

from whyreset.errors import CorruptCaptureError, TruncatedCaptureError

GZIP_MAGIC = b"\x1f\x8b"


class ByteStream(Protocol):
    """A source of bytes read incrementally."""

    offset: int
    """Bytes handed out so far (in the decompressed stream for gzip)."""

    def read_some(self, size: int) -> bytes:
        """Up to ``size`` bytes, at least one unless at end of input (then ``b""``); waits only for one."""
        ...

    def more_ready(self, wait: float = 0.0) -> bool:
        """True when a `read_some` now would not block (data pending, or end of input reached).

        ``wait`` seconds at most are spent waiting for data to become ready.
        """
        ...


class RawStream:
    """Bytes from a binary file object (stdin, a pipe, a socket file, ``BytesIO``...), as they arrive."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.offset = 0
        self._read = getattr(handle, "read1", None) or handle.read
        self._fd = _fileno(handle)
        self._pushed_back = b""

    def read_some(self, size: int) -> bytes:
        if self._pushed_back:
            data, self._pushed_back = self._pushed_back[:size], self._pushed_back[size:]
        else:
            data = self._read(size) or b""
        self.offset += len(data)
        return data

    def push_back(self, data: bytes) -> None:
        """Return bytes read ahead (sniffing) so that the next reads hand them out again."""
        self._pushed_back = data + self._pushed_back
        self.offset -= len(data)

    def more_ready(self, wait: float = 0.0) -> bool:
        if self._pushed_back or self._fd is None:
            return True  # in-memory objects never wait
        try:
            readable, _, _ = select.select([self._fd], [], [], wait)
        except (OSError, ValueError):
            return True
        return bool(readable)


class GzipStream:
    """Decompress a gzip stream (several members allowed) as its bytes arrive."""

    READ_SIZE = 1 << 16

    def __init__(self, inner: ByteStream) -> None:
        self.inner = inner
        self.offset = 0
        self._decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._member_bytes = 0
        """Compressed bytes fed to the current member: non-zero at end of input means it was cut."""
        self._pending = b""
        self._inner_done = False

    def read_some(self, size: int) -> bytes:
        while not self._pending:
            if self._inner_done:
                return b""
            self._decompress_more()
        data, self._pending = self._pending[:size], self._pending[size:]
        self.offset += len(data)
        return data

    def more_ready(self, wait: float = 0.0) -> bool:
        return bool(self._pending) or self._inner_done or self.inner.more_ready(wait)

    def push_back(self, data: bytes) -> None:
        """Return decompressed bytes read ahead (sniffing)."""
        self._pending = data + self._pending
        self.offset -= len(data)

    def _decompress_more(self) -> None:
        compressed = self.inner.read_some(self.READ_SIZE)
        if not compressed:
            self._inner_done = True
            if self._member_bytes and not self._decompressor.eof:
                raise TruncatedCaptureError(
                    "gzip stream ends before its end marker", offset=self.offset + len(self._pending)
                )
            return
        try:
            self._feed(compressed)
        except zlib.error as exc:
            raise CorruptCaptureError(f"gzip data is corrupt: {exc}", offset=self.offset + len(self._pending)) from None

    def _feed(self, compressed: bytes) -> None:
        if self._decompressor.eof:
            self._start_member(compressed)
            return
        self._member_bytes += len(compressed)
        self._pending += self._decompressor.decompress(compressed)
        if self._decompressor.eof and self._decompressor.unused_data:
            self._start_member(self._decompressor.unused_data)

    def _start_member(self, data: bytes) -> None:
        # Bytes after a finished member: another member (``cat a.gz b.gz``), or zero padding gzip tolerates.
        if not data.strip(b"\0"):
            return
        self._decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._member_bytes = 0
        self._feed(data)


def _fileno(handle: IO[bytes]) -> int | None:
    try:
        return handle.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def map_regular_file(handle: IO[bytes]) -> mmap.mmap | None:
    """Memory-map ``handle`` when it is a non-empty regular file read from its start; None otherwise."""
    fd = _fileno(handle)
    if fd is None:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0 or handle.tell() != 0:
            return None
        mapping = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    with contextlib.suppress(AttributeError, OSError):
        mapping.madvise(mmap.MADV_SEQUENTIAL)
    return mapping


RELEASE_STEP = 16 << 20
"""Bytes read past the last release before releasing again (one madvise call per step, not per chunk)."""


class PageReleaser:
    """Drops the pages of a read-only file mapping that lie behind the read position from the process.

    ``madvise(MADV_DONTNEED)`` on a shared file mapping unmaps the pages (they leave the process's RSS; the page
    cache keeps them for the kernel to reuse or evict); touching one again reads it back from the file, so an
    array still viewing released bytes stays correct, only slower.
    """

    def __init__(self, mapping: mmap.mmap, step: int = RELEASE_STEP) -> None:
        self.mapping = mapping
        self.step = max(step, mmap.PAGESIZE)
        self.released = 0
        """Bytes from the start of the mapping already given back."""

    def release_before(self, position: int) -> None:
        """The reader will not read before ``position`` again: release the whole pages before it."""
        end = position - position % mmap.PAGESIZE
        if end - self.released < self.step:
            return
        with contextlib.suppress(AttributeError, OSError, ValueError):  # no madvise here: keep the pages
            self.mapping.madvise(mmap.MADV_DONTNEED, self.released, end - self.released)
        self.released = end


class PrefixedRawIO(io.RawIOBase):
    """A readable raw file object over a `ByteStream` (what the tcpdump text reader receives)."""

    def __init__(self, stream: ByteStream) -> None:
        super().__init__()
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.stream.read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)
