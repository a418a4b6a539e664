"""Run inside a rendered project's environment with aiohttp added (see bench/gateway.py).

    python gateway_probe.py PACKAGE [--rounds 3] [--requests 100] [--seconds 3]
                            [--concurrency 32] [--tokens 64] [--profile DIR]

Four targets, each one process with one worker, all on loopback, loaded by the same client
(aiohttp, in this process) in rounds that alternate which target goes first:
- `direct`: the upstream itself, a no-delay OpenAI-compatible aiohttp app (this file's
  `upstream_app`): a completion of `--tokens` tokens with usage, streamed as one chunk a
  token, or not;
- `service`: the rendered service with `llm_base_url` pointing at the upstream, with
  authentication, rate limits (that never refuse) and a usage record a request;
- `litellm`: LiteLLM's proxy (`BENCH_LITELLM`, its own environment), one model pointing at
  the upstream, a master key, no database;
- `bare`: an aiohttp pass-through that copies the request and the response bytes, the floor
  for a proxy in Python.
For each: latency p50/p95 one request at a time, streamed (first and last byte) and not;
requests/s with `--concurrency` requests in flight; CPU per request of the target's own
process, RSS; then the ratios the issue sets targets for. `--profile DIR` records the
service with py-spy under the concurrent load, streamed and not, and says where its CPU
time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import probe_support
import uvloop
from aiohttp import web
from probe_support import Answer, percentile

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

TARGETS = ("direct", "service", "litellm", "bare")
MODEL = "bench-model"
LITELLM_KEY = "sk-bench-litellm"
WARMUP_REQUESTS = 20
WARMUP_SECONDS = 1.0
# The targets for the service.
MAX_ADDED_P50_MS = 5.0
MIN_STREAMED_VS_LITELLM = 5.0
MIN_STREAMED_VS_BARE = 0.5
MAX_RSS_MIB = 150.0


# -- the servers -------------------------------------------------------------------------


def upstream_app(tokens: int) -> web.Application:
    """An OpenAI-compatible chat completions endpoint that answers at once, every chunk
    serialised in advance: as little work as a server can do for the answer."""
    words = [f" w{i % 100}" for i in range(tokens)]
    usage = {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": 9 + tokens}
    head = {"id": "chatcmpl-bench", "created": 1_790_000_000, "model": MODEL}
    completion = json.dumps(
        head
        | {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(words)},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    ).encode()

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload = head | {"object": "chat.completion.chunk", "choices": choices} | extra
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        return event([{"index": 0, "delta": delta, "finish_reason": finish}])

    chunks = [
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": word}) for word in words),
        chunk({}, "stop"),
    ]
    usage_chunk = event([], usage=usage)

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=completion, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for data in chunks:
            await response.write(data)
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(usage_chunk)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(request: web.Request) -> web.Response:
        model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}
        return web.json_response({"object": "list", "data": [model]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def passthrough_app(upstream: str) -> web.Application:
    """Forwards the request's bytes upstream and the answer's bytes back, parsing neither."""

    async def client(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=2)
        app["client"] = aiohttp.ClientSession(connector=connector)
        yield
        await app["client"].close()

    async def chat(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["client"]
        body = await request.read()
        headers = {"Content-Type": "application/json"}
        async with session.post(f"{upstream}/chat/completions", data=body, headers=headers) as up:
            if up.content_type != "text/event-stream":
                return web.Response(
                    status=up.status, body=await up.read(), content_type=up.content_type
                )
            response = web.StreamResponse(
                status=up.status, headers={"Content-Type": "text/event-stream"}
            )
            await response.prepare(request)
            async for data in up.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(client)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve_forever(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


class Target:
    def __init__(self, name: str, process: subprocess.Popen[bytes], port: int) -> None:
        self.name = name
        self.process = process
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        self.session: aiohttp.ClientSession | None = None

    def open(self, concurrency: int) -> None:
        # Closed before uvicorn's 5 s keep-alive ends, so no request races a closing socket.
        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=2)
        timeout = aiohttp.ClientTimeout(total=120)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)

    async def post(self, body: bytes) -> Answer:
        if self.session is None:
            msg = f"{self.name}: no client session yet"
            raise RuntimeError(msg)
        return await probe_support.post(self.session, self.url, body, self.headers)


def litellm_config(upstream: str) -> dict[str, Any]:
    model = {"model": f"openai/{MODEL}", "api_base": upstream, "api_key": "unused"}
    return {
        "model_list": [{"model_name": MODEL, "litellm_params": model}],
        "general_settings": {"master_key": LITELLM_KEY},
    }


def litellm_environment() -> dict[str, str]:
    """Only what LiteLLM needs: none of the service's settings, no database."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return env | {
        # The model price list shipped in the package: no download at start-up.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }


async def start_targets(package: str, args: argparse.Namespace, logs: Path) -> dict[str, Target]:
    targets: dict[str, Target] = {}
    me = [sys.executable, __file__, package]

    def launch(name: str, command: list[str], **kwargs: Any) -> Target:
        port = int(command[command.index("--port") + 1])
        process = probe_support.start(command, log=logs / f"{name}.log", **kwargs)
        targets[name] = Target(name, process, port)
        return targets[name]

    port = probe_support.free_port()
    tokens = str(args.tokens)
    launch("direct", [*me, "--serve", "upstream", "--port", str(port), "--tokens", tokens])
    upstream = f"http://127.0.0.1:{port}/v1"
    port = probe_support.free_port()
    launch("bare", [*me, "--serve", "bare", "--port", str(port), "--upstream", upstream])
    prefix = package.upper() + "_"
    service_env = os.environ | {
        f"{prefix}LLM_BASE_URL": upstream,
        f"{prefix}LLM_API_KEY": "unused",
    }
    port = probe_support.free_port()
    launch("service", probe_support.service_command(package, port), env=service_env)
    config = logs / "litellm.yaml"
    config.write_text(json.dumps(litellm_config(upstream)))  # JSON is YAML
    port = probe_support.free_port()
    command = [os.environ["BENCH_LITELLM"], "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    launch("litellm", command, env=litellm_environment(), cwd=logs)
    for target in targets.values():
        base = target.url.removesuffix("/v1/chat/completions")
        path = {"litellm": "/health/liveliness", "service": "/health/ready"}.get(target.name, "/")
        await probe_support.wait_until_up(base, target.process, path)
        if target.name == "service":
            target.headers |= await probe_support.sign_in(base, os.environ["BENCH_AUTH"])
        elif target.name == "litellm":
            target.headers["Authorization"] = f"Bearer {LITELLM_KEY}"
        target.open(args.concurrency)
    return targets


# -- the load ----------------------------------------------------------------------------


async def one_at_a_time(target: Target, body: bytes, count: int) -> dict[str, Any]:
    cpu = probe_support.cpu_seconds(target.process.pid)
    answers = [await target.post(body) for _ in range(count)]
    cpu = probe_support.cpu_seconds(target.process.pid) - cpu
    return {"answers": answers, "cpu": cpu}


async def concurrently(
    target: Target, body: bytes, concurrency: int, seconds: float
) -> dict[str, Any]:
    answers: list[Answer] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            answers.append(await target.post(body))

    cpu = probe_support.cpu_seconds(target.process.pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    cpu = probe_support.cpu_seconds(target.process.pid) - cpu
    return {"answers": answers, "cpu": cpu, "wall": wall}


def errors_of(answers: list[Answer]) -> Counter[str]:
    return Counter(answer.error for answer in answers if answer.error)


PHASES = (
    ("c1", False),
    ("c1", True),
    ("cN", False),
    ("cN", True),
)


async def measure(targets: dict[str, Target], args: argparse.Namespace) -> dict[Any, Any]:
    bodies = {
        stream: probe_support.chat_body(MODEL, stream=stream, max_tokens=args.tokens)
        for stream in (False, True)
    }
    for target in targets.values():
        for stream in (False, True):
            warm = await one_at_a_time(target, bodies[stream], WARMUP_REQUESTS)
            warm |= await concurrently(target, bodies[stream], args.concurrency, WARMUP_SECONDS)
            if errors := errors_of(warm["answers"]):
                msg = f"{target.name} fails already in the warm-up: {dict(errors)}"
                raise SystemExit(msg)
    results: dict[Any, Any] = {}
    for phase, stream in PHASES:
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            shift = round_number % len(TARGETS)
            for name in TARGETS[shift:] + TARGETS[:shift]:
                if phase == "c1":
                    run = await one_at_a_time(targets[name], bodies[stream], args.requests)
                else:
                    run = await concurrently(
                        targets[name], bodies[stream], args.concurrency, args.seconds
                    )
                runs[name].append(run)
        results[phase, stream] = runs
    return results


def summary(runs: list[dict[str, Any]], phase: str) -> dict[str, float]:
    answers = [answer for run in runs for answer in run["answers"]]
    good = [answer for answer in answers if answer.error is None]
    figures = {
        "count": len(answers),
        "errors": len(answers) - len(good),
        "cpu_ms": 1000 * sum(run["cpu"] for run in runs) / max(1, len(answers)),
        "last_p50": statistics.median(a.last for a in good) * 1000,
        "last_p95": percentile([a.last for a in good], 0.95) * 1000,
        "first_p50": statistics.median(a.first for a in good) * 1000,
    }
    if phase == "cN":
        figures["rps"] = statistics.median(
            sum(a.error is None for a in run["answers"]) / run["wall"] for run in runs
        )
    return figures


# -- where the service's time goes -------------------------------------------------------


# What a sample was doing, by the first of these found anywhere in its stack. SQLAlchemy
# runs its I/O in greenlets whose stacks start at the event loop: they are known by their
# own frames (a read's session ends in a rollback, a write's in a commit).
STAGES = (
    (
        "database connections: checkout, pre-ping, new ones",
        (
            "_async_ping (",
            "_create_ssl_connection (",
            "Pool.connect (",
            "dbapi_connection.create (",
        ),
    ),
    (
        "auth: token or key, the caller's lookup",
        ("authenticate (", "get_principal (", "AsyncSession.close (", "Transaction.rollback ("),
    ),
    ("rate limits and reservations (Redis)", ("RateLimiter.", " (redis/")),
    (
        "usage record (a database write)",
        ("UsageRepository.record (", "AsyncSessionTransaction.__aexit__", "Transaction.commit ("),
    ),
    ("upstream call: openai SDK, httpx2", ("OpenAICompatibleProvider.",)),
    ("SSE: encoding, middleware sends, socket writes", ("EventSourceResponse.",)),
    ("thread pool hops (sync dependencies)", ("run_in_threadpool (", "WorkerThread.run (")),
)


NATIVE = "no Python frame (native code, waiting for the GIL)"


def stage_of(stack: tuple[str, ...]) -> str:
    joined = ";".join(stack)
    for name, markers in STAGES:
        if any(marker in joined for marker in markers):
            return name
    if stack == (NATIVE,):
        return NATIVE
    if stack[-1].startswith("Runner.run ("):
        return "event loop itself (uvloop: I/O and callbacks)"
    return "the rest: HTTP, routing, middleware, validation, metering"


def frame_group(frame: str, package: str) -> str:
    """`function (path:line)` of py-spy's raw output as the library it is in (a module of
    the service's own package, or a top-level package or module otherwise)."""
    path = frame.rsplit(" (", 1)[-1].rstrip(")")
    if path.startswith(f"{package}/"):
        return path.removesuffix(".py").replace("/", ".")
    return path.split("/", 1)[0].removesuffix(".py")


def report_profile(raw: Path, package: str, seconds: float, rate: int) -> None:
    """Where the samples were: by library, by the service's own functions (inclusive: the
    share of samples a function is anywhere in the stack), and by the function on top."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if count:
            # `function (path:line)` as `function (path)`: a function is one, whatever line.
            stack = tuple(re.sub(r":\d+\)$", ")", f) for f in frames.split(";") if f)
            stacks[stack or (NATIVE,)] += int(count)
    total = sum(stacks.values())
    if not total:
        print("    no samples")
        return
    stages: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    mine: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in stacks.items():
        stages[stage_of(stack)] += count
        libraries[frame_group(stack[-1], package)] += count
        mine.update(dict.fromkeys({f for f in stack if f" ({package}/" in f}, count))
        own[stack[-1]] += count
    print(
        f"    {total} samples in {seconds:.0f} s at {rate}/s: a thread of the process was "
        f"running {total / (seconds * rate):.0%} of the time"
    )
    print("    by stage:")
    for name, count in stages.most_common():
        print(f"      {count / total:6.1%}  {name}")
    print("    by library, of the function on top of the stack (self):")
    for name, count in libraries.most_common(16):
        print(f"      {count / total:6.1%}  {name}")
    print(f"    functions of {package} (inclusive):")
    for frame, count in mine.most_common(24):
        print(f"      {count / total:6.1%}  {frame}")
    print("    functions on top of the stack (self):")
    for frame, count in own.most_common(16):
        print(f"      {count / total:6.1%}  {frame}")


async def profile(
    targets: dict[str, Target], args: argparse.Namespace, package: str, directory: Path
) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: no profile")
        return
    directory.mkdir(parents=True, exist_ok=True)
    service = targets["service"]
    rate = 250
    for stream in (False, True):
        kind = "streamed" if stream else "not streamed"
        raw = directory / f"service-{'streamed' if stream else 'plain'}.txt"
        body = probe_support.chat_body(MODEL, stream=stream, max_tokens=args.tokens)
        recorder = subprocess.Popen(
            [
                *(py_spy, "record", "--pid", str(service.process.pid), "--rate", str(rate)),
                *("--duration", str(round(args.profile_seconds)), "--format", "raw"),
                *("--nonblocking", "--output", str(raw)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.5)  # py-spy attaches
        load = await concurrently(service, body, args.concurrency, args.profile_seconds + 1)
        await asyncio.to_thread(recorder.wait)
        rps = len(load["answers"]) / load["wall"]
        print(f"\nservice profile, {kind}, c={args.concurrency} ({rps:.0f} req/s): {raw}")
        report_profile(raw, package, args.profile_seconds, rate)


# -- the report --------------------------------------------------------------------------


def report(results: dict[Any, Any], targets: dict[str, Target], args: argparse.Namespace) -> None:
    figures = {
        key: {name: summary(runs[name], key[0]) for name in TARGETS}
        for key, runs in results.items()
    }
    for (phase, stream), by_target in figures.items():
        kind = "streamed" if stream else "not streamed"
        if phase == "c1":
            count = by_target["direct"]["count"]
            print(f"\n{kind}, one request at a time ({count} per target):")
            direct = by_target["direct"]["last_p50"]
            for name, f in by_target.items():
                first = f"first byte p50 {f['first_p50']:6.1f} ms, " if stream else ""
                print(
                    f"  {name:8s} {first}p50 {f['last_p50']:6.1f} ms  p95 {f['last_p95']:6.1f} ms"
                    f"  added p50 {f['last_p50'] - direct:+6.1f} ms  "
                    f"cpu {f['cpu_ms']:5.2f} ms/req  errors {f['errors']}"
                )
        else:
            print(f"\n{kind}, {args.concurrency} in flight ({args.rounds} x {args.seconds:g} s):")
            for name, f in by_target.items():
                print(
                    f"  {name:8s} {f['rps']:7.0f} req/s  p50 {f['last_p50']:7.1f} ms  "
                    f"p95 {f['last_p95']:7.1f} ms  cpu {f['cpu_ms']:5.2f} ms/req  "
                    f"errors {f['errors']}"
                )
    print("\nmemory after the run (RSS now / peak):")
    rss = {}
    for name, target in targets.items():
        rss[name] = probe_support.rss_mib(target.process.pid)
        peak = probe_support.peak_rss_mib(target.process.pid)
        print(f"  {name:8s} {rss[name]:6.0f} / {peak:6.0f} MiB")

    plain_c1, stream_c1 = figures["c1", False], figures["c1", True]
    plain_cn, stream_cn = figures["cN", False], figures["cN", True]
    added = plain_c1["service"]["last_p50"] - plain_c1["direct"]["last_p50"]
    added_stream = stream_c1["service"]["last_p50"] - stream_c1["direct"]["last_p50"]
    vs_litellm = stream_cn["service"]["rps"] / stream_cn["litellm"]["rps"]
    vs_bare = stream_cn["service"]["rps"] / stream_cn["bare"]["rps"]

    def verdict(ok: bool) -> str:
        return "meets the target" if ok else "MISSES the target"

    print("\nthe service against the issue's targets:")
    print(
        f"  added p50, not streamed: {added:+.1f} ms "
        f"({verdict(added <= MAX_ADDED_P50_MS)} of {MAX_ADDED_P50_MS:g} ms); "
        f"LiteLLM {plain_c1['litellm']['last_p50'] - plain_c1['direct']['last_p50']:+.1f} ms, "
        f"bare {plain_c1['bare']['last_p50'] - plain_c1['direct']['last_p50']:+.1f} ms"
    )
    print(
        f"  added p50, streamed (last byte): {added_stream:+.1f} ms; LiteLLM "
        f"{stream_c1['litellm']['last_p50'] - stream_c1['direct']['last_p50']:+.1f} ms, bare "
        f"{stream_c1['bare']['last_p50'] - stream_c1['direct']['last_p50']:+.1f} ms"
    )
    print(
        f"  streamed req/s: {vs_litellm:.1f}x LiteLLM's "
        f"({verdict(vs_litellm >= MIN_STREAMED_VS_LITELLM)} of {MIN_STREAMED_VS_LITELLM:g}x), "
        f"{vs_bare:.2f}x the bare pass-through's "
        f"({verdict(vs_bare >= MIN_STREAMED_VS_BARE)} of {MIN_STREAMED_VS_BARE:g}x)"
    )
    print(
        f"  not streamed req/s: {plain_cn['service']['rps'] / plain_cn['litellm']['rps']:.1f}x "
        f"LiteLLM's, {plain_cn['service']['rps'] / plain_cn['bare']['rps']:.2f}x the bare "
        f"pass-through's"
    )
    print(
        f"  RSS {rss['service']:.0f} MiB ({verdict(rss['service'] < MAX_RSS_MIB)} of "
        f"{MAX_RSS_MIB:g} MiB); LiteLLM {rss['litellm']:.0f} MiB"
    )


async def main_async(package: str, args: argparse.Namespace, logs: Path) -> None:
    targets: dict[str, Target] = {}
    try:
        targets = await start_targets(package, args, logs)
        results = await measure(targets, args)
        report(results, targets, args)
        if args.profile:
            await profile(targets, args, package, Path(args.profile))
    finally:
        for target in targets.values():
            if target.session is not None:
                await target.session.close()
            probe_support.stop(target.process)
    for name in targets:
        log = (logs / f"{name}.log").read_text(errors="replace")
        problems = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
        if problems:
            print(f"  {name} log: {len(problems)} error line(s), first: {problems[0][:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--serve", choices=["upstream", "bare"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if args.serve == "upstream":
        uvloop.run(serve_forever(upstream_app(args.tokens), args.port))
        return
    if args.serve == "bare":
        uvloop.run(serve_forever(passthrough_app(args.upstream), args.port))
        return
    database = asyncio.run(probe_support.prepare_database(args.package))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
            uvloop.run(main_async(args.package, args, Path(tmp)))
    finally:
        asyncio.run(probe_support.drop_database(args.package, database))


if __name__ == "__main__":
    main()
