"""What the probes share; they run inside a rendered project's environment and import this
module by its file name (`import probe_support`), as a script's own folder is on its path.

Processes and ports, a run's own database, a caller's credentials, percentiles, and what
the kernel says of a process tree (RSS, CPU time, open files) from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import resource
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    import aiohttp

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(command: list[str], *, log: Path | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """A server process, its output to `log` (kept for errors) or nowhere."""
    if log is None:
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs
        )
    with log.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **kwargs)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def service_command(package: str, port: int) -> list[str]:
    """One uvicorn worker of the rendered service, with the project's own interpreter (not a
    probe's, which may carry the bench's extra packages)."""
    python = Path(os.environ["UV_PROJECT_ENVIRONMENT"]) / "bin" / "python"
    return [
        str(python),
        "-m",
        "uvicorn",
        "--factory",
        f"{package}.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


async def wait_until_up(
    url: str, process: subprocess.Popen[bytes], path: str = "/health/ready", seconds: float = 90
) -> None:
    """Until `path` answers (any status below 500): the server has started."""
    deadline = time.monotonic() + seconds
    async with httpx2.AsyncClient(base_url=url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                msg = f"{url}: the server exited ({process.returncode}) before answering"
                raise SystemExit(msg)
            try:
                if (await client.get(path)).status_code < 500:
                    return
            except httpx2.TransportError:
                pass
            await asyncio.sleep(0.05)
    msg = f"{url} did not answer within {seconds:.0f} s"
    raise SystemExit(msg)


def raise_open_files_limit() -> int:
    """The soft limit of open files raised to the hard one (servers started afterwards
    inherit it): a connection is a file on each side."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- what /proc says of a process and its descendants ------------------------------------


def process_tree(pid: int) -> list[int]:
    pids, index = [pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in task.read_text().split()]
        index += 1
    return pids


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pid: int) -> float:
    """Resident memory of the process and its descendants."""
    return sum(_status_kib(p, "VmRSS") for p in process_tree(pid)) / 1024


def peak_rss_mib(pid: int) -> float:
    """The largest resident memory each process of the tree has had (VmHWM), summed."""
    return sum(_status_kib(p, "VmHWM") for p in process_tree(pid)) / 1024


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process and its descendants so far."""
    ticks = 0
    for p in process_tree(pid):
        try:
            # The command name (field 2) may hold spaces: count fields after its ')'.
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def open_files(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{p}/fd"))
    return total


# -- figures -----------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered)) - 1)]


# -- the client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One request as its client saw it; times in seconds from sending it."""

    first: float  # to the first bytes of the body (streamed: about the first token)
    last: float  # to the end of the body
    error: str | None  # None: a 200 whose body is whole (a stream that ended with [DONE])


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> Answer:
    """POST a chat completion and read its body to the end, streamed or not, parsing nothing
    but what tells a whole answer from a broken one, so the client costs every target the same."""
    started = time.perf_counter()
    first = 0.0
    tail = b""
    try:
        async with session.post(url, data=body, headers=headers) as response:
            async for data in response.content.iter_any():
                if not first:
                    first = time.perf_counter() - started
                tail = (tail + data)[-64:]
                if b'"error"' in data:
                    return Answer(first, time.perf_counter() - started, "error in the stream")
            last = time.perf_counter() - started
            if response.status != 200:
                return Answer(first, last, f"HTTP {response.status}")
    except Exception as error:  # every failure is counted, by its kind
        return Answer(first, time.perf_counter() - started, type(error).__name__)
    streamed = response.content_type == "text/event-stream"
    if streamed and b"[DONE]" not in tail:
        return Answer(first, last, "stream cut short")
    if not streamed and not tail.rstrip().endswith(b"}"):
        return Answer(first, last, "body cut short")
    return Answer(first, last, None)


def chat_body(model: str, *, stream: bool, max_tokens: int | None = None) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "benchmark"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


# -- the service's database and callers --------------------------------------------------


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


async def drop_database(package: str, name: str | None) -> None:
    """Drop the run's PostgreSQL database (`name`), or else its MongoDB database."""
    prefix = package.upper()
    if name is None:
        from pymongo import AsyncMongoClient

        url = os.environ[f"{prefix}_MONGO_URL"]
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        await client.drop_database(os.environ[f"{prefix}_MONGO_DATABASE"])
        await client.close()
        return
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = make_url(os.environ[f"{prefix}_DATABASE_URL"]).set(database="postgres")
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


async def sign_in(url: str, auth: str) -> dict[str, str]:
    """Headers of a new caller of the service, as its `auth` variant wants them."""
    if auth == "none":
        return {}
    async with httpx2.AsyncClient(base_url=url, timeout=60) as client:
        if auth == "jwt":
            account = {"email": f"bench-{os.getpid()}-{time.time_ns()}@example.com"}
            password = "bench password 123"  # noqa: S105 (a throw-away bench account)
            response = await client.post(
                "/v1/auth/register", json={**account, "password": password}
            )
            response.raise_for_status()
            form = {"username": account["email"], "password": password}
            response = await client.post("/v1/auth/token", data=form)
            response.raise_for_status()
            token = response.json()["access_token"]
        else:
            response = await client.post(
                "/v1/api-keys",
                json={"name": "bench", "owner_email": f"bench-{time.time_ns()}@example.com"},
                headers={"Authorization": f"Bearer {os.environ['BENCH_ADMIN_KEY']}"},
            )
            response.raise_for_status()
            token = response.json()["key"]
    return {"Authorization": f"Bearer {token}"}


# -- the baseline stream -----------------------------------------------------------------


def bare_app(package: str, tokens: int, token_delay: float = 0.0) -> Any:
    """A plain Starlette endpoint streaming the rendered project's fake provider's tokens as
    OpenAI-style `data:` lines, with nothing else around it."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    base = importlib.import_module(f"{package}.llm.base")
    fake_module = importlib.import_module(f"{package}.llm.fake")
    embedder = importlib.import_module(f"{package}.llm.embedder")
    fake = fake_module.FakeProvider(
        chat_model="fake",
        embedding_model="local-embedding",
        embedder=embedder.HashingEmbedder(8),
        behaviour=fake_module.FakeBehaviour(answer_tokens=tokens, token_delay=token_delay),
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

    async def ready(request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health/ready", ready),
        ]
    )
