"""The template's lock (template/uv.lock.jinja) is current, and its check does fail.

`python -m tools.lock --check` renders the lock for each of the 96 variants that install
different packages and asks uv whether it is current (`uv lock --locked`, no resolution):
about ten seconds on two cores. Each combination's own `uv lock --check` (the fast tier)
checks Copier's rendering of it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tools import lock

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def test_the_template_lock_is_current(tmp_path: Path) -> None:
    problems = lock.check(work=tmp_path)

    assert not problems, "run `uv run python -m tools.lock`:\n" + "\n".join(problems[:3])


def test_check_does_report_a_changed_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = lock.LOCK_TEMPLATE.read_text()
    pinned = re.search(r'^name = "structlog"\nversion = "([^"]+)"$', text, re.MULTILINE)
    assert pinned
    broken = tmp_path / "uv.lock.jinja"
    broken.write_text(text.replace(pinned[0], pinned[0].replace(pinned[1], "25.4.0"), 1))
    monkeypatch.setattr(lock, "LOCK_TEMPLATE", broken)

    problems = lock.check(work=tmp_path / "work")

    assert len(problems) == len(lock.variants())  # every variant has structlog
    assert "structlog" in problems[0]


def test_both_installs_what_websocket_does_and_python_version_nothing() -> None:
    lock.check_lock_answers()


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        (lambda v: v["auth"] != "none", "auth != 'none'"),
        (lambda v: v["database"] == "mongo" and v["rag"], "database == 'mongo' and rag"),
        (lambda v: v["streaming"] != "sse", "streaming != 'sse'"),
        (lambda v: v["auth"] == "jwt" or v["rag"], "rag or auth == 'jwt'"),
    ],
)
def test_a_guard_is_a_short_condition_on_the_answers(
    held: Callable[[dict[str, Any]], bool], expected: str
) -> None:
    mask = sum(1 << i for i, v in enumerate(lock.variants()) if held(v))

    assert lock.condition(mask) == expected


def test_an_upgrade_lists_what_moved() -> None:
    old = {
        "ai-service": frozenset({"0.1.0"}),
        "redis": frozenset({"8.1.0"}),
        "six": frozenset({"1"}),
    }
    new = {
        "ai-service": frozenset({"0.1.0"}),
        "redis": frozenset({"8.2.0"}),
        "idna": frozenset({"3"}),
    }

    assert lock.changes(old, new) == ["- new: idna 3", "- redis 8.1.0 -> 8.2.0", "- gone: six 1"]
