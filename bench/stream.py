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
import subprocess
import sys
from pathlib import Path

from bench import support
from tools.matrix import by_id, defaults_combination

PROBE = Path(__file__).resolve().parent / "stream_probe.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination")
    parser.add_argument("--streams", default="1,32,128")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    combination = by_id(args.combination) if args.combination else defaults_combination()
    prefix = support.PACKAGE.upper() + "_"

    with support.installed(combination, f"bench-{combination.id}") as project:
        path = project.path
        env = {
            **project.env,
            **support.service_environment(support.PACKAGE, combination.answers),
            f"{prefix}FAKE_ANSWER_TOKENS": str(args.tokens),
            "BENCH_TOKENS": str(args.tokens),
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
        arguments = ["--streams", args.streams, "--rounds", str(args.rounds)]
        return support.run_probe(project, PROBE, arguments, env)


if __name__ == "__main__":
    sys.exit(main())
