"""Gateway overhead of a rendered service against LiteLLM's proxy and a bare pass-through.

    uv run python -m bench.gateway                         # the defaults combination
    uv run python -m bench.gateway --combination api_key-postgres-none-sse --rounds 5
    uv run python -m bench.gateway --profile /tmp/gateway-profile   # and where time goes

Renders the combination with llm_provider=openai and installs it (as the tests do), installs
LiteLLM's proxy (`litellm[proxy]`, pinned below) into an environment of its own under the
cache folder, then runs bench/gateway_probe.py in the rendered project's environment. All
four targets (the upstream itself, the service, LiteLLM, a bare aiohttp pass-through) face
the same local no-delay OpenAI-compatible upstream with one worker each, and are loaded by
the same client in alternated rounds: latency p50/p95 one request at a time and requests/s
with 32 in flight, streamed and not, CPU per request and RSS, and the service's ratios
against the others. The service needs its database and Redis: TEST_POSTGRES_URL /
TEST_MONGO_URL / TEST_REDIS_URL when set, else the servers `scripts/servers.sh` starts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench import support
from tools import project as project_tools
from tools.matrix import Combination, by_id, defaults_combination

PROBE = Path(__file__).resolve().parent / "gateway_probe.py"
LITELLM = "litellm[proxy]==1.108.7"


def litellm_command() -> Path:
    """The `litellm` command of an environment of its own, installed on first use."""
    version = LITELLM.split("==")[1]
    environment = project_tools.cache_dir() / "litellm" / version
    command = environment / "bin" / "litellm"
    if not command.exists():
        print(f"installing {LITELLM} into {environment}")
        env = project_tools.tool_env("litellm")
        subprocess.run(
            ["uv", "venv", "--quiet", "--python", "3.11", str(environment)], env=env, check=True
        )
        subprocess.run(
            ["uv", "pip", "install", "--quiet", "--python", str(environment), LITELLM],
            env=env,
            check=True,
        )
    return command


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", help="default: the defaults combination")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="per round, one at a time")
    parser.add_argument("--seconds", type=float, default=3.0, help="per round, concurrent")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="in each answer")
    parser.add_argument("--profile", help="a folder: record the service with py-spy there")
    support.add_project_option(parser)
    args = parser.parse_args()
    chosen = by_id(args.combination) if args.combination else defaults_combination()
    # The upstream speaks OpenAI's API.
    combination = Combination({**chosen.answers, "llm_provider": "openai"})
    litellm = litellm_command()
    with support.installed(combination, f"bench-{combination.id}", args.project) as project:
        env = {
            **project.env,
            **support.service_environment(support.PACKAGE, combination.answers),
            # Non-streamed answers at temperature 0 would otherwise be cached; none is sent
            # at 0, and no cache keeps the service honest if that changes.
            f"{support.PACKAGE.upper()}_CACHE_TTL_SECONDS": "0",
            "BENCH_LITELLM": str(litellm),
        }
        print(
            f"{combination.label}: {args.tokens} tokens per answer, no-delay upstream, "
            f"{LITELLM}, one worker each"
        )
        arguments = ["--rounds", str(args.rounds), "--requests", str(args.requests)]
        arguments += ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
        arguments += ["--tokens", str(args.tokens)]
        if args.profile:
            arguments += ["--profile", str(Path(args.profile).resolve())]
        return support.run_probe(project, PROBE, arguments, env, extra=(support.AIOHTTP,))


if __name__ == "__main__":
    sys.exit(main())
