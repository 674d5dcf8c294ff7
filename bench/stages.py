"""Where the time goes: the pipeline's stages timed one by one on a capture (in this process, no profiler).

    .venv/bin/python bench/stages.py bench/out/bench.pcap

Stages: read (ingest.iter_capture alone), track (core tracker, reading excluded), context (folding every
connection into the diagnosis context, a feed's connections at once as the stream does), diagnose (rules and
verdict per connection), timelines (the endpoints' state timelines, which the core builds when first read) and
records (JSON objects encoded as lines and dropped, as the CLI writes them). Each stage's time is its own. Every
connection is held in memory here (to time the stages apart; the CLI streams them); the cyclic GC is paused as in
the CLI. Peak RSS is the process's high-water mark at the end.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capture", type=Path)
    args = parser.parse_args(argv)
    path = str(args.capture)
    gc.disable()  # as the CLI does while it analyses an input (see whyreset.cli._cyclic_gc_paused)

    from whyreset.analysis import CHUNK_RECORDS, load_diagnoser
    from whyreset.core.tracker import ConnectionTracker
    from whyreset.ingest import iter_capture
    from whyreset.report.jsonout import connection_record, encode_json_line

    timings: dict[str, float] = {}
    started = time.perf_counter()
    packets = sum(len(chunk.packets) for chunk in iter_capture(path, chunk_records=CHUNK_RECORDS))
    timings["read"] = time.perf_counter() - started

    started = time.perf_counter()
    tracker = ConnectionTracker()
    batches = []  # the connections each feed finished, as the stream folds them into the context
    icmp_errors = []
    for chunk in iter_capture(path, chunk_records=CHUNK_RECORDS):
        icmp_errors.extend(chunk.icmp_errors)
        batches.append(tracker.feed(chunk))
    batches.append(tracker.finish())
    connections = [conn for batch in batches for conn in batch]
    timings["track"] = time.perf_counter() - started - timings["read"]

    diagnoser, warning = load_diagnoser()
    findings = {}
    if diagnoser is not None:
        started = time.perf_counter()
        context = diagnoser.new_context()
        for batch in batches:
            context.observe_many(batch)
        context.add_icmp(icmp_errors)
        timings["context"] = time.perf_counter() - started
        started = time.perf_counter()
        for conn in connections:
            finding = diagnoser.diagnose(conn, context)
            if finding is not None:
                findings[conn.uid] = finding
        timings["diagnose"] = time.perf_counter() - started
    elif warning:
        print(warning, file=sys.stderr)

    started = time.perf_counter()
    for conn in connections:  # the state timelines the records print are built by the core on first read
        conn.orig_states  # noqa: B018
        conn.resp_states  # noqa: B018
    timings["timelines"] = time.perf_counter() - started
    started = time.perf_counter()
    for conn in connections:  # as the CLI does: each record encoded and dropped
        encode_json_line(connection_record(conn, findings.get(conn.uid)))
    timings["records"] = time.perf_counter() - started

    total = sum(timings.values())
    print(f"{path}: {packets:,} packets, {len(connections):,} connections, {len(findings):,} findings")
    for stage, seconds in timings.items():
        rate = f"{packets / seconds:>12,.0f} packets/s" if seconds else ""
        per_conn = 1e6 * seconds / max(len(connections), 1)
        print(f"  {stage:10} {seconds:8.2f} s  {100 * seconds / total:5.1f} %  {per_conn:8.1f} us/conn  {rate}")
    print(f"  {'total':10} {total:8.2f} s")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
