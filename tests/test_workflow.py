"""The GitHub workflows are generated from copier.yml and pass actionlint.

ci.yml tests every push; lock-refresh.yml moves the rendered lock forward weekly, and is
also held to zizmor (pinned actions, least privilege, no expression inside a script) and
shellcheck, as the rendered projects' workflow is (tests/test_deploy_files.py).
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest
import yaml

from tests.test_deploy_files import passes, report, shellcheck, write_snippets, zizmor
from tools import workflow
from tools.matrix import combinations

if TYPE_CHECKING:
    from pathlib import Path

WORKFLOWS = [workflow.WORKFLOW, workflow.LOCK_REFRESH]


def test_the_workflows_have_not_drifted_from_copier_yml() -> None:
    message = "run `uv run python -m tools.workflow` and commit the result"
    assert workflow.WORKFLOW.read_text() == workflow.render(), message
    assert workflow.LOCK_REFRESH.read_text() == workflow.render_lock_refresh(), message


def test_one_job_per_combination() -> None:
    for generated in (workflow.workflow(), workflow.lock_refresh()):
        include = generated["jobs"]["combination"]["strategy"]["matrix"]["include"]

        assert [entry["id"] for entry in include] == [c.id for c in combinations()]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(actionlint: list[str], path: Path) -> None:
    result = subprocess.run([*actionlint, str(path)], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lock_refresh_passes_zizmor_and_shellcheck(tmp_path: Path) -> None:
    audit = zizmor(workflow.LOCK_REFRESH)
    jobs = yaml.safe_load(workflow.LOCK_REFRESH.read_text())["jobs"]
    scripts = {
        f"{name}:{index}": ("bash", step["run"])
        for name, job in jobs.items()
        for index, step in enumerate(job["steps"])
        if "run" in step
    }
    lint = shellcheck(*write_snippets(scripts, tmp_path))

    assert passes(audit), report(audit)
    assert passes(lint), report(lint)


def test_the_lock_refresh_writes_only_where_it_runs_no_new_code() -> None:
    refresh = workflow.lock_refresh()
    assert refresh["permissions"] == {}
    writes = {
        name for name, job in refresh["jobs"].items() if "write" in job["permissions"].values()
    }
    assert writes == {"pull-request"}
    steps = refresh["jobs"]["pull-request"]["steps"]
    assert "uv " not in steps[-1]["run"]  # git and gh only
    assert set(refresh["jobs"]["pull-request"]["needs"]) == {"lock", "combination"}


def test_actionlint_does_report_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )

    result = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, check=False)

    assert result.returncode == 1
    assert "broken.yml:6:" in result.stdout
