"""The one exception family.

Readers raise only `CaptureError` subclasses (with the byte offset and record number where reading stopped); any
other exception escaping a reader is a bug. The CLI turns these into one-line messages and exit statuses.
"""

from __future__ import annotations


class WhyresetError(Exception):
    """Base class of every error whyreset raises on purpose."""


class CaptureError(WhyresetError):
    """A capture could not be read (further). Carries where reading stopped."""

    def __init__(self, message: str, *, offset: int | None = None, record: int | None = None) -> None:
        self.message = message
        self.offset = offset
        """Byte offset in the (decompressed) input where the problem starts, if known."""
        self.record = record
        """1-based number of the record (packet/block/line) that could not be read, if known."""
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        return f"{self.message} (at {', '.join(where)})" if where else self.message


class UnknownFormatError(CaptureError):
    """The input is neither pcap, pcapng, gzip of those, nor tcpdump text."""


class TruncatedCaptureError(CaptureError):
    """The input ends in the middle of a record (a capture cut short, or still being written)."""


class CorruptCaptureError(CaptureError):
    """A record's framing is impossible (bad length, bad magic, inconsistent block trailer)."""


class UnsupportedLinkTypeError(CaptureError):
    """Every interface of the capture uses a link type whyreset cannot decode."""


class LabError(WhyresetError):
    """A lab scenario cannot run here (not root, no tracefs, missing tool) or failed to set up."""
