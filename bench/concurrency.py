"""Concurrent SSE streams one worker of a rendered service holds, and memory per stream.

    uv run python -m bench.concurrency                      # the defaults combination
    uv run python -m bench.concurrency --combination api_key-postgres-none-sse \
        --levels 500,1000,2000 --tokens 60 --token-delay 0.25

Renders the combination and installs it (as the tests do), then runs
bench/concurrency_probe.py in the rendered project's environment: one uvicorn worker of the
service with its fake provider streaming `--tokens` tokens `--token-delay` seconds apart,
against a bare Starlette stream of the same fake provider at the same pace, at rising
numbers of concurrent streams until one fails: errors, time to first token p50/p95, RSS
idle and at the peak, memory per stream, open files and database connections. The service
needs its database and Redis: TEST_POSTGRES_URL / TEST_MONGO_URL / TEST_REDIS_URL when set,
else the servers `scripts/servers.sh` starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import support
from tools.matrix import by_id, defaults_combination

PROBE = Path(__file__).resolve().parent / "concurrency_probe.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", help="default: the defaults combination")
    parser.add_argument("--levels", default="100,250,500,1000,1500,2000")
    parser.add_argument("--tokens", type=int, default=60, help="in each answer")
    parser.add_argument("--token-delay", type=float, default=0.25, help="seconds per token")
    parser.add_argument("--ramp-seconds", type=float, default=5.0, help="to open a level's streams")
    support.add_project_option(parser)
    args = parser.parse_args()
    combination = by_id(args.combination) if args.combination else defaults_combination()
    prefix = support.PACKAGE.upper() + "_"
    with support.installed(combination, f"bench-{combination.id}", args.project) as project:
        env = {
            **project.env,
            **support.service_environment(support.PACKAGE, combination.answers),
            f"{prefix}FAKE_ANSWER_TOKENS": str(args.tokens),
            f"{prefix}FAKE_TOKEN_DELAY": str(args.token_delay),
        }
        print(f"{combination.label}: one uvicorn worker, fake provider")
        arguments = ["--levels", args.levels, "--tokens", str(args.tokens)]
        arguments += ["--token-delay", str(args.token_delay)]
        arguments += ["--ramp-seconds", str(args.ramp_seconds)]
        return support.run_probe(project, PROBE, arguments, env, extra=(support.AIOHTTP,))


if __name__ == "__main__":
    sys.exit(main())
