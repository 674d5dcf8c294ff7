"""Benchmark: whyreset against tshark's conversation table and tcptrace, on the same capture, in the same run.

Each tool runs end to end as a user would run it (start-up included), under ``/usr/bin/time`` for the wall
time and the peak resident memory:

    whyreset analyze --json F > /dev/null
    whyreset analyze --json --max-deferred 0 F > /dev/null   (nothing held back: the memory floor)
    whyreset analyze --json --jobs 2 F > /dev/null          (held-back connections diagnosed on two cores)
    whyreset analyze --json --no-diagnose F > /dev/null      (connections rebuilt, no causes: what the peers do)
    tshark -q -z conv,tcp -r F > /dev/null
    tcptrace -n -l F > /dev/null

The figures and the targets (>= 5x faster than tshark's conv table, no slower than tcptrace, < 300 MB peak per
million packets) go to stdout and to bench/RESULTS.md, one section per capture. ``--profile`` also runs the
pipeline under cProfile and prints where the time goes.

    .venv/bin/python bench/generate.py bench/out/bench-1m.pcap --packets 1000000
    .venv/bin/python bench/generate.py bench/out/web-1m.pcap --mix web --packets 1000000
    .venv/bin/python bench/run.py bench/out/bench-1m.pcap bench/out/web-1m.pcap --stages
"""

from __future__ import annotations

import argparse
import compileall
import cProfile
import io
import os
import platform
import pstats
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TIME = "/usr/bin/time"
READER_ONLY = (
    "import sys\n"
    "from whyreset.ingest import iter_capture\n"
    "for chunk in iter_capture(sys.argv[1], chunk_records=65536): pass\n"
)
"""ingest.iter_capture alone, to show how much of whyreset's time and peak memory is reading the file."""
SAMPLE_SECONDS = 0.05
"""Memory sampling period of the tool's child processes."""
TARGET_TSHARK_SPEEDUP = 5.0
TARGET_MB_PER_MILLION = 300.0


@dataclass(frozen=True, slots=True)
class Measure:
    """One tool's run."""

    tool: str
    command: str
    seconds: float
    peak_mb: float
    exit_status: int


def count_pcap_records(path: Path) -> int:
    """Records of a classic pcap, by walking the 16-byte record headers (no decoding)."""
    with open(path, "rb") as handle:
        header = handle.read(24)
        magic = struct.unpack("<I", header[:4])[0]
        order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        count = 0
        while True:
            record = handle.read(16)
            if len(record) < 16:
                return count
            handle.seek(struct.unpack(order + "I", record[8:12])[0], os.SEEK_CUR)
            count += 1


def whyreset_command() -> list[str]:
    installed = Path(sys.executable).with_name("whyreset")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "whyreset"]


def warm_page_cache(capture: Path) -> None:
    """Read the capture once, so every tool starts with it in the page cache (this machine's memory reclaim
    evicts idle file pages: without this, a run could pay for the disk)."""
    with open(capture, "rb") as handle:
        while handle.read(1 << 24):
            pass


def measure(tool: str, argv: list[str]) -> Measure:
    """Run ``argv`` with stdout to /dev/null under /usr/bin/time; wall seconds and peak memory.

    Peak memory is the tool's maximum RSS (/usr/bin/time) plus the largest sum of the proportional set sizes of
    the processes the tool starts, sampled from /proc: whyreset reads large files in a child process, and that
    memory counts too. (The tool itself is not sampled: reading a large process's smaps_rollup holds its
    memory map's lock and would slow it down.)
    """
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        full = [TIME, "-f", "%e %M", "-o", report.name, *argv]
        with open(os.devnull, "wb") as devnull:
            process = subprocess.Popen(full, stdout=devnull, stderr=subprocess.DEVNULL)
            children_peak_kb = _sample_children(process)
        fields = Path(report.name).read_text().split()
    # /usr/bin/time prints "Command exited with non-zero status N" before the format line when the tool fails.
    seconds, max_rss_kb = float(fields[-2]), int(fields[-1])
    shown = (Path(argv[0]).name if i == 0 else a.strip().replace("\n", "; ") for i, a in enumerate(argv))
    command = " ".join(shown) + " > /dev/null"
    return Measure(tool, command, seconds, (max_rss_kb + children_peak_kb) / 1024, process.returncode)


def _sample_children(process: subprocess.Popen[bytes]) -> int:
    """Largest sum of memory (kB) over the processes the tool under ``process`` (/usr/bin/time) started."""
    peak = 0
    while process.poll() is None:
        tools = _children(process.pid)
        peak = max(peak, sum(_memory_kb(pid) for tool in tools for pid in _descendants(tool)))
        time.sleep(SAMPLE_SECONDS)
    return peak


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        children = _children(pending.pop())
        found += children
        pending += children
    return found


def _memory_kb(pid: int) -> int:
    """Proportional set size (shared pages divided among the processes that map them, so a forked child's
    copy-on-write pages are not counted twice); the resident set size where PSS is not available."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except OSError:
            continue
    return 0


def compile_package() -> None:
    """Write whyreset's bytecode before timing it: a user's second run finds it cached, and a run under
    PYTHONDONTWRITEBYTECODE (set on some CI machines) would otherwise compile every module at every start
    (~0.15 s here)."""
    import whyreset

    compileall.compile_dir(Path(whyreset.__file__).parent, quiet=1)


def run_all(capture: Path, repeat: int) -> list[Measure]:
    whyreset = [*whyreset_command(), "analyze", "--json"]
    tools: list[tuple[str, list[str]]] = [
        ("whyreset", [*whyreset, str(capture)]),
        ("whyreset --max-deferred 0", [*whyreset, "--max-deferred", "0", str(capture)]),
        ("whyreset --jobs 2", [*whyreset, "--jobs", "2", str(capture)]),
        ("whyreset --no-diagnose", [*whyreset, "--no-diagnose", str(capture)]),
        ("whyreset reader only", [sys.executable, "-c", READER_ONLY, str(capture)]),
    ]
    if shutil.which("tshark"):
        tools.append(("tshark conv,tcp", ["tshark", "-q", "-z", "conv,tcp", "-r", str(capture)]))
    if shutil.which("tcptrace"):
        tools.append(("tcptrace -l", ["tcptrace", "-n", "-l", str(capture)]))
    best: dict[str, Measure] = {}
    for _ in range(repeat):
        for tool, argv in tools:
            warm_page_cache(capture)
            result = measure(tool, argv)
            print(f"  {tool:26} {result.seconds:8.2f} s  {result.peak_mb:8.1f} MB  exit {result.exit_status}")
            if tool not in best or result.seconds < best[tool].seconds:
                best[tool] = result
    return list(best.values())


def markdown(capture: Path, packets: int, measures: list[Measure]) -> str:
    ours = measures[0]
    million = packets / 1e6
    lines = [
        f"## {capture.name}",
        "",
        f"Capture `{capture.name}`: {packets:,} packets, {capture.stat().st_size / 1e6:,.0f} MB "
        f"(bench/generate.py). Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}. Wall time end to end (start-up included), best of the runs; "
        "peak memory: the tool's maximum RSS (/usr/bin/time) plus the peak sum of its child processes' "
        "proportional set sizes.",
        "",
        "| tool | command | seconds | packets/s | time vs whyreset | peak MB | MB per 1M packets |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for m in measures:
        lines.append(
            f"| {m.tool} | `{m.command}` | {m.seconds:.2f} | {packets / max(m.seconds, 1e-9):,.0f} | "
            f"{m.seconds / max(ours.seconds, 1e-9):.2f}x | {m.peak_mb:.0f} | {m.peak_mb / million:.0f} |"
        )
    lines += ["", "Targets:", ""]
    by_tool = {m.tool: m for m in measures}
    if "tshark conv,tcp" in by_tool:
        speedup = by_tool["tshark conv,tcp"].seconds / ours.seconds
        verdict = "met" if speedup >= TARGET_TSHARK_SPEEDUP else "NOT met"
        lines.append(f"- >= {TARGET_TSHARK_SPEEDUP:.0f}x faster than tshark's conv table: {speedup:.2f}x ({verdict})")
    if "tcptrace -l" in by_tool:
        ratio = by_tool["tcptrace -l"].seconds / ours.seconds
        verdict = "met" if ratio >= 1 else "NOT met"
        lines.append(f"- no slower than tcptrace: tcptrace takes {ratio:.2f}x whyreset's time ({verdict})")
    per_million = ours.peak_mb / million
    verdict = "met" if per_million < TARGET_MB_PER_MILLION else "NOT met"
    lines.append(f"- < {TARGET_MB_PER_MILLION:.0f} MB peak per million packets: {per_million:.0f} MB ({verdict})")
    return "\n".join(lines) + "\n"


def profile(capture: Path, top: int = 30) -> str:
    """cProfile of the pipeline in this process, as ``whyreset analyze --json`` runs it (one pass, JSON lines)."""
    from whyreset.analysis import AnalysisStream
    from whyreset.report.jsonout import connection_record, encode_json_line

    profiler = cProfile.Profile()
    profiler.enable()
    stream = AnalysisStream(str(capture))
    with open(os.devnull, "wb") as devnull:
        for connection, finding in stream:
            devnull.write(encode_json_line(connection_record(connection, finding, source=stream.name)))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captures", type=Path, nargs="+")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool (the best is kept)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="also profile the pipeline with cProfile")
    parser.add_argument("--stages", action="store_true", help="append bench/stages.py's breakdown to the results")
    args = parser.parse_args(argv)
    if not Path(TIME).exists():
        parser.error(f"{TIME} is needed to measure peak memory (apt-get install time)")
    compile_package()
    report = "# Benchmark results\n"
    for capture in args.captures:
        packets = count_pcap_records(capture)
        print(f"{capture}: {packets:,} packets")
        measures = run_all(capture, args.repeat)
        report += "\n" + markdown(capture, packets, measures)
        if args.stages:
            breakdown = subprocess.run(
                [sys.executable, str(HERE / "stages.py"), str(capture)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            report += "\nWhere whyreset's time goes (bench/stages.py, one process, stages timed separately):\n\n"
            report += "```\n" + breakdown + "```\n"
        if args.profile:
            print(profile(capture))
    print(report)
    args.results.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
