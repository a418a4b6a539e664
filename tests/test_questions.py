"""Answers are validated by copier.yml itself: each bad one is refused with a useful message."""

from __future__ import annotations

import keyword
import re
import sys
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tools import questions_doc
from tools.matrix import COPIER_YML
from tools.project import render

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_name": "   "}, "project_name must not be empty"),
        ({"project_slug": "My Service"}, "project_slug must be lowercase letters"),
        ({"project_slug": "AI-service"}, "project_slug must be lowercase letters"),
        ({"project_slug": "ai--service"}, "project_slug must be lowercase letters"),
        ({"project_slug": "1service"}, "project_slug must be lowercase letters"),
        ({"package_name": "class"}, 'package_name "class" is a Python keyword'),
        ({"package_name": "json"}, 'package_name "json" is a module of the Python standard'),
        ({"package_name": "asyncio"}, 'package_name "asyncio" is a module of the Python'),
        ({"package_name": "fastapi"}, 'package_name "fastapi" would shadow a dependency'),
        ({"package_name": "tests"}, 'package_name "tests" would shadow a dependency or folder'),
        ({"package_name": "9lives"}, "package_name must be a lowercase Python identifier"),
        ({"package_name": "ai-service"}, "package_name must be a lowercase Python identifier"),
        ({"package_name": "AIService"}, "package_name must be a lowercase Python identifier"),
        ({"author_email": "not-an-email"}, "author_email must be an email address"),
        ({"author_email": "a@b"}, "author_email must be an email address"),
        ({"description": "two\nlines"}, "description must be a single line"),
        ({"auth": "oauth"}, "Invalid choice for 'auth'"),
        ({"database": "sqlite"}, "Invalid choice for 'database'"),
        ({"task_queue": "rq"}, "Invalid choice for 'task_queue'"),
        ({"streaming": "grpc"}, "Invalid choice for 'streaming'"),
        ({"llm_provider": "cohere"}, "Invalid choice for 'llm_provider'"),
        ({"python_version": "3.10"}, "Invalid choice for 'python_version'"),
    ],
)
def test_a_bad_answer_is_refused_with_its_message(
    answers: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        render(answers, tmp_path / "project")
    assert not (tmp_path / "project").exists()


def test_slug_and_package_name_are_derived_from_the_project_name(tmp_path: Path) -> None:
    project = render({"project_name": "  Support Bot 2 "}, tmp_path / "project")
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())

    assert answers["project_slug"] == "support-bot-2"
    assert answers["package_name"] == "support_bot_2"
    assert (project / "src" / "support_bot_2" / "main.py").is_file()


def _validator_list(name: str) -> set[str]:
    validator = yaml.safe_load(COPIER_YML.read_text())["package_name"]["validator"]
    match = re.search(rf"set {name} = \[(.*?)\]", validator, re.DOTALL)
    assert match, f"no `{name}` list in the package_name validator"
    return set(re.findall(r'"([^"]+)"', match[1]))


def test_every_python_keyword_is_refused_as_package_name() -> None:
    lowercase_keywords = {k for k in keyword.kwlist if k.islower()}
    assert _validator_list("keywords") == lowercase_keywords


def test_every_standard_library_module_is_refused_as_package_name() -> None:
    public = {name for name in sys.stdlib_module_names if not name.startswith("_")}
    assert public <= _validator_list("stdlib")


def test_the_questions_reference_has_not_drifted_from_copier_yml() -> None:
    assert questions_doc.QUESTIONS_DOC.read_text() == questions_doc.render(), (
        "run `uv run python -m tools.questions_doc` and commit the result"
    )
