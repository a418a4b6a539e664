"""Render a combination and run the rendered project's own commands in it.

Shared by the tests and the benchmarks. Each worker (a pytest-xdist worker, or the
benchmark) keeps one virtual environment and one mypy cache and re-syncs them per project,
so installing and type-checking dependencies that did not change costs next to nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import copier
import redis
import yaml
from copier.errors import DirtyLocalWarning

from tools.matrix import ROOT, Combination


def cache_dir() -> Path:
    path = Path(os.environ.get("COPIER_TEST_CACHE", Path.home() / ".cache" / "copier-fastapi-ai"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def tool_env(worker: str) -> dict[str, str]:
    """Environment for `uv` and the rendered project's tools, with this worker's caches."""
    # The caller may itself run under `uv run`: its virtual environment is not the project's.
    env = {
        k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("PYTEST_")
    }
    cache = cache_dir()
    # Per checkout too: runs from two clones at once would re-sync each other's environments.
    own = f"{hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]}-{worker}"
    env.update(
        UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
        UV_PROJECT_ENVIRONMENT=str(cache / "venvs" / own),
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_PROGRESS="1",
        MYPY_CACHE_DIR=str(cache / "mypy" / own),
        RUFF_CACHE_DIR=str(cache / "ruff" / own),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


class CommandFailed(AssertionError):
    pass


@dataclass
class CommandResult:
    args: list[str]
    returncode: int
    output: str
    seconds: float

    def check(self) -> CommandResult:
        if self.returncode != 0:
            msg = (
                f"`{' '.join(self.args)}` exited {self.returncode} after {self.seconds:.1f}s:\n"
                f"{self.output}"
            )
            raise CommandFailed(msg)
        return self


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> CommandResult:
    started = time.perf_counter()
    process = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = process.stdout + process.stderr
    return CommandResult(args, process.returncode, output, time.perf_counter() - started)


def render(answers: dict[str, Any], destination: Path) -> Path:
    """Render the working tree of this repository, uncommitted edits included."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DirtyLocalWarning)
        copier.run_copy(
            str(ROOT),
            destination,
            data=answers,
            defaults=True,
            unsafe=True,
            quiet=True,
            vcs_ref="HEAD",
        )
    return destination


@dataclass
class RenderedProject:
    combination: Combination
    path: Path
    env: dict[str, str]

    @property
    def answers(self) -> dict[str, Any]:
        return self.combination.answers

    def run(self, *args: str, env: dict[str, str] | None = None) -> CommandResult:
        return run(list(args), cwd=self.path, env={**self.env, **(env or {})})

    def sync(self) -> None:
        """Install the project into the worker's environment, unless it holds it already."""
        marker = Path(self.env["UV_PROJECT_ENVIRONMENT"]) / ".rendered-project"
        if marker.exists() and marker.read_text() == str(self.path):
            return
        # From the rendered uv.lock (`--locked` refuses a stale one), so every check runs on
        # the versions a user gets. Compiled once here, so the project's own processes
        # (pytest, the app instances its tests start) import from bytecode: about half the
        # start-up time.
        self.run("uv", "sync", "--locked", "--all-groups", "--compile-bytecode").check()
        marker.write_text(str(self.path))

    def run_own_tests(
        self,
        servers: dict[str, str],
        env: dict[str, str] | None = None,
        pytest_args: tuple[str, ...] = (),
    ) -> str:
        """The project's own pytest against these servers, as a user with a `.env` and
        variables of their own runs it; its summary line.

        The suite must not read either (a `.env` naming an unreachable provider and another
        default tier, a fake provider that fails), and must leave the Redis database as it
        found it: it runs in a database of this worker's, whose keys are compared before and
        after."""
        self.sync()
        prefix = yaml.safe_load((self.path / ".copier-answers.yml").read_text())["package_name"]
        prefix = f"{prefix.upper()}_"
        env_file = self.path / ".env"
        env_file.write_text(
            # An unreachable provider; authentication's default tier, or the tier of anonymous
            # callers.
            f"{prefix}LLM_BASE_URL=http://127.0.0.1:9\n"
            f"{prefix}DEFAULT_TIER=enterprise\n{prefix}ANONYMOUS_TIER=enterprise\n"
        )
        redis_url = worker_redis_url(servers["TEST_REDIS_URL"])
        hostile = {f"{prefix}FAKE_FAILURE": "server_error", "OPENAI_BASE_URL": "http://127.0.0.1:9"}
        # Wide, so that the summary's FAILED lines keep their messages (shown in the progress).
        run_env = {**servers, "TEST_REDIS_URL": redis_url, "COLUMNS": "300", **hostile}
        before = redis_keys(redis_url)
        pytest = ["uv", "run", "--locked", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
        try:
            result = self.run(*pytest, env={**run_env, **(env or {})}).check()
        finally:
            env_file.unlink()
        if left := redis_keys(redis_url) - before:
            msg = f"the suite left {len(left)} Redis keys behind, e.g. {sorted(left)[:5]}"
            raise CommandFailed(msg)
        # pytest's last line, wherever uv's own messages (on stderr) landed around it.
        lines = result.output.splitlines()
        return [line for line in lines if re.search(r" in [\d.]+s", line)][-1]


def worker_redis_url(url: str) -> str:
    """`url` with a database of this worker's own (1, 2, ...), which only the suites this
    worker runs, one at a time, use: what one left behind shows there."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return urlunsplit(urlsplit(url)._replace(path=f"/{int(worker.removeprefix('gw')) % 15 + 1}"))


def redis_keys(url: str) -> set[bytes]:
    with redis.Redis.from_url(url) as client:
        return set(client.scan_iter(count=1000))


SERVER_VARIABLES = ("TEST_POSTGRES_URL", "TEST_MONGO_URL", "TEST_REDIS_URL")


def test_servers() -> dict[str, str]:
    """The servers' URLs from the environment, or from `scripts/servers.sh start`."""
    if all(os.environ.get(name) for name in SERVER_VARIABLES):
        return {name: os.environ[name] for name in SERVER_VARIABLES}
    script = ROOT / "scripts" / "servers.sh"
    output = subprocess.run(
        ["bash", str(script), "start"], capture_output=True, text=True, check=True
    ).stdout
    servers = {}
    for line in output.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        servers[name] = shlex.split(value)[0]
    return servers
