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
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx2

BODY = {
    "model": "fake",
    "messages": [{"role": "user", "content": "benchmark"}],
    "stream": True,
}


def bare_app(package: str) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    base = importlib.import_module(f"{package}.llm.base")
    fake_module = importlib.import_module(f"{package}.llm.fake")
    embedder = importlib.import_module(f"{package}.llm.embedder")
    tokens = int(os.environ["BENCH_TOKENS"])
    fake = fake_module.FakeProvider(
        chat_model="fake",
        embedding_model="local-embedding",
        embedder=embedder.HashingEmbedder(8),
        behaviour=fake_module.FakeBehaviour(answer_tokens=tokens),
    )

    async def chat(request: Any) -> StreamingResponse:
        body = await request.json()
        chat_request = base.ChatRequest(
            model=body["model"],
            messages=[base.ChatMessage(m["role"], m["content"]) for m in body["messages"]],
            max_tokens=4096,
        )

        async def lines() -> Any:
            async for event in fake.stream(chat_request):
                if isinstance(event, base.TextDelta):
                    payload = {"choices": [{"index": 0, "delta": {"content": event.text}}]}
                    yield f"data: {json.dumps(payload)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(lines(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str, package: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, package, "--serve", kind, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def sign_in(url: str, auth: str) -> dict[str, str]:
    """Headers of a new caller of the service, as its `auth` variant wants them."""
    if auth == "none":
        return {}
    async with httpx2.AsyncClient(base_url=url) as client:
        if auth == "jwt":
            account = {"email": f"bench-{os.getpid()}-{time.time_ns()}@example.com"}
            password = "bench password 123"  # noqa: S105 (a throw-away bench account)
            await client.post("/v1/auth/register", json={**account, "password": password})
            form = {"username": account["email"], "password": password}
            token = (await client.post("/v1/auth/token", data=form)).json()["access_token"]
        else:
            response = await client.post(
                "/v1/api-keys",
                json={"name": "bench", "owner_email": f"bench-{time.time_ns()}@example.com"},
                headers={"Authorization": f"Bearer {os.environ['BENCH_ADMIN_KEY']}"},
            )
            token = response.json()["key"]
    return {"Authorization": f"Bearer {token}"}


async def wait_until_streaming(url: str, started: float) -> float:
    """Seconds from process start to the first streamed chunk (the bare app needs no auth;
    the service is asked only once it answers, and its sign-in is part of the time)."""
    async with httpx2.AsyncClient(base_url=url, timeout=2) as client:
        while True:
            try:
                async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
                    if response.status_code == 401:
                        client.headers.update(await sign_in(url, os.environ["BENCH_AUTH"]))
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
            port = free_port()
            started = time.perf_counter()
            servers[kind] = (start(kind, package, port), f"http://127.0.0.1:{port}")
            ready = await wait_until_streaming(servers[kind][1], started)
            print(f"{kind}: first streamed chunk {ready:.2f}s after the process started")
        headers["service"] = await sign_in(servers["service"][1], os.environ["BENCH_AUTH"])
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


async def prepare_database(package: str) -> str | None:
    """A fresh, migrated PostgreSQL database for the service (Mongo needs none); its name."""
    url = os.environ.get(f"{package.upper()}_DATABASE_URL")
    if url is None:
        return None
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    target = make_url(url)
    engine = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    await engine.dispose()
    config = Config("alembic.ini")
    config.attributes["configure_logger"] = False
    await asyncio.to_thread(command.upgrade, config, "head")
    return target.database


async def drop_database(package: str, name: str) -> None:
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = make_url(os.environ[f"{package.upper()}_DATABASE_URL"]).set(database="postgres")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


def serve(kind: str, package: str, port: int) -> None:
    import uvicorn

    if kind == "bare":
        app = bare_app(package)
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
    database = asyncio.run(prepare_database(args.package))
    try:
        asyncio.run(measure(args.package, counts, args.rounds))
    finally:
        if database is not None:
            asyncio.run(drop_database(args.package, database))


if __name__ == "__main__":
    main()
