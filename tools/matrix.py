"""The variant matrix, derived from `copier.yml`: the one list tests and CI both use.

The core questions are crossed in full (3 x 2 x 2 x 3 = 36 combinations). The orthogonal
questions are spread over those combinations so that every value of each appears with every
value of every core question at least once (a pairwise cover), and the combination of all
defaults is tested exactly as a user who presses Enter everywhere gets it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COPIER_YML = ROOT / "copier.yml"

CORE_QUESTIONS = ("auth", "database", "task_queue", "streaming")
ORTHOGONAL_QUESTIONS = ("llm_provider", "rag", "python_version")


@dataclass(frozen=True)
class Combination:
    answers: dict[str, Any]

    @property
    def id(self) -> str:
        """`jwt-postgres-none-sse`: the core answers, which alone identify a combination."""
        return "-".join(str(self.answers[q]) for q in CORE_QUESTIONS)

    @property
    def label(self) -> str:
        """The id plus the orthogonal answers, for progress lines and CI job names."""
        extras = ", ".join(f"{q}={self.answers[q]}" for q in ORTHOGONAL_QUESTIONS)
        return f"{self.id} ({extras})"

    @property
    def runs_load_test(self) -> bool:
        """Whether the matrix runs this combination's whole load test (`tests/test_load.py`,
        the most expensive test of a suite: 2,000 streamed turns, and the worker's memory
        compared across them); the others run one round of 200 turns. What a turn runs
        through depends on the authentication, the database and the transport, not on the
        task queue, and `streaming=both` streams turns over SSE as `sse` does: one
        combination for each authentication, database and transport runs it whole."""
        return self.answers["task_queue"] == "none" and self.answers["streaming"] != "both"

    def __hash__(self) -> int:
        return hash(self.id)


@cache
def questions() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(COPIER_YML.read_text())
    return {name: spec for name, spec in data.items() if not name.startswith("_")}


def choices(question: str) -> list[Any]:
    spec = questions()[question]
    if spec.get("type") == "bool":
        return [True, False]
    raw = spec["choices"]
    return list(raw.values()) if isinstance(raw, dict) else list(raw)


def default(question: str) -> Any:
    return questions()[question]["default"]


Pair = tuple[str, Any, str, Any]


def _pairs(core: dict[str, Any], orthogonal: dict[str, Any]) -> set[Pair]:
    """Each orthogonal answer with each core answer, and with each other orthogonal answer."""
    with_core = {
        (cq, core[cq], oq, orthogonal[oq]) for cq in CORE_QUESTIONS for oq in ORTHOGONAL_QUESTIONS
    }
    among_orthogonal = {
        (a, orthogonal[a], b, orthogonal[b])
        for a, b in itertools.combinations(ORTHOGONAL_QUESTIONS, 2)
    }
    return with_core | among_orthogonal


@cache
def combinations() -> tuple[Combination, ...]:
    """All core combinations, each with orthogonal answers chosen greedily for pair coverage."""
    core_values = [choices(q) for q in CORE_QUESTIONS]
    orthogonal_options = [
        dict(zip(ORTHOGONAL_QUESTIONS, values, strict=True))
        for values in itertools.product(*(choices(q) for q in ORTHOGONAL_QUESTIONS))
    ]
    defaults_core = {q: default(q) for q in CORE_QUESTIONS}
    defaults_orthogonal = {q: default(q) for q in ORTHOGONAL_QUESTIONS}
    covered: set[Pair] = set()
    uses: Counter[Pair] = Counter()
    result = []
    for values in itertools.product(*core_values):
        core = dict(zip(CORE_QUESTIONS, values, strict=True))
        if core == defaults_core:
            orthogonal = defaults_orthogonal
        else:
            # Most new pairs first, then the least used pairs, so that once every pair is
            # covered the rest are spread evenly; max() keeps the first best, so it is stable.
            orthogonal = max(
                orthogonal_options,
                key=lambda option: (
                    len(_pairs(core, option) - covered),
                    -sum(uses[pair] for pair in _pairs(core, option)),
                ),
            )
        uses.update(_pairs(core, orthogonal))
        covered |= _pairs(core, orthogonal)
        result.append(Combination({**core, **orthogonal}))
    return tuple(result)


def defaults_combination() -> Combination:
    answers = {q: default(q) for q in (*CORE_QUESTIONS, *ORTHOGONAL_QUESTIONS)}
    return next(c for c in combinations() if c.answers == answers)


def by_id(combination_id: str) -> Combination:
    for combination in combinations():
        if combination.id == combination_id:
            return combination
    known = ", ".join(c.id for c in combinations())
    msg = f"unknown combination {combination_id!r}; known: {known}"
    raise KeyError(msg)
