"""A rendered project's own suite: wall time, CPU and slowest tests, against a baseline.

    uv run python -m bench.suite --baseline 6b39ca4 --rounds 2     # against that commit
    uv run python -m bench.suite --repeat 10                       # one suite 10 times

The baseline is the same combination rendered from a commit, rounds alternated; CPU is the
suite's processes', not the servers'. bench/README.md has the options and figures.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import copier
from copier.errors import DirtyLocalWarning

from tools import project as project_tools
from tools.matrix import ROOT, by_id, defaults_combination

DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)$", re.MULTILINE)
SUMMARY = re.compile(r"^.*\d+ (?:passed|failed).* in [\d.]+s.*$", re.MULTILINE)


@dataclass
class Runs:
    label: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def render(answers: dict[str, object], destination: Path, ref: str | None) -> Path:
    if ref is None:
        return project_tools.render(answers, destination)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DirtyLocalWarning)
        copier.run_copy(
            str(ROOT), destination, data=answers, defaults=True, unsafe=True, quiet=True,
            vcs_ref=ref,
        )  # fmt: skip
    return destination


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_suite(project: Path, env: dict[str, str], pytest_args: list[str], runs: Runs) -> None:
    cpu, started = children_cpu(), time.perf_counter()
    process = subprocess.run(
        ["uv", "run", "--no-sync", "pytest", "-q", "-p", "no:cacheprovider", "--durations=15",
         *pytest_args],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    runs.walls.append(time.perf_counter() - started)
    runs.cpus.append(children_cpu() - cpu)
    output = process.stdout + process.stderr
    summary = SUMMARY.findall(output)
    runs.summaries.append(summary[-1].strip("= ") if summary else f"exit {process.returncode}")
    runs.failed += process.returncode != 0
    runs.failures += re.findall(r"^(?:FAILED|ERROR) .*$", output, re.MULTILINE)
    for seconds, when, test in DURATION.findall(output):
        key = f"{test} ({when})"
        runs.slowest[key] = max(runs.slowest.get(key, 0.0), float(seconds))
    print(f"  {runs.label}: {runs.walls[-1]:.1f} s wall, {runs.cpus[-1]:.1f} s CPU: "
          f"{runs.summaries[-1]}", flush=True)  # fmt: skip


def report(runs: Runs) -> None:
    wall, cpu = statistics.median(runs.walls), statistics.median(runs.cpus)
    print(f"{runs.label}: median {wall:.1f} s wall (min {min(runs.walls):.1f}, max "
          f"{max(runs.walls):.1f}), {cpu:.1f} s CPU, {runs.failed} of {len(runs.walls)} "
          "runs failed")  # fmt: skip
    for test, seconds in sorted(runs.slowest.items(), key=lambda item: -item[1])[:10]:
        print(f"    {seconds:6.2f} s  {test}")
    for line in dict.fromkeys(runs.failures):
        print(f"    {line[:200]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--combination", default=None)
    parser.add_argument("--baseline", metavar="REF", help="a commit to compare with")
    parser.add_argument("--rounds", type=int, default=1, help="suites of each, alternated")
    parser.add_argument("--repeat", type=int, default=0, help="only the working tree, N times")
    parser.add_argument("--pytest-args", default="", help="passed to the project's pytest")
    args = parser.parse_args()
    combination = by_id(args.combination) if args.combination else defaults_combination()
    servers = project_tools.test_servers()
    pytest_args = shlex.split(args.pytest_args)
    candidates: list[tuple[str, str | None]] = [("working tree", None)]
    if args.baseline:
        candidates.insert(0, (f"baseline {args.baseline}", args.baseline))
    rounds = args.repeat or args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as scratch:
        prepared = []
        for index, (label, ref) in enumerate(candidates):
            project = render(combination.answers, Path(scratch) / f"project-{index}", ref)
            env = project_tools.tool_env(f"bench-suite-{index}")
            locked = ["--locked"] if (project / "uv.lock").exists() else []
            subprocess.run(
                ["uv", "sync", *locked, "--all-groups", "--compile-bytecode", "-q"],
                cwd=project, env=env, check=True,
            )  # fmt: skip
            prepared.append((project, {**env, **servers}, Runs(label)))
        print(f"{combination.label}: {rounds} round(s), pytest {' '.join(pytest_args)}")
        for _ in range(rounds):
            for project, env, runs in prepared:
                run_suite(project, env, pytest_args, runs)
        for _, _, runs in prepared:
            report(runs)
        if len(prepared) == 2:
            base, new = (statistics.median(r.walls) for _, _, r in prepared)
            base_cpu, new_cpu = (statistics.median(r.cpus) for _, _, r in prepared)
            print(f"working tree / baseline: wall {new / base:.2f}, CPU {new_cpu / base_cpu:.2f}")
    return 1 if any(runs.failed for _, _, runs in prepared) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
