"""Run inside a rendered project's environment (see bench/stream.py, which starts it).

    python stream_probe.py PACKAGE [--streams 1,32,128] [--rounds 3] [--tokens 64]

Serves two apps from separate processes and loads both with the same client:
- `service`: the rendered service's `/v1/chat/completions` (stream) with everything around
  it: authentication, rate limits and token reservations in Redis, the usage record in the
  database, middleware, retry loop, timeouts and SSE encoding;
- `bare`: a plain Starlette endpoint that streams the SAME fake provider's tokens as
  OpenAI-style `data:` lines with nothing else around it.
Rounds alternate between the two, so both see the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

import httpx2
import probe_support

BODY = {
    "model": "fake",
    "messages": [{"role": "user", "content": "benchmark"}],
    "stream": True,
}


def start(kind: str, package: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, package, "--serve", kind, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until_streaming(url: str, started: float) -> float:
    """Seconds from process start to the first streamed chunk (the bare app needs no auth;
    the service is asked only once it answers, and its sign-in is part of the time)."""
    async with httpx2.AsyncClient(base_url=url, timeout=2) as client:
        while True:
            try:
                async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
                    if response.status_code == 401:
                        auth = os.environ["BENCH_AUTH"]
                        client.headers.update(await probe_support.sign_in(url, auth))
                        continue
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            return time.perf_counter() - started
            except httpx2.TransportError:
                await asyncio.sleep(0.02)


async def one_stream(client: httpx2.AsyncClient) -> tuple[float, int]:
    started = time.perf_counter()
    first = 0.0
    count = 0
    async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                count += 1
                if count == 1:
                    first = time.perf_counter() - started
    return first, count


async def load(url: str, streams: int, headers: dict[str, str]) -> dict[str, float]:
    limits = httpx2.Limits(max_connections=streams, max_keepalive_connections=streams)
    async with httpx2.AsyncClient(
        base_url=url, timeout=60, limits=limits, headers=headers
    ) as client:
        await one_stream(client)  # warm the connection pool and the app
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client) for _ in range(streams)))
        wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    return {
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p95_ms": ttfts[max(0, round(0.95 * len(ttfts)) - 1)] * 1000,
    }


async def measure(package: str, stream_counts: list[int], rounds: int) -> None:
    servers = {}
    headers: dict[str, dict[str, str]] = {}
    try:
        for kind in ("service", "bare"):
            port = probe_support.free_port()
            started = time.perf_counter()
            servers[kind] = (start(kind, package, port), f"http://127.0.0.1:{port}")
            ready = await wait_until_streaming(servers[kind][1], started)
            print(f"{kind}: first streamed chunk {ready:.2f}s after the process started")
        auth = os.environ["BENCH_AUTH"]
        headers["service"] = await probe_support.sign_in(servers["service"][1], auth)
        headers["bare"] = {}
        for streams in stream_counts:
            samples: dict[str, list[dict[str, float]]] = {"service": [], "bare": []}
            for _ in range(rounds):
                for kind in ("service", "bare"):
                    samples[kind].append(await load(servers[kind][1], streams, headers[kind]))
            summary = {
                kind: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
                for kind, runs in samples.items()
            }
            service, bare = summary["service"], summary["bare"]
            print(
                f"streams={streams:4d}  service {service['tokens_per_s']:8.0f} tok/s "
                f"ttft p50 {service['ttft_p50_ms']:6.1f} ms p95 {service['ttft_p95_ms']:6.1f} ms | "
                f"bare {bare['tokens_per_s']:8.0f} tok/s ttft p50 {bare['ttft_p50_ms']:6.1f} ms "
                f"p95 {bare['ttft_p95_ms']:6.1f} ms | throughput ratio "
                f"{service['tokens_per_s'] / bare['tokens_per_s']:.2f}, added ttft p50 "
                f"{service['ttft_p50_ms'] - bare['ttft_p50_ms']:+.1f} ms"
            )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)


def serve(kind: str, package: str, port: int) -> None:
    import uvicorn

    if kind == "bare":
        app = probe_support.bare_app(package, int(os.environ["BENCH_TOKENS"]))
    else:
        app = importlib.import_module(f"{package}.main").create_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--serve", choices=["service", "bare"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--streams", default="1,32,128")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.package, args.port)
        return
    counts = [int(n) for n in args.streams.split(",")]
    database = asyncio.run(probe_support.prepare_database(args.package))
    try:
        asyncio.run(measure(args.package, counts, args.rounds))
    finally:
        asyncio.run(probe_support.drop_database(args.package, database))


if __name__ == "__main__":
    main()
