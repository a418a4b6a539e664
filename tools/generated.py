"""Files generated from copier.yml: written by their module, or checked for drift."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def write_or_check(path: Path, text: str, *, module: str, check: bool) -> int:
    """Write `text` to `path`; with `check`, only report (exit status 1) when they differ."""
    if not check:
        path.write_text(text)
        return 0
    if path.exists() and path.read_text() == text:
        return 0
    print(f"{path} has drifted from copier.yml: run `python -m {module}`")
    return 1
