"""Run inside a rendered project's environment with aiohttp added (see bench/concurrency.py).

    python concurrency_probe.py PACKAGE [--levels 100,250,500,1000,1500,2000]
                                [--tokens 60] [--token-delay 0.25] [--ramp-seconds 5]

How many concurrent SSE streams one uvicorn worker holds, and what each costs in memory.
For each level N, a fresh process of each target is started and warmed, its idle RSS taken,
then N streams are opened, spread evenly over `--ramp-seconds`, each lasting about
`--tokens` x `--token-delay` seconds, so that all N are open at once at the peak:
- `service`: the rendered service's `/v1/chat/completions` (stream) with its fake provider
  slowed to `--token-delay` a token, with authentication, rate limits and usage records;
- `bare`: a plain Starlette endpoint streaming the same fake provider's tokens at the same
  pace (`probe_support.bare_app`), the baseline.
A level counts when every stream ends whole (200, the tokens, `[DONE]`) and the worker had
a socket open for each at once (its open files); the first level where the service fails
is the last one tried. Per level and target: errors by kind, streams open at once
at the peak, time to first token p50/p95, RSS idle and at the peak (sampled every 0.1 s),
memory per stream ((peak - idle) / N), open files and, for the service on PostgreSQL, the
connections to its database at the peak (does a stream hold one for its whole life?).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import probe_support
import uvloop
from probe_support import Answer, percentile

TARGETS = ("service", "bare")
MAX_TTFT_P95_MS = 1000.0


class Level:
    """The streams of one level against one target, and what was seen while they ran."""

    def __init__(self) -> None:
        self.open = 0
        self.peak_open = 0
        self.answers: list[Answer] = []
        self.rss: list[float] = []
        self.files: list[int] = []
        self.database: list[int] = []


async def stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], level: Level
) -> None:
    level.open += 1
    level.peak_open = max(level.peak_open, level.open)
    try:
        level.answers.append(await probe_support.post(session, url, body, headers))
    finally:
        level.open -= 1


async def watch(pid: int, level: Level, package: str, database: str | None) -> None:
    """Samples until cancelled; the service's database connections through one of its own
    (to the `postgres` database, so not counted)."""
    connection = None
    if database is not None:
        import asyncpg

        url = os.environ[f"{package.upper()}_DATABASE_URL"].replace("+asyncpg", "")
        connection = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
    try:
        while True:
            level.rss.append(probe_support.rss_mib(pid))
            level.files.append(probe_support.open_files(pid))
            if connection is not None:
                level.database.append(
                    await connection.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
                    )
                )
            await asyncio.sleep(0.1)
    finally:
        if connection is not None:
            await connection.close()


async def run_level(
    target: str,
    count: int,
    package: str,
    args: argparse.Namespace,
    logs: Path,
    database: str | None,
) -> dict[str, Any]:
    port = probe_support.free_port()
    base = f"http://127.0.0.1:{port}"
    if target == "service":
        command = probe_support.service_command(package, port)
    else:
        command = [sys.executable, __file__, package, "--serve", "--port", str(port)]
        command += ["--tokens", str(args.tokens), "--token-delay", str(args.token_delay)]
    process = probe_support.start(command, log=logs / f"{target}-{count}.log")
    level = Level()
    try:
        await probe_support.wait_until_up(base, process)
        headers = {"Content-Type": "application/json"}
        if target == "service":
            headers |= await probe_support.sign_in(base, os.environ["BENCH_AUTH"])
        body = probe_support.chat_body("fake", stream=True)
        url = f"{base}/v1/chat/completions"
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2)
        timeout = aiohttp.ClientTimeout(total=args.tokens * args.token_delay + 120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            warm = Level()
            await asyncio.gather(*(stream(session, url, body, headers, warm) for _ in range(10)))
            if errors := Counter(a.error for a in warm.answers if a.error):
                msg = f"{target} fails already in the warm-up: {dict(errors)}"
                raise SystemExit(msg)
            await asyncio.sleep(0.5)
            idle = probe_support.rss_mib(process.pid)
            watcher = asyncio.create_task(watch(process.pid, level, package, database))
            cpu = probe_support.cpu_seconds(process.pid)
            started = time.perf_counter()
            streams = []
            for index in range(count):
                # Evenly spread: the index-th stream opens at index/count of the ramp.
                opens = started + args.ramp_seconds * index / count
                await asyncio.sleep(max(0.0, opens - time.perf_counter()))
                streams.append(asyncio.create_task(stream(session, url, body, headers, level)))
            await asyncio.gather(*streams)
            wall = time.perf_counter() - started
            cpu = probe_support.cpu_seconds(process.pid) - cpu
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
    finally:
        probe_support.stop(process)
    good = [a for a in level.answers if a.error is None]
    peak = max(level.rss, default=idle)
    return {
        "errors": Counter(a.error for a in level.answers if a.error),
        "peak_open": level.peak_open,
        "ttft_p50": statistics.median(a.first for a in good) * 1000 if good else float("nan"),
        "ttft_p95": percentile([a.first for a in good], 0.95) * 1000 if good else float("nan"),
        "duration_p50": statistics.median(a.last for a in good) if good else float("nan"),
        "wall": wall,
        "cpu_share": cpu / wall,
        "idle": idle,
        "peak": peak,
        "per_stream_kib": (peak - idle) * 1024 / count,
        "files": max(level.files, default=0),
        "database": max(level.database, default=None),
    }


def report(target: str, count: int, figures: dict[str, Any]) -> None:
    errors = ", ".join(f"{n} {kind}" for kind, n in figures["errors"].items()) or "none"
    database = figures["database"]
    pooled = f", db connections {database}" if database is not None else ""
    print(
        f"  {target:7s} N={count:5d}  errors: {errors}  open at peak {figures['peak_open']:5d}  "
        f"ttft p50 {figures['ttft_p50']:7.1f} ms p95 {figures['ttft_p95']:7.1f} ms  "
        f"stream p50 {figures['duration_p50']:5.1f} s  RSS {figures['idle']:5.0f} -> "
        f"{figures['peak']:5.0f} MiB ({figures['per_stream_kib']:5.1f} KiB/stream)  "
        f"files {figures['files']}{pooled}  CPU {figures['cpu_share']:.0%} of a core"
    )


async def measure(package: str, args: argparse.Namespace, logs: Path, database: str | None) -> None:
    limit = probe_support.raise_open_files_limit()
    levels = [int(n) for n in args.levels.split(",")]
    ideal = args.tokens * args.token_delay
    print(
        f"open files limit {limit}; streams of {args.tokens} tokens, {args.token_delay:g} s "
        f"apart (about {ideal:.0f} s each), opened over {args.ramp_seconds:g} s"
    )
    held = dict.fromkeys(TARGETS, 0)
    # And with every first token within a second: beyond it the worker is out of CPU.
    prompt = dict.fromkeys(TARGETS, 0)
    for index, count in enumerate(levels):
        order = TARGETS if index % 2 == 0 else TARGETS[::-1]
        failed = False
        for target in order:
            watched = database if target == "service" else None
            figures = await run_level(target, count, package, args, logs, watched)
            report(target, count, figures)
            # All N open in the worker at once: a socket each (the client's count includes
            # connections still waiting in the listen backlog).
            if figures["errors"] or figures["files"] < count:
                failed = failed or target == "service"
            else:
                held[target] = count
                if figures["ttft_p95"] <= MAX_TTFT_P95_MS:
                    prompt[target] = max(prompt[target], count)
        if failed:
            break
    print(f"held with zero errors, every stream open in the worker at once: {held}")
    print(f"and with time to first token p95 within {MAX_TTFT_P95_MS:g} ms: {prompt}")
    for log in sorted(logs.glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        problems = [line for line in lines if "Traceback" in line or "error" in line.lower()]
        if problems:
            print(f"  {log.name}: {len(problems)} error line(s), first: {problems[0][:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--serve", action="store_true", help="serve the bare baseline")
    parser.add_argument("--port", type=int)
    parser.add_argument("--levels", default="100,250,500,1000,1500,2000")
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--token-delay", type=float, default=0.25)
    parser.add_argument("--ramp-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.serve:
        import uvicorn

        app = probe_support.bare_app(args.package, args.tokens, args.token_delay)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    database = asyncio.run(probe_support.prepare_database(args.package))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
            uvloop.run(measure(args.package, args, Path(tmp), database))
    finally:
        asyncio.run(probe_support.drop_database(args.package, database))


if __name__ == "__main__":
    main()
