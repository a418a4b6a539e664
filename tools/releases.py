"""The template's releases: version tag -> commit, so a clone without tags can make them.

Releases are git tags (`v` + a PEP 440 version) on this repository; `CHANGELOG.md` says
what each one added. CI clones may come without tags, so the update tests clone the
repository's committed history and create the tags listed here ("tag as needed").

A release's commit is written down in a later commit (a commit cannot name itself): tag
the release, then add its hash here. Until then it reads `None`, and the tests treat the
release as not yet made.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from tools.matrix import ROOT


@dataclass(frozen=True)
class Release:
    tag: str
    commit: str | None  # full hash; None until the release is tagged and recorded

    @property
    def version(self) -> Version:
        return Version(self.tag)


RELEASES: tuple[Release, ...] = (
    # Foundation: the questions, the rendered skeleton, the combination harness.
    Release("v0.1.0", "c16ff44e2f4cee0e249fac200f12d9a69ffcf264"),
    # LLM providers and the OpenAI-compatible API.
    Release("v0.2.0", "1d60f9c468d5a6be0951b7c62f2eb0af500648e3"),
    # Auth, rate limits, usage and the response cache.
    Release("v0.3.0", "abbc6e0e37ea3535f550478390b7b6e6b4497680"),
    # Conversations over SSE and WebSocket (the last commit before the RAG storage work).
    Release("v0.4.0", "5f43fd6a7444321a0af62568cf36ea7a88c1dc74"),
    # Long-running jobs and RAG.
    Release("v0.5.0", "b20302230dd303b019eeb59346ed135824169dc8"),
    # Deployment and operations, and the tested update path.
    Release("v0.6.0", "b5c296d05b5bb6d23bd02f82fec2cec4e90d0398"),
)

# The oldest release whose projects update to the current template without a conflict in a
# file the user did not touch (tests/test_update.py proves it for this one and the latest).
OLDEST_SUPPORTED = "v0.1.0"


def by_tag(tag: str) -> Release:
    return next(r for r in RELEASES if r.tag == tag)


def made() -> list[Release]:
    """The releases that have a commit, oldest first."""
    return [r for r in RELEASES if r.commit is not None]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def clone_with_tags(destination: Path, source: Path = ROOT) -> Path:
    """Clone the committed history of `source` and create the release tags it lacks.

    Only commits are cloned, never the working tree's uncommitted edits: `copier update`
    needs real versions on both ends. A tag that exists already must name the listed commit.
    """
    if git("rev-parse", "--is-shallow-repository", cwd=source) == "true":
        msg = (
            f"{source} is a shallow clone: the update tests need the releases' commits "
            "(git fetch --unshallow)"
        )
        raise RuntimeError(msg)
    git("clone", "--quiet", "--no-local", str(source), str(destination), cwd=source.parent)
    for release in made():
        existing = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{release.tag}^{{commit}}"],
            cwd=destination,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if existing and existing != release.commit:
            msg = f"tag {release.tag} names {existing}, tools/releases.py says {release.commit}"
            raise RuntimeError(msg)
        if not existing:
            git("tag", release.tag, release.commit or "", cwd=destination)
    return destination
