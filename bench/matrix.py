"""Seconds per render and per full combination check, step by step.

    uv run python -m bench.matrix                       # the defaults combination
    uv run python -m bench.matrix --combination ID ...  # others
    uv run python -m bench.matrix --renders 20          # more renders for the render figure

The project's own tests use TEST_POSTGRES_URL / TEST_MONGO_URL / TEST_REDIS_URL when set,
else the servers `scripts/servers.sh` starts. Every figure comes from this run:
the first check of a combination runs with cold caches (a fresh virtual environment and
mypy cache), the second with the warm ones a test worker has from its second combination on,
and the ratio between them is what the shared caches buy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tools import project as project_tools
from tools.matrix import by_id, defaults_combination
from tools.project import RenderedProject


def time_renders(answers: dict[str, object], count: int, scratch: Path) -> list[float]:
    seconds = []
    for i in range(count):
        started = time.perf_counter()
        project_tools.render(answers, scratch / f"render-{i}")
        seconds.append(time.perf_counter() - started)
        shutil.rmtree(scratch / f"render-{i}")
    return seconds


def check(project: RenderedProject, servers: dict[str, str]) -> dict[str, float]:
    steps: dict[str, float] = {}
    started = time.perf_counter()
    project.sync()
    steps["uv sync"] = time.perf_counter() - started
    for name, args in [
        ("ruff check", ("uv", "run", "ruff", "check", ".")),
        ("ruff format", ("uv", "run", "ruff", "format", "--check", ".")),
        ("mypy", ("uv", "run", "mypy")),
    ]:
        steps[name] = project.run(*args).check().seconds
    steps["pytest"] = project.run("uv", "run", "pytest", "-q", env=servers).check().seconds
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", action="append", default=[])
    parser.add_argument("--renders", type=int, default=10)
    args = parser.parse_args()
    combinations = [by_id(i) for i in args.combination] or [defaults_combination()]
    servers = project_tools.test_servers()

    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        scratch = Path(tmp)
        # A worker name of its own: cold means really cold, and the test workers' caches stay.
        env = project_tools.tool_env("bench")
        for cache in ("UV_PROJECT_ENVIRONMENT", "MYPY_CACHE_DIR", "RUFF_CACHE_DIR"):
            shutil.rmtree(env[cache], ignore_errors=True)

        renders = time_renders(combinations[0].answers, args.renders, scratch)
        print(
            f"render: median {statistics.median(renders):.2f}s, "
            f"min {min(renders):.2f}s, max {max(renders):.2f}s over {len(renders)} renders"
        )
        for combination in combinations:
            runs = []
            for attempt in ("cold", "warm"):
                # A fresh render each time, so the environment must be re-synced as in a run.
                path = project_tools.render(
                    combination.answers, scratch / f"{attempt}-{combination.id}"
                )
                project = RenderedProject(combination, path, env)
                steps = check(project, servers)
                runs.append(sum(steps.values()))
                detail = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in steps.items())
                print(f"{combination.id} {attempt}: {runs[-1]:.1f}s ({detail})")
            print(f"{combination.id}: warm/cold = {runs[1] / runs[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
