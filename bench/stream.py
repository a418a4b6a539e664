"""Streaming overhead of a rendered service against a bare Starlette stream, same run.

    uv run python -m bench.stream                        # the defaults combination
    uv run python -m bench.stream --combination ID --streams 1,32,128 --tokens 64

Renders the combination, installs it (as the tests do), then runs bench/stream_probe.py in
the rendered project's environment: tokens per second and time to first token p50/p95 with
N concurrent streams through `/v1/chat/completions`, against a bare Starlette endpoint fed
by the same fake provider, rounds alternated; it prints the ratio. The service needs its
database and Redis: TEST_POSTGRES_URL / TEST_MONGO_URL / TEST_REDIS_URL when set, else the
servers `scripts/servers.sh` starts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tools import project as project_tools
from tools.matrix import by_id, defaults_combination
from tools.project import RenderedProject

PROBE = Path(__file__).resolve().parent / "stream_probe.py"
ADMIN_KEY = "bench-admin-key"
UNLIMITED = {
    "requests_per_minute": 10**9,
    "tokens_per_minute": 10**12,
    "tokens_per_day": 10**12,
}


def service_environment(package: str, answers: dict[str, object], tokens: int) -> dict[str, str]:
    servers = project_tools.test_servers()
    prefix = package.upper() + "_"
    env = {
        f"{prefix}ENVIRONMENT": "development",
        f"{prefix}LOG_LEVEL": "WARNING",
        f"{prefix}REDIS_URL": servers["TEST_REDIS_URL"],
        f"{prefix}FAKE_ANSWER_TOKENS": str(tokens),
        # Limits that never refuse: the benchmark measures their cost, not their effect.
        f"{prefix}TIER_LIMITS": json.dumps(dict.fromkeys(("free", "pro", "enterprise"), UNLIMITED)),
        f"{prefix}ADMIN_API_KEY": ADMIN_KEY,
        f"{prefix}REDIS_NAMESPACE": f"bench-{uuid.uuid4().hex}",
        "BENCH_TOKENS": str(tokens),
        "BENCH_AUTH": str(answers["auth"]),
        "BENCH_ADMIN_KEY": ADMIN_KEY,
    }
    if answers["database"] == "postgres":
        server = servers["TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
        # A database of this run only, created and migrated by the probe.
        env[f"{prefix}DATABASE_URL"] = f"{server.rsplit('/', 1)[0]}/bench_{uuid.uuid4().hex[:12]}"
    else:
        env[f"{prefix}MONGO_URL"] = servers["TEST_MONGO_URL"]
        env[f"{prefix}MONGO_DATABASE"] = "bench_stream"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination")
    parser.add_argument("--streams", default="1,32,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    combination = by_id(args.combination) if args.combination else defaults_combination()
    package = "ai_service"

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        path = project_tools.render(combination.answers, Path(tmp) / "project")
        project = RenderedProject(combination, path, project_tools.tool_env("bench"))
        project.sync()
        env = {
            **project.env,
            **service_environment(package, combination.answers, args.tokens),
        }
        # Start-up is measured as a deployed service starts: from compiled bytecode.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        project.run("uv", "run", "python", "-m", "compileall", "-q", "src", env=env).check()
        subprocess.run(
            [
                "uv",
                "run",
                "python",
                "-m",
                "compileall",
                "-q",
                str(Path(project.env["UV_PROJECT_ENVIRONMENT"])),
            ],
            cwd=path,
            env=env,
            check=True,
        )
        print(f"{combination.label}: {args.tokens} tokens per answer, fake provider, no delay")
        command = ["uv", "run", "python", str(PROBE), package]
        command += ["--streams", args.streams, "--rounds", str(args.rounds)]
        return subprocess.run(command, cwd=path, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
