"""MkDocs hook: serve Mermaid with the site instead of from a CDN, when a copy is at hand.

With `MERMAID_JS` set to a mermaid.min.js (`python -m tools.mermaid` fetches one), the file
is copied into the built site and loaded on every page, so Material for MkDocs finds the
`mermaid` global and never asks unpkg.com for it: the site works offline and from hosts that
allow no third-party scripts. Without it, Material loads Mermaid from unpkg.com as usual.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

SITE_PATH = "javascripts/mermaid.min.js"


def _source() -> Path | None:
    value = os.environ.get("MERMAID_JS")
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        msg = f"MERMAID_JS={value} is not a file"
        raise FileNotFoundError(msg)
    return path


def on_config(config: Any) -> Any:
    if _source() is not None:
        config.extra_javascript.insert(0, SITE_PATH)
    return config


def on_post_build(config: Any) -> None:
    source = _source()
    if source is not None:
        target = Path(config.site_dir) / SITE_PATH
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
