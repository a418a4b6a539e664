"""The GitHub workflow is generated from copier.yml and passes actionlint."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from tools import workflow
from tools.matrix import combinations

if TYPE_CHECKING:
    from pathlib import Path


def test_the_workflow_has_not_drifted_from_copier_yml() -> None:
    assert workflow.WORKFLOW.read_text() == workflow.render(), (
        "run `uv run python -m tools.workflow` and commit the result"
    )


def test_one_job_per_combination() -> None:
    include = workflow.workflow()["jobs"]["combination"]["strategy"]["matrix"]["include"]

    assert [entry["id"] for entry in include] == [c.id for c in combinations()]


def test_actionlint_finds_nothing(actionlint: list[str]) -> None:
    result = subprocess.run(
        [*actionlint, str(workflow.WORKFLOW)], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_does_report_a_broken_workflow(actionlint: list[str], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )

    result = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, check=False)

    assert result.returncode == 1
    assert "broken.yml:6:" in result.stdout
