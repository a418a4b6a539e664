"""Every combination renders clean, lints, type-checks and passes its own tests."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pytest
import yaml

from tools.matrix import ROOT

if TYPE_CHECKING:
    from tools.project import RenderedProject

TEMPLATE = ROOT / "template"
# A file or folder named `{% if cond %}name{% endif %}` exists only where cond holds.
CONDITIONAL_NAME = re.compile(r"^\{%\s*if .+?%\}(?P<name>.+?)\{%\s*endif\s*%\}(?P<suffix>.*)$")
JINJA_LEFTOVER = re.compile(r"\{\{|\{%|\{#|%\}|#\}")

# Words that may appear in a rendered project only when their answer was chosen: an
# unchosen feature leaves no file, import, dependency, setting or test behind.
# Words that only a feature's files may contain: where the answer is not among the values,
# none of them may appear anywhere in the project.
MARKERS: dict[tuple[str, tuple[Any, ...]], tuple[str, ...]] = {
    ("database", ("postgres",)): ("sqlalchemy", "alembic", "asyncpg", "postgres"),
    ("database", ("mongo",)): ("pymongo", "mongo"),
    ("auth", ("jwt",)): ("jwt", "refresh_token"),
    ("auth", ("api_key",)): ("api-keys", "api_keys", "apikey"),
    ("task_queue", ("celery",)): ("celery",),
    ("task_queue", ("none",)): ("jobs_max_running",),
    ("llm_provider", ("anthropic",)): ("anthropic",),
    ("rag", (True,)): ("pgvector", "vectorsearch", "rag_", "/v1/documents", "pypdf"),
    ("streaming", ("websocket", "both")): ("websocket", "fanout", "pub/sub", "/ws/"),
}
SECRET_MARKERS = ("secret_key",)  # only where a caller must be authenticated
LOCK = Path("uv.lock")


def rendered_files(project: Path) -> list[Path]:
    return sorted(p for p in project.rglob("*") if p.is_file() and ".venv" not in p.parts)


def expected_layout(answers: dict[str, Any]) -> tuple[set[Path], set[Path]]:
    """From the template's own file names: the paths the answers select, and the others."""
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 (paths, not HTML)
    present: set[Path] = set()
    absent: set[Path] = set()
    for source in TEMPLATE.rglob("*"):
        parts = source.relative_to(TEMPLATE).parts
        rendered = [environment.from_string(part).render(**answers) for part in parts]
        rendered[-1] = rendered[-1].removesuffix(".jinja")
        as_if_chosen = []
        for part in parts:
            match = CONDITIONAL_NAME.match(part)
            as_if_chosen.append(match["name"] + match["suffix"] if match else part)
        chosen_path = Path(*(environment.from_string(p).render(**answers) for p in as_if_chosen))
        chosen_path = chosen_path.with_name(chosen_path.name.removesuffix(".jinja"))
        if all(rendered):
            present.add(chosen_path)
        else:
            absent.add(chosen_path)
    return present, absent - present


def test_no_jinja_is_left_in_any_file(project: RenderedProject) -> None:
    leftovers = []
    for path in rendered_files(project.path):
        if path.suffix == ".jinja":
            leftovers.append(f"{path}: not rendered")
        elif match := JINJA_LEFTOVER.search(path.read_text(errors="replace")):
            leftovers.append(f"{path}: {match.group()!r}")
    assert not leftovers


def test_only_the_chosen_features_files_exist(project: RenderedProject) -> None:
    answers_file = project.path / ".copier-answers.yml"
    answers = yaml.safe_load(answers_file.read_text())
    present, absent = expected_layout(
        {**answers, "_copier_conf": {"answers_file": answers_file.name}}
    )

    missing = sorted(str(p) for p in present if not (project.path / p).exists())
    unexpected = sorted(str(p) for p in absent if (project.path / p).exists())
    empty_dirs = sorted(
        str(d) for d in project.path.rglob("*") if d.is_dir() and not any(d.iterdir())
    )
    assert not missing
    assert not unexpected
    assert not empty_dirs


def test_unchosen_features_leave_no_trace(project: RenderedProject) -> None:
    forbidden = [
        marker
        for (question, values), markers in MARKERS.items()
        if project.answers[question] not in values
        for marker in markers
    ]
    if project.answers["auth"] == "none":
        forbidden.extend(SECRET_MARKERS)
    traces = []
    for path in rendered_files(project.path):
        relative = path.relative_to(project.path)
        # The lock names third-party packages, some of them with a marker in their name
        # (uvicorn[standard] brings `websockets` to the `sse` variant too). It holds nothing
        # of the template's own: test_lock_is_current proves it is exactly what uv resolves
        # for the variant's pyproject.toml.
        if relative == LOCK:
            continue
        text = path.read_text(errors="replace").lower()
        traces.extend(
            f"{relative}: {marker}"
            for marker in forbidden
            if marker in text or marker in str(relative).lower()
        )
    assert not traces


def test_text_files_have_no_blank_line_runs_or_trailing_space(project: RenderedProject) -> None:
    untidy = []
    for path in rendered_files(project.path):
        text = path.read_text(errors="replace")
        relative = path.relative_to(project.path)
        # Python (also in Markdown's code blocks, which ruff formats) puts two blank lines
        # between top-level definitions.
        if "\n\n\n\n" in text or (path.suffix not in {".py", ".mako", ".md"} and "\n\n\n" in text):
            untidy.append(f"{relative}: blank-line run")
        if re.search(r"[ \t]+$", text, re.MULTILINE):
            untidy.append(f"{relative}: trailing whitespace")
        if text and not text.endswith("\n"):
            untidy.append(f"{relative}: no final newline")
        if text.startswith("\n"):
            untidy.append(f"{relative}: starts with a blank line")
    assert not untidy


def test_lock_is_current(project: RenderedProject) -> None:
    # The rendered uv.lock is what uv resolves for this project's pyproject.toml: the
    # versions the template's tests ran on (template/uv.lock.jinja, `python -m tools.lock`).
    project.run("uv", "lock", "--check").check()


def test_ruff_check_passes(synced_project: RenderedProject) -> None:
    synced_project.run("uv", "run", "ruff", "check", ".").check()


def test_ruff_format_leaves_no_diff(synced_project: RenderedProject) -> None:
    synced_project.run("uv", "run", "ruff", "format", "--check", "--diff", ".").check()


def test_mypy_strict_passes(synced_project: RenderedProject) -> None:
    result = synced_project.run("uv", "run", "mypy").check()
    assert "Success: no issues found" in result.output


@pytest.mark.slow
def test_own_test_suite_passes_against_real_servers(
    synced_project: RenderedProject, test_servers: dict[str, str]
) -> None:
    env = {} if synced_project.combination.runs_load_test else {"LOAD_TEST_ROUNDS": "1"}
    # One process per suite: the matrix keeps the cores busy with several combinations at
    # once, and each xdist worker of a suite would start its own app, database and job
    # worker again (about 10 s of CPU each). The update tests run suites as users do, on four.
    summary = synced_project.run_own_tests(test_servers, env, ("-n", "0"))
    assert re.search(r"\d+ passed", summary), summary
    assert not re.search(r"failed|error|skipped|xfail", summary), summary


@pytest.fixture(scope="session")
def test_servers() -> dict[str, str]:
    names = ("TEST_POSTGRES_URL", "TEST_MONGO_URL", "TEST_REDIS_URL")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: run the tests with `scripts/test` (which starts "
            "local servers) or point these variables at running servers",
            pytrace=False,
        )
    return {name: os.environ[name] for name in names}
