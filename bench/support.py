"""What the benchmark drivers share: a rendered, installed combination, and the settings its
service runs with (its servers, limits that never refuse, a database of the run only)."""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tools import project as project_tools
from tools.project import RenderedProject

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tools.matrix import Combination

PACKAGE = "ai_service"
ADMIN_KEY = "bench-admin-key"
UNLIMITED = {
    "requests_per_minute": 10**9,
    "tokens_per_minute": 10**12,
    "tokens_per_day": 10**12,
}
# The probes' client where it must cost little (its CPU is the machine's too), added to the
# rendered project's environment for the probe only (`uv run --with`).
AIOHTTP = "aiohttp==3.14.5"


def service_environment(package: str, answers: dict[str, object]) -> dict[str, str]:
    """The service's settings for a benchmark, and the probe's BENCH_AUTH/BENCH_ADMIN_KEY."""
    servers = project_tools.test_servers()
    prefix = package.upper() + "_"
    run = uuid.uuid4().hex[:12]
    env = {
        f"{prefix}ENVIRONMENT": "development",
        f"{prefix}LOG_LEVEL": "WARNING",
        f"{prefix}REDIS_URL": servers["TEST_REDIS_URL"],
        # Limits that never refuse: the benchmark measures their cost, not their effect.
        f"{prefix}TIER_LIMITS": json.dumps(dict.fromkeys(("free", "pro", "enterprise"), UNLIMITED)),
        # Its callers all sign up from one address (JWT only; other variants ignore them).
        f"{prefix}SIGN_IN_ATTEMPTS_PER_CLIENT": "1000000",
        f"{prefix}REGISTRATIONS_PER_CLIENT": "1000000",
        f"{prefix}ADMIN_API_KEY": ADMIN_KEY,
        f"{prefix}REDIS_NAMESPACE": f"bench-{run}",
        # A token that outlives the longest run (JWT only; other variants ignore it).
        f"{prefix}ACCESS_TOKEN_TTL_SECONDS": "86400",
        "BENCH_AUTH": str(answers["auth"]),
        "BENCH_ADMIN_KEY": ADMIN_KEY,
    }
    if answers["database"] == "postgres":
        server = servers["TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
        # A database of this run only, created, migrated and dropped by the probe.
        env[f"{prefix}DATABASE_URL"] = f"{server.rsplit('/', 1)[0]}/bench_{run}"
    else:
        env[f"{prefix}MONGO_URL"] = servers["TEST_MONGO_URL"]
        # Dropped by the probe.
        env[f"{prefix}MONGO_DATABASE"] = f"bench_{run}"
    return env


@contextmanager
def installed(
    combination: Combination, worker: str, rendered: Path | None = None
) -> Iterator[RenderedProject]:
    """The combination rendered into a temporary folder, or the copy of it at `rendered`
    (edits made there are measured), installed in the virtual environment `worker` (one a
    combination: they differ in Python version)."""
    with tempfile.TemporaryDirectory(prefix=f"{worker}-") as tmp:
        path = rendered or project_tools.render(combination.answers, Path(tmp) / "project")
        project = RenderedProject(combination, path.resolve(), project_tools.tool_env(worker))
        project.sync()
        yield project


def add_project_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--project",
        type=Path,
        help="an already rendered copy of the combination, edits and all, instead of a new one",
    )


def run_probe(
    project: RenderedProject,
    probe: Path,
    arguments: list[str],
    env: dict[str, str],
    *,
    extra: tuple[str, ...] = (),
) -> int:
    """`python PROBE PACKAGE ARGUMENTS...` in the rendered project, with `extra` packages."""
    command = ["uv", "run", *(f"--with={requirement}" for requirement in extra)]
    command += ["python", str(probe), PACKAGE, *arguments]
    return subprocess.run(command, cwd=project.path, env=env, check=False).returncode
