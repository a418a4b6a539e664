"""Fetch Mermaid from the npm registry, so the docs site renders its diagrams offline.

Material for MkDocs draws Mermaid diagrams in the browser with mermaid.min.js, which it loads
from unpkg.com unless a `mermaid` global already exists. The file is 2.7 MB, so it is not
committed: this module fetches the pinned release once (`npm pack`, which checks the
registry's integrity hash) into the cache, and the `tools/mkdocs_hooks.py` hook serves it
with the site when `MERMAID_JS` names it:

    MERMAID_JS=$(uv run python -m tools.mermaid) uv run --group docs mkdocs build
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tools.project import cache_dir

# The major version Material for MkDocs 9 loads itself (unpkg.com/mermaid@11).
MERMAID_VERSION = "11.12.2"


def mermaid_js() -> Path:
    """The path of mermaid.min.js, fetched from the npm registry on first use."""
    target = cache_dir() / "mermaid" / f"mermaid-{MERMAID_VERSION}.min.js"
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        msg = "npm is needed to fetch mermaid.min.js (apt-get install npm)"
        raise RuntimeError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [npm, "pack", f"mermaid@{MERMAID_VERSION}", "--silent"],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        with tarfile.open(Path(folder) / f"mermaid-{MERMAID_VERSION}.tgz") as archive:
            member = archive.extractfile("package/dist/mermaid.min.js")
            if member is None:
                msg = f"mermaid@{MERMAID_VERSION} has no dist/mermaid.min.js"
                raise RuntimeError(msg)
            partial = target.with_suffix(".part")
            partial.write_bytes(member.read())
            partial.replace(target)
    return target


if __name__ == "__main__":
    print(mermaid_js())
    sys.exit(0)
