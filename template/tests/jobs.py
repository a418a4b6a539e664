"""Submitting jobs and waiting for them, as the tests of jobs do, and the check that a job handed
to what runs jobs a second time still runs once."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import httpx2

FINISHED = ("succeeded", "failed", "cancelled")


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "messages": [{"role": "user", "content": content}], **extra}


async def submit(client: httpx2.AsyncClient, **job: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    client: httpx2.AsyncClient,
    job_id: str,
    *statuses: str,
    progress: float = 0.0,
    within: float = 20,
) -> dict[str, Any]:
    """The job, once its status is one of `statuses` (by default, any finished one) and its
    progress at least `progress`."""
    wanted = statuses or FINISHED
    deadline = asyncio.get_running_loop().time() + within
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in wanted and job["progress"] >= progress:
            return job
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"job still {job['status']} after {within}s: {job}", pytrace=False)
        await asyncio.sleep(0.05)


async def calls_of(client: httpx2.AsyncClient, model: str) -> int:
    """How many calls of `model` the caller has been charged for."""
    report = (await client.get("/v1/usage")).json()
    return sum(row["calls"] for row in report["data"] if row["model"] == model)


async def given_twice_runs_once(
    client: httpx2.AsyncClient, again: Callable[[str], Awaitable[object]]
) -> None:
    """Submits a job and hands it again to what runs jobs with `again`, while it runs and after it
    has finished: it ran once, its requests each answered once."""
    calls_before = await calls_of(client, "fake")
    requests = [chat(f"twice {n}") for n in range(3)]
    job = await submit(client, kind="chat_completions", requests=requests)
    await again(job["id"])
    done = await wait_for(client, job["id"])
    await again(job["id"])
    # Jobs are taken in order, and the one given again ends at its first look at itself: once
    # a job submitted after it has finished, it has been dealt with too.
    after = await submit(client, kind="chat_completions", requests=[chat("after")])
    await wait_for(client, after["id"])
    later = await wait_for(client, job["id"])
    calls = await calls_of(client, "fake") - calls_before

    assert done["status"] == "succeeded", done
    assert done["attempts"] == later["attempts"] == 1
    assert later["finished_at"] == done["finished_at"]
    assert calls == len(requests) + 1  # and the one after
