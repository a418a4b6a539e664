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
import sys
from pathlib import Path

from bench import support
from tools.matrix import by_id

PROBE = Path(__file__).resolve().parent / "rag_probe.py"
COMBINATIONS = ("jwt-postgres-none-sse", "none-mongo-none-sse")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", action="append", help="repeatable; default: both")
    parser.add_argument("--chunks", type=int, default=1000, help="chunks in the corpus")
    parser.add_argument("--chunks-per-document", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    failed = 0
    for combination_id in args.combination or COMBINATIONS:
        combination = by_id(combination_id)
        if not combination.answers["rag"]:
            print(f"{combination.label}: rag is off, skipped")
            continue
        with support.installed(combination, f"bench-{combination.id}") as project:
            env = {
                **project.env,
                **support.service_environment(support.PACKAGE, combination.answers),
                # No response cache: the query and the bare embedding embed the same
                # questions, and a question repeated across rounds must cost what a new one
                # does.
                f"{support.PACKAGE.upper()}_CACHE_TTL_SECONDS": "0",
            }
            print(f"\n{combination.label}: fake provider, local hashing embedder, no cache")
            arguments = ["--chunks", str(args.chunks), "--queries", str(args.queries)]
            arguments += ["--chunks-per-document", str(args.chunks_per_document)]
            failed |= support.run_probe(project, PROBE, arguments, env)
    return failed


if __name__ == "__main__":
    sys.exit(main())
