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

import os
import shutil
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import copier
import pytest

from tools.matrix import ROOT, Combination, by_id, combinations

if TYPE_CHECKING:
    from collections.abc import Iterator


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


# --- environments shared by the combinations a worker runs --------------------------------


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ.get("COPIER_TEST_CACHE", Path.home() / ".cache" / "copier-fastapi-ai"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tool_env(cache_dir: Path) -> dict[str, str]:
    """Environment for `uv` and the rendered projects' tools, with caches shared per worker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTEST_"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")),
        UV_PROJECT_ENVIRONMENT=str(cache_dir / "venvs" / worker_id()),
        UV_PYTHON_DOWNLOADS="never",
        UV_NO_PROGRESS="1",
        MYPY_CACHE_DIR=str(cache_dir / "mypy" / worker_id()),
        RUFF_CACHE_DIR=str(cache_dir / "ruff" / worker_id()),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@dataclass
class CommandResult:
    args: list[str]
    returncode: int
    output: str
    seconds: float

    def check(self) -> CommandResult:
        if self.returncode != 0:
            pytest.fail(
                f"`{' '.join(self.args)}` exited {self.returncode} after {self.seconds:.1f}s:\n"
                f"{self.output}",
                pytrace=False,
            )
        return self


def run(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> CommandResult:
    started = time.perf_counter()
    process = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CommandResult(
        args, process.returncode, process.stdout + process.stderr, time.perf_counter() - started
    )


# --- one rendered project per combination --------------------------------------------------


@dataclass
class RenderedProject:
    combination: Combination
    path: Path
    env: dict[str, str]
    synced: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def answers(self) -> dict[str, Any]:
        return self.combination.answers

    def run(self, *args: str, env: dict[str, str] | None = None) -> CommandResult:
        return run(list(args), cwd=self.path, env={**self.env, **(env or {})})

    def sync(self) -> None:
        """Install the project into this worker's shared environment (once it holds it)."""
        marker = Path(self.env["UV_PROJECT_ENVIRONMENT"]) / ".combination"
        if self.synced and marker.exists() and marker.read_text() == str(self.path):
            return
        result = self.run("uv", "sync", "--all-groups").check()
        self.timings["uv sync"] = result.seconds
        marker.write_text(str(self.path))
        self.synced = True


def render(answers: dict[str, Any], destination: Path) -> Path:
    copier.run_copy(
        str(ROOT),
        destination,
        data=answers,
        defaults=True,
        unsafe=True,
        quiet=True,
        vcs_ref="HEAD",
    )
    return destination


@pytest.fixture(scope="module")
def project(
    combination: Combination, tmp_path_factory: pytest.TempPathFactory, tool_env: dict[str, str]
) -> Iterator[RenderedProject]:
    started = time.perf_counter()
    path = render(combination.answers, tmp_path_factory.mktemp(combination.id) / "project")
    rendered = RenderedProject(combination, path, tool_env)
    rendered.timings["render"] = time.perf_counter() - started
    yield rendered
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def synced_project(project: RenderedProject) -> RenderedProject:
    project.sync()
    return project


# --- progress: one line per finished combination --------------------------------------------


class CombinationProgress:
    """Print `combination: N passed in Xs` as each combination's last test finishes.

    Runs in the controlling process (with or without xdist), so it sees every report.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.expected: dict[str, int] = defaultdict(int)
        self.done: dict[str, int] = defaultdict(int)
        self.failed: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    @staticmethod
    def combination_of(nodeid: str) -> str | None:
        if "[" not in nodeid:
            return None
        param = nodeid.rsplit("[", 1)[1].rstrip("]")
        return next((c.id for c in combinations() if param.split("-")[:4] == c.id.split("-")), None)

    def _count(self, nodeids: list[str]) -> None:
        if self.expected:
            return
        for nodeid in nodeids:
            if combination := self.combination_of(nodeid):
                self.expected[combination] += 1

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self._count([item.nodeid for item in items])

    def pytest_xdist_node_collection_finished(self, node: object, ids: list[str]) -> None:
        self._count(ids)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        combination = self.combination_of(report.nodeid)
        if combination is None:
            return
        self.seconds[combination] += report.duration
        if report.failed:
            self.failed[combination] += 1
        if report.when != "teardown":
            return
        self.done[combination] += 1
        if self.done[combination] == self.expected.get(combination):
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                verdict = f"{self.failed[combination]} FAILED" if self.failed[combination] else "ok"
                reporter.write_line(
                    f"[{sum(1 for c in self.done if self.done[c] == self.expected[c])}"
                    f"/{len(self.expected)}] {combination}: {verdict}, "
                    f"{self.done[combination]} tests in {self.seconds[combination]:.1f}s"
                )
