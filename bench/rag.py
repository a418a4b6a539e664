"""RAG ingestion throughput and query latency of a rendered service, per database backend.

    uv run python -m bench.rag                                   # postgres and mongo
    uv run python -m bench.rag --combination none-mongo-none-sse --chunks 200 --queries 40

For each combination (default: `jwt-postgres-none-sse` and `none-mongo-none-sse`, both with
rag=True and the in-process job runner), renders and installs it (as the tests do), then
runs bench/rag_probe.py in the rendered project's environment against a database of this run
only: it uploads a generated corpus of about `--chunks` chunks through `POST /v1/documents`
and waits for the ingestion jobs (chunks/s, seconds per job), then asks `--queries` questions
through `POST /v1/rag/query` against the bare `POST /v1/embeddings` of the same questions,
rounds alternated, and prints p50/p95 of both, their ratio and the retrieval hit rate. The
service needs its database and Redis: TEST_POSTGRES_URL / TEST_MONGO_URL / TEST_REDIS_URL
when set, else the servers `scripts/servers.sh` starts.
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
from tools.matrix import by_id
from tools.project import RenderedProject

PROBE = Path(__file__).resolve().parent / "rag_probe.py"
COMBINATIONS = ("jwt-postgres-none-sse", "none-mongo-none-sse")
UNLIMITED = {
    "requests_per_minute": 10**9,
    "tokens_per_minute": 10**12,
    "tokens_per_day": 10**12,
}


def service_environment(package: str, answers: dict[str, object]) -> dict[str, str]:
    servers = project_tools.test_servers()
    prefix = package.upper() + "_"
    run = uuid.uuid4().hex[:12]
    env = {
        f"{prefix}ENVIRONMENT": "development",
        f"{prefix}LOG_LEVEL": "WARNING",
        f"{prefix}REDIS_URL": servers["TEST_REDIS_URL"],
        # Limits that never refuse: the benchmark measures their cost, not their effect.
        f"{prefix}TIER_LIMITS": json.dumps(dict.fromkeys(("free", "pro", "enterprise"), UNLIMITED)),
        # No response cache: the query and the bare embedding embed the same questions, and
        # a question repeated across rounds must cost what a new one does.
        f"{prefix}CACHE_TTL_SECONDS": "0",
        f"{prefix}REDIS_NAMESPACE": f"bench-{run}",
        "BENCH_AUTH": str(answers["auth"]),
    }
    if answers["database"] == "postgres":
        server = servers["TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
        # A database of this run only, created, migrated and dropped by the probe.
        env[f"{prefix}DATABASE_URL"] = f"{server.rsplit('/', 1)[0]}/bench_rag_{run}"
    else:
        env[f"{prefix}MONGO_URL"] = servers["TEST_MONGO_URL"]
        # Dropped by the probe.
        env[f"{prefix}MONGO_DATABASE"] = f"bench_rag_{run}"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", action="append", help="repeatable; default: both")
    parser.add_argument("--chunks", type=int, default=1000, help="chunks in the corpus")
    parser.add_argument("--chunks-per-document", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    package = "ai_service"
    failed = 0
    for combination_id in args.combination or COMBINATIONS:
        combination = by_id(combination_id)
        if not combination.answers["rag"]:
            print(f"{combination.label}: rag is off, skipped")
            continue
        with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
            path = project_tools.render(combination.answers, Path(tmp) / "project")
            # One environment per combination: they differ in Python version.
            env = project_tools.tool_env(f"bench-rag-{combination.id}")
            project = RenderedProject(combination, path, env)
            project.sync()
            env = {**project.env, **service_environment(package, combination.answers)}
            print(f"\n{combination.label}: fake provider, local hashing embedder, no cache")
            command = ["uv", "run", "python", str(PROBE), package]
            command += ["--chunks", str(args.chunks), "--queries", str(args.queries)]
            command += ["--chunks-per-document", str(args.chunks_per_document)]
            failed |= subprocess.run(command, cwd=path, env=env, check=False).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
