"""Pasted tcpdump text is recognised even with the no-break spaces web pages and chat tools put in it."""

from __future__ import annotations

from pathlib import Path

from whyreset.ingest import iter_capture

NBSP_PASTE = (
    "1\u00a022:15:16.348064 127.0.0.1.32803 > 127.0.0.1.9999: Flags [S], seq 3357881819, win 32767, length 0\n"
    "2\u00a022:15:16.348105 127.0.0.1.9999 > 127.0.0.1.32803: Flags [R.], seq 0, ack 3357881820, win 0, length 0\n"
)


def test_paste_with_no_break_spaces_is_read_as_tcpdump_text(tmp_path: Path) -> None:
    path = tmp_path / "paste.txt"
    path.write_text(NBSP_PASTE, encoding="utf-8")
    chunks = list(iter_capture(str(path)))
    report = chunks[0].report
    assert report.format == "tcpdump-text"
    seqs = [int(s) for chunk in chunks for s in chunk.packets["seq"]]
    assert seqs == [3357881819, 0]
