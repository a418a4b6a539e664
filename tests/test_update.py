"""`copier update` from released versions to this commit, with a user's edits in between.

The template is cloned (its committed history only: an update needs real versions on both
ends, so uncommitted edits of the working tree are not part of these tests) and the
release tags of tools/releases.py are created in the clone, since a CI clone may come
without tags. For the latest release before this commit and for the oldest supported one,
two combinations each (between them both databases and both task queues) are:

1. rendered at the release, committed with a `uv lock` as a user keeps it (releases up to
   v0.6.0 rendered no lock);
2. edited as a user would: a router of their own, its include line, a changed setting
   default in settings.py and in .env.example, an edited README paragraph; committed;
3. updated to this commit (`copier update --trust --defaults`, inline conflicts).

Then: no `.rej` files; conflict markers only in files the user edited (none at all from
the latest release); every file the user did not touch is exactly what this commit
renders; the user's edits are all there; the lock is current; and the project lints,
type-checks and (slow tier) passes its own tests against the real servers. Conflicts an
older release leaves in the user's files are resolved as a user would: the template's
side, with the user's change made again.

One more project changes answers on update (celery -> none, sse -> websocket): the old
answers' files are gone, Celery appears nowhere, and the project passes its tests.

And a project rendered by this commit, with the template's uv.lock and a pin of its own,
is updated to a later commit that adds a dependency: the lock is the project's
(`_skip_if_exists`), so it is kept, and the migration's `uv lock` adds the new dependency
with every pin kept, the project's own included.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import copier
import pytest
import yaml

from tools import lock as lock_tools
from tools import project as project_tools
from tools.matrix import ROOT, by_id
from tools.project import RenderedProject
from tools.releases import OLDEST_SUPPORTED, RELEASES, by_tag, clone_with_tags, git, made

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

GIT_USER = ["-c", "user.name=Template Tests", "-c", "user.email=tests@example.com"]
CONFLICT = re.compile(r"^(<<<<<<<|>>>>>>>)( |$)", re.MULTILINE)
INLINE_CONFLICT = re.compile(
    r"^<<<<<<< before updating\n.*?^=======\n(?P<theirs>.*?)^>>>>>>> after updating\n",
    re.MULTILINE | re.DOTALL,
)


def previous_release() -> str:
    """The latest release that is not this commit itself."""
    head = git("rev-parse", "HEAD", cwd=ROOT)
    return [r for r in made() if r.commit != head][-1].tag


@dataclass(frozen=True)
class Case:
    tag: str
    combination: str
    change: dict[str, Any] | None = None  # answers changed on update
    # Whether the updated project's own suite runs too. Every updated file is compared with
    # a fresh render of HEAD, whose suite the matrix runs; one case of edits and the answer
    # change run theirs, for the user's own test and router and the merged files together.
    runs_own_tests: bool = False

    @property
    def id(self) -> str:
        changed = "".join(f"-{k}={v}" for k, v in (self.change or {}).items())
        return f"{self.tag}-{self.combination}{changed}"


PREVIOUS = previous_release()
CASES = [
    Case(PREVIOUS, "jwt-postgres-none-sse"),
    Case(PREVIOUS, "api_key-mongo-celery-websocket"),
    Case(OLDEST_SUPPORTED, "jwt-postgres-none-sse"),
    Case(OLDEST_SUPPORTED, "none-mongo-celery-both", runs_own_tests=True),
]
ANSWER_CHANGE = Case(
    PREVIOUS,
    "jwt-postgres-celery-sse",
    change={"task_queue": "none", "streaming": "websocket"},
    runs_own_tests=True,
)


def case_params(cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(c.id)) for c in cases]


# --- the user's edits -------------------------------------------------------------------------

FEATURE = '''"""A router of the project's own, in a file the template does not own."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["my feature"])


@router.get("/my-feature")
async def my_feature() -> dict[str, str]:
    return {"feature": "mine"}
'''

FEATURE_TEST = '''"""The project's own router is part of the API, under /v1."""

from __future__ import annotations

from {package}.main import create_app


def test_my_feature_is_routed() -> None:
    assert "/v1/my-feature" in create_app().openapi()["paths"]
'''

README_PARAGRAPH = "Our team's notes: this service answers the support desk's questions."


def include_in_router(text: str) -> str:
    """api/router.py before api/custom.py existed: the module in the import, one line at the end.

    Idempotent, like the edits below: resolving a conflict makes the change again where the
    template's side lacks it.
    """
    if match := re.search(r"from \.routes import \((.*?)\)", text, re.DOTALL):
        names = match[1].split()
        if "my_feature," not in names:
            before = max(name for name in names if name < "my_feature,")
            text = text.replace(f"    {before}\n", f"    {before}\n    my_feature,\n", 1)
    else:
        line = re.search(r"^from \.routes import (.*)$", text, re.MULTILINE)
        assert line, text
        names = sorted({*line[1].split(", "), "my_feature"})
        text = text.replace(line[0], "from .routes import " + ", ".join(names), 1)
    if "my_feature.router" not in text:
        limited = ", dependencies=authenticated" if "authenticated = " in text else ""
        text += f'api_router.include_router(my_feature.router, prefix="/v1"{limited})\n'
    return text


def include_in_custom(text: str) -> str:
    """api/custom.py, the project's own since v0.6.0: its import and one include line."""
    if "my_feature" in text:
        return text
    text = text.replace(
        "from .limits import enforce_request_limit\n",
        "from ..features import my_feature\nfrom .limits import enforce_request_limit\n",
        1,
    )
    return text + "router.include_router(my_feature.router)\n"


def port_8080(text: str) -> str:
    changed = re.sub(r"(port: int = Field\(default=)8000\b", r"\g<1>8080", text, count=1)
    changed = re.sub(r"^(\w+_PORT=)8000$", r"\g<1>8080", changed, count=1, flags=re.MULTILINE)
    assert "8080" in changed
    return changed


def own_readme(text: str) -> str:
    # The description paragraph under the title.
    if README_PARAGRAPH in text:
        return text
    title, _, rest = text.partition("\n\n")
    _, _, after = rest.partition("\n\n")
    return f"{title}\n\n{README_PARAGRAPH}\n\n{after}"


def user_edits(project: Path, package: str) -> dict[str, Callable[[str], str]]:
    """Make the edits in `project`; returns the changed template files and their edits."""
    src = f"src/{package}"
    edits: dict[str, Callable[[str], str]] = {
        f"{src}/settings.py": port_8080,
        ".env.example": port_8080,
        "README.md": own_readme,
    }
    if (project / src / "api" / "custom.py").exists():
        (project / src / "features").mkdir()
        (project / src / "features" / "__init__.py").write_text("")
        (project / src / "features" / "my_feature.py").write_text(FEATURE)
        edits[f"{src}/api/custom.py"] = include_in_custom
    else:
        (project / src / "api" / "routes" / "my_feature.py").write_text(FEATURE)
        edits[f"{src}/api/router.py"] = include_in_router
    (project / "tests" / "test_my_feature.py").write_text(FEATURE_TEST.format(package=package))
    for path, edit in edits.items():
        (project / path).write_text(edit((project / path).read_text()))
    return edits


def assert_edits_survived(project: Path, package: str) -> None:
    src = project / "src" / package
    feature = src / "features" / "my_feature.py"
    assert (feature if feature.exists() else src / "api" / "routes" / "my_feature.py").read_text()
    assert (
        "my_feature"
        in (src / "api" / "router.py").read_text() + (src / "api" / "custom.py").read_text()
    )
    assert "default=8080" in (src / "settings.py").read_text()
    assert re.search(r"^\w+_PORT=8080$", (project / ".env.example").read_text(), re.MULTILINE)
    assert README_PARAGRAPH in (project / "README.md").read_text()
    assert (project / "tests" / "test_my_feature.py").exists()


# --- rendering, committing, updating ----------------------------------------------------------


def commit(project: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", *GIT_USER, "commit", "-q", "-m", message], cwd=project, check=True)


def render(template: Path, ref: str, answers: dict[str, Any], destination: Path) -> None:
    copier.run_copy(
        str(template),
        destination,
        data=answers,
        defaults=True,
        unsafe=True,
        quiet=True,
        vcs_ref=ref,
    )


def conflicts(project: Path) -> tuple[list[str], list[str]]:
    """The `.rej` files (ignored ones too) and the files with conflict markers."""
    status = git("status", "--porcelain", "--ignored", "--untracked-files=all", cwd=project)
    rejects = [line[3:] for line in status.splitlines() if line.endswith(".rej")]
    files = git("ls-files", "--cached", "--others", "--exclude-standard", cwd=project)
    marked = [
        name
        for name in files.splitlines()
        if (project / name).is_file()
        and CONFLICT.search((project / name).read_text(errors="replace"))
    ]
    return rejects, marked


@dataclass
class Updated:
    case: Case
    project: RenderedProject
    fresh: Path  # this commit rendered afresh with the same answers
    touched: dict[str, Callable[[str], str]]  # template files the user edited
    rejects: list[str]
    conflicted: list[str]


@pytest.fixture(scope="session")
def template_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clone_with_tags(tmp_path_factory.mktemp("template") / "copier-fastapi-ai")


def update_case(
    case: Case,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    env: dict[str, str],
    *,
    edit: bool,
) -> Updated:
    answers = by_id(case.combination).answers
    package = answers.get("package_name", "ai_service")
    root = tmp_path_factory.mktemp(case.id)
    path = root / "project"
    render(template, case.tag, answers, path)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(["uv", "lock", "-q"], cwd=path, env=env, check=True)  # kept, as users do
    commit(path, f"rendered from {case.tag}")
    touched = user_edits(path, package) if edit else {}
    if edit:
        commit(path, "our own router, settings and README")

    copier.run_update(
        path,
        data=case.change or {},
        defaults=True,
        overwrite=True,
        unsafe=True,
        quiet=True,
        vcs_ref="HEAD",
        conflict="inline",
        skip_answered=True,
    )
    rejects, conflicted = conflicts(path)

    new_answers = yaml.safe_load((path / ".copier-answers.yml").read_text())
    fresh = root / "fresh"
    render(template, "HEAD", {k: v for k, v in new_answers.items() if not k.startswith("_")}, fresh)
    combination = by_id(
        "-".join(str(new_answers[q]) for q in ("auth", "database", "task_queue", "streaming"))
    )
    return Updated(
        case, RenderedProject(combination, path, env), fresh, touched, rejects, conflicted
    )


def resolve_as_a_user(updated: Updated) -> None:
    """Take the template's side of each conflict, then make the user's change again.

    Only in files the user edited: a conflict anywhere else fails the tests, unresolved.
    """
    for name in set(updated.conflicted) & set(updated.touched):
        path = updated.project.path / name
        path.write_text(updated.touched[name](INLINE_CONFLICT.sub(r"\g<theirs>", path.read_text())))
    if updated.conflicted:
        commit(updated.project.path, "update: conflicts resolved")


@pytest.fixture(
    scope="module",
    params=case_params(CASES),
)
def updated(
    request: pytest.FixtureRequest,
    template_clone: Path,
    tmp_path_factory: pytest.TempPathFactory,
    tool_env: dict[str, str],
) -> Updated:
    result = update_case(request.param, template_clone, tmp_path_factory, tool_env, edit=True)
    # Here rather than in a test, so that every test sees the project as the user leaves it.
    resolve_as_a_user(result)
    return result


@pytest.fixture(scope="module")
def changed(
    template_clone: Path, tmp_path_factory: pytest.TempPathFactory, tool_env: dict[str, str]
) -> Updated:
    return update_case(ANSWER_CHANGE, template_clone, tmp_path_factory, tool_env, edit=False)


# --- the releases -----------------------------------------------------------------------------


def test_changelog_has_a_section_per_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[([^\]]+)\]", changelog, re.MULTILINE)
    assert sections == ["Unreleased", *(r.tag.removeprefix("v") for r in reversed(RELEASES))]
    assert f"oldest supported release is {OLDEST_SUPPORTED}" in " ".join(changelog.split())


def test_releases_are_commits_of_this_history_in_order() -> None:
    for release in made():
        assert git("merge-base", "--is-ancestor", release.commit or "", "HEAD", cwd=ROOT) == ""
    commits = [r.commit for r in made()]
    for older, newer in itertools.pairwise(commits):
        git("merge-base", "--is-ancestor", older or "", newer or "", cwd=ROOT)
    assert [r.version for r in RELEASES] == sorted(r.version for r in RELEASES)
    assert by_tag(OLDEST_SUPPORTED).commit


# --- update with the user's edits -------------------------------------------------------------


def test_update_keeps_user_edits_and_conflicts_only_in_them(updated: Updated) -> None:
    assert not updated.rejects
    if updated.case.tag == PREVIOUS:
        assert not updated.conflicted
    else:
        assert set(updated.conflicted) <= set(updated.touched)
    project = updated.project.path
    assert conflicts(project) == ([], [])  # once resolved
    assert_edits_survived(project, updated.project.answers.get("package_name", "ai_service"))


def test_files_the_user_did_not_touch_are_this_commits(updated: Updated) -> None:
    project = updated.project.path
    differing = []
    for path in sorted(
        p for p in updated.fresh.rglob("*") if p.is_file() and ".git" not in p.parts
    ):
        name = str(path.relative_to(updated.fresh))
        # The user's uv.lock is theirs (`_skip_if_exists`), re-locked by the update:
        # test_lock_is_current_after_update checks it.
        if name in updated.touched or name == "uv.lock":
            continue
        mine = project / name
        if not mine.exists() or mine.read_bytes() != path.read_bytes():
            differing.append(name)
    assert not differing


def test_lock_is_current_after_update(updated: Updated) -> None:
    updated.project.run("uv", "lock", "--locked").check()


def test_updated_project_lints_and_type_checks(updated: Updated) -> None:
    updated.project.sync()
    updated.project.run("uv", "run", "ruff", "check", ".").check()
    updated.project.run("uv", "run", "ruff", "format", "--check", "--diff", ".").check()
    assert "Success: no issues found" in updated.project.run("uv", "run", "mypy").check().output


@pytest.mark.slow
@pytest.mark.parametrize(
    "updated", case_params([c for c in CASES if c.runs_own_tests]), indirect=True
)
def test_updated_project_passes_its_own_tests(updated: Updated) -> None:
    run_own_tests(updated.project)


# --- update that changes answers --------------------------------------------------------------


@pytest.mark.xdist_group("answer-change")
def test_changed_answers_leave_nothing_of_the_old_ones(changed: Updated) -> None:
    assert not changed.rejects
    assert not changed.conflicted
    project = changed.project.path
    mine = {
        str(p.relative_to(project))
        for p in project.rglob("*")
        if p.is_file() and ".git" not in p.parts
    }
    fresh = {str(p.relative_to(changed.fresh)) for p in changed.fresh.rglob("*") if p.is_file()}
    assert mine == fresh
    celery = [name for name in mine if "celery" in (project / name).read_text().lower()]
    assert not celery
    assert (project / "src" / "ai_service" / "api" / "routes" / "conversation_socket.py").exists()


@pytest.mark.xdist_group("answer-change")
def test_changed_answers_project_passes_its_checks(changed: Updated) -> None:
    changed.project.run("uv", "lock", "--locked").check()
    changed.project.sync()
    changed.project.run("uv", "run", "ruff", "check", ".").check()
    changed.project.run("uv", "run", "ruff", "format", "--check", "--diff", ".").check()
    assert "Success: no issues found" in changed.project.run("uv", "run", "mypy").check().output


@pytest.mark.slow
@pytest.mark.xdist_group("answer-change")
def test_changed_answers_project_passes_its_own_tests(changed: Updated) -> None:
    run_own_tests(changed.project)


# --- update of a project that has the template's lock ----------------------------------------


# certifi's block in a lock, with the blank line before it.
CERTIFI = re.compile(r'\n\n\[\[package\]\]\nname = "certifi"\n.*?(?=\n\n\[|\n\Z)', re.DOTALL)


@pytest.mark.xdist_group("lock-update")
def test_update_keeps_the_projects_lock_and_relocks_it(
    tmp_path_factory: pytest.TempPathFactory, tool_env: dict[str, str]
) -> None:
    # A clone of its own: the later commit below must not move the other cases' HEAD.
    template = clone_with_tags(tmp_path_factory.mktemp("later") / "copier-fastapi-ai")
    combination = by_id("jwt-postgres-none-sse")
    project = RenderedProject(combination, tmp_path_factory.mktemp("locked") / "project", tool_env)
    render(template, "HEAD", combination.answers, project.path)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=project.path, check=True)
    lock = project.path / "uv.lock"
    rendered = CERTIFI.search(lock.read_text())
    assert rendered
    # The template's next lock moves certifi one way (as `tools.lock --upgrade` would) ...
    project.run("uv", "lock", "-q", "--upgrade-package", "certifi==2024.7.4").check()
    later = CERTIFI.search(lock.read_text())
    assert later
    # ... and the project pins it another, in its lock alone.
    project.run("uv", "lock", "-q", "--upgrade-package", "certifi==2024.8.30").check()
    commit(project.path, "rendered, with the template's lock and our certifi")
    before = lock.read_text()
    # The later commit of the template: a new dependency, and that lock.
    pyproject = template / "template" / "pyproject.toml.jinja"
    pyproject.write_text(
        pyproject.read_text().replace('    "opentelemetry', '    "idna>=3",\n    "opentelemetry', 1)
    )
    template_lock = template / "template" / "uv.lock.jinja"
    assert rendered[0] in template_lock.read_text()
    template_lock.write_text(template_lock.read_text().replace(rendered[0], later[0]))
    git(*GIT_USER, "commit", "-q", "-am", "a new dependency, certifi 2024.7.4", cwd=template)

    copier.run_update(
        project.path,
        defaults=True,
        overwrite=True,
        unsafe=True,
        quiet=True,
        vcs_ref="HEAD",
        conflict="inline",
        skip_answered=True,
    )

    # Not merged (a conflict in certifi's block): the project's lock, re-locked.
    assert conflicts(project.path) == ([], [])
    project.run("uv", "lock", "--locked").check()
    after = lock.read_text()
    assert '{ name = "idna", specifier = ">=3" }' in after
    assert '{ name = "idna", specifier = ">=3" }' not in before
    # Every pin kept (idna was in the lock already), the project's certifi included.
    assert lock_tools.versions(after) == lock_tools.versions(before)
    assert lock_tools.versions(after)["certifi"] == {"2024.8.30"}


def run_own_tests(project: RenderedProject) -> None:
    # The whole load test is the matrix's (`Combination.runs_load_test`): a round here.
    summary = project.run_own_tests(project_tools.test_servers(), {"LOAD_TEST_ROUNDS": "1"})
    assert re.search(r"\d+ passed", summary), summary
    assert not re.search(r"failed|error|skipped|xfail", summary), summary
