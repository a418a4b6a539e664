"""The combination list is derived from copier.yml and covers what TEMPLATE.md promises."""

from __future__ import annotations

import itertools

from tools.matrix import (
    CORE_QUESTIONS,
    ORTHOGONAL_QUESTIONS,
    choices,
    combinations,
    default,
    defaults_combination,
)


def test_every_core_combination_appears_exactly_once() -> None:
    expected = {
        tuple(values) for values in itertools.product(*(choices(q) for q in CORE_QUESTIONS))
    }
    actual = [tuple(c.answers[q] for q in CORE_QUESTIONS) for c in combinations()]

    assert len(actual) == len(expected) == 36
    assert set(actual) == expected


def test_every_orthogonal_value_meets_every_core_value() -> None:
    for core, orthogonal in itertools.product(CORE_QUESTIONS, ORTHOGONAL_QUESTIONS):
        seen = {(c.answers[core], c.answers[orthogonal]) for c in combinations()}
        wanted = set(itertools.product(choices(core), choices(orthogonal)))
        assert seen == wanted, (core, orthogonal, wanted - seen)


def test_orthogonal_values_meet_each_other() -> None:
    for first, second in itertools.combinations(ORTHOGONAL_QUESTIONS, 2):
        seen = {(c.answers[first], c.answers[second]) for c in combinations()}
        assert seen == set(itertools.product(choices(first), choices(second)))


def test_the_defaults_are_one_combination_as_a_user_gets_them() -> None:
    combination = defaults_combination()

    assert combination.answers == {q: default(q) for q in (*CORE_QUESTIONS, *ORTHOGONAL_QUESTIONS)}


def test_ids_are_unique_and_stable() -> None:
    ids = [c.id for c in combinations()]

    assert len(set(ids)) == len(ids)
    assert ids[0] == "jwt-postgres-celery-sse"


def test_the_whole_load_test_runs_once_for_each_path_a_turn_takes() -> None:
    def transport(streaming: str) -> str:
        return "websocket" if streaming == "websocket" else "sse"

    paths = [
        (c.answers["auth"], c.answers["database"], transport(c.answers["streaming"]))
        for c in combinations()
        if c.runs_load_test
    ]

    assert len(paths) == len(set(paths))
    assert set(paths) == set(
        itertools.product(choices("auth"), choices("database"), ("sse", "websocket"))
    )
