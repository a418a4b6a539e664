"""Run inside a rendered project's environment (see bench/rag.py, which starts it).

    python rag_probe.py PACKAGE [--chunks 1000] [--chunks-per-document 100] [--queries 200]

Serves the rendered service from a separate process and, through its API only:
- ingestion: uploads a generated corpus (`--chunks` chunks at the service's chunk size, in
  documents of `--chunks-per-document`) with `POST /v1/documents`, all at once, and polls
  each ingestion job until it finishes: chunks/s from the first upload to the last job
  finished, and each job's seconds from its own started_at/finished_at;
- queries: `POST /v1/rag/query` (non-streamed, top_k 5) against the bare
  `POST /v1/embeddings` of the same question, in alternated rounds: p50/p95 of each and
  their ratio (what the search and the answer cost over embedding the question), and the
  share of queries whose first source is the document the question was written from.
The service process times its own stages (extraction, chunking, embedding, storing,
searching, answering) through wrappers set up in this file, never in the template, and hands
them over at a route of the bench's own, per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import probe_support
from probe_support import percentile

ROUND = 10  # questions per round; the two kinds alternate which goes first
WARMUP = 5
FILLER_SUBJECTS = (
    "The committee", "Our survey", "The field team", "An early report", "The archive",
    "Each visitor", "The new manual", "A later study", "The council", "Most readers",
)  # fmt: skip
FILLER_VERBS = (
    "describes", "questions", "compares", "records", "revisits", "explains", "praises",
    "criticises", "measures", "summarises",
)  # fmt: skip
FILLER_TAILS = (
    "before the winter season began.", "with more care than the previous edition.",
    "in the light of several conflicting accounts.", "as part of a longer review.",
    "without settling every remaining doubt.", "for readers new to the subject.",
    "after a careful reading of the sources.", "in plain and measured language.",
    "alongside a number of smaller observations.", "to the surprise of some observers.",
)  # fmt: skip
SYLLABLES = (
    "ka", "lo", "mi", "ren", "tus", "vo", "zan", "qui", "bel", "dor", "fen", "gra", "hal",
    "jor", "kel", "mur", "nix", "pol", "sar", "tev", "ulm", "vey", "wil", "yar", "zed",
)  # fmt: skip


# -- corpus -----------------------------------------------------------------------------


class Corpus:
    """Documents of prose whose paragraphs each have topic words of their own."""

    def __init__(self, package: str, chunks: int, per_document: int) -> None:
        chunking = importlib.import_module(f"{package}.services.chunking")
        settings = importlib.import_module(f"{package}.settings").Settings()
        self.size, self.overlap = settings.rag_chunk_size, settings.rag_chunk_overlap
        self.chunk_text = chunking.chunk_text
        self.random = random.Random(20261126)  # noqa: S311 (a corpus, not a secret)
        self.used: set[str] = set()
        count = max(1, round(chunks / per_document))
        targets = [chunks // count + (1 if i < chunks % count else 0) for i in range(count)]
        # Per document: its text, its paragraphs' topic words, and its chunk count.
        self.documents: list[tuple[str, list[list[str]], int]] = [
            self._document(target) for target in targets
        ]

    def _word(self) -> str:
        while True:
            word = "".join(self.random.choice(SYLLABLES) for _ in range(self.random.randint(3, 4)))
            if word not in self.used:
                self.used.add(word)
                return word

    def _paragraph(self, topics: list[str]) -> str:
        sentences = []
        for _ in range(self.random.randint(5, 9)):
            a, b = self.random.sample(topics, 2)
            sentences.append(
                f"{self.random.choice(FILLER_SUBJECTS)} {self.random.choice(FILLER_VERBS)} "
                f"the {a} of the {b} {self.random.choice(FILLER_TAILS)}"
            )
        return " ".join(sentences)

    def _document(self, target: int) -> tuple[str, list[list[str]], int]:
        """Paragraphs until the text cuts into `target` chunks (or the fewest above it)."""
        topics: list[list[str]] = []
        paragraphs: list[str] = []
        while True:
            topics.append([self._word() for _ in range(6)])
            paragraphs.append(self._paragraph(topics[-1]))
            # About 1.5 paragraphs per chunk: check the count only when it may be reached.
            if len(paragraphs) >= target:
                text = "\n\n".join(paragraphs)
                count = len(self.chunk_text(text, size=self.size, overlap=self.overlap))
                if count >= target:
                    return text, topics, count

    def questions(self, count: int) -> list[tuple[int, str]]:
        """(document number, question) pairs, cycling through documents and paragraphs."""
        asked = []
        for i in range(count):
            number = i % len(self.documents)
            topics = self.documents[number][1]
            words = self.random.sample(topics[self.random.randrange(len(topics))], 3)
            asked.append((number, f"What is said about the {words[0]}, {words[1]} and {words[2]}?"))
        return asked


# -- the service process, with its stages timed -----------------------------------------


STAGES: dict[str, list[float]] = defaultdict(list)
STAGES_PATH = "/bench-stages"


def timed(name: str, function: Any) -> Any:
    if asyncio.iscoroutinefunction(function):

        @functools.wraps(function)
        async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                STAGES[name].append(time.perf_counter() - started)

        return wrapper_async

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            STAGES[name].append(time.perf_counter() - started)

    return wrapper


def instrument(package: str) -> None:
    """Wrap the stages of an ingestion and a query (module and class attributes, looked up at
    call time, so the service runs them through the wrappers)."""

    def module(name: str) -> Any:
        return importlib.import_module(f"{package}.{name}")

    ingestion = module("services.ingestion")
    ingestion.extract_text = timed("ingest: extract text (thread)", ingestion.extract_text)
    ingestion.chunk_text = timed("ingest: chunk text", ingestion.chunk_text)
    # The kinds' table holds the executor itself: replaced in place, as every user reads it.
    kinds = module("services.job_kinds").JOB_KINDS
    kinds["document_ingestion"] = dataclasses.replace(
        kinds["document_ingestion"],
        run=timed("ingest: whole job", kinds["document_ingestion"].run),
    )
    jobs = module("services.jobs")
    jobs.JobContext.report_progress = timed(
        "ingest: report progress", jobs.JobContext.report_progress
    )
    fake = module("llm.fake").FakeProvider
    fake.embed = timed("provider embed (hashing)", fake.embed)
    fake.complete = timed("provider complete (fake answer)", fake.complete)
    metering = module("services.metering").MeteredCompletions
    metering.embed = timed("metered embed (limits, cache, usage)", metering.embed)
    metering.complete = timed("metered complete (limits, cache, usage)", metering.complete)
    rag = module("services.rag").RagService
    rag.retrieve = timed("query: retrieve (embed + search)", rag.retrieve)
    rag.answer = timed("query: answer (retrieve + complete)", rag.answer)
    for backend in ("postgres", "mongo"):
        try:
            storage = module(f"storage.{backend}.documents")
        except ImportError:
            continue
        for name in dir(storage):
            if name.endswith("DocumentRepository"):
                repository = getattr(storage, name)
                methods = ("add", "content", "replace_chunks", "search", "set_status")
                # MongoDB's: its documents read, and the search as the server does it.
                methods += ("_current", "_search_exact", "_search_atlas")
                for method in (m for m in methods if hasattr(repository, m)):
                    wrapped = timed(f"store: {method}", getattr(repository, method))
                    setattr(repository, method, wrapped)


def serve(package: str, port: int) -> None:
    import uvicorn

    instrument(package)
    app = importlib.import_module(f"{package}.main").create_app()

    async def take_stages() -> dict[str, list[float]]:
        taken = dict(STAGES)
        STAGES.clear()
        return taken

    # The bench's own route, added to the app object here (the template has none).
    app.add_api_route(STAGES_PATH, take_stages, methods=["GET"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the client -------------------------------------------------------------------------


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


async def ingest(client: httpx2.AsyncClient, corpus: Corpus) -> tuple[dict[str, Any], list[str]]:
    started = time.perf_counter()
    uploads: list[dict[str, Any]] = []
    upload_seconds: list[float] = []
    for number, (text, _topics, _count) in enumerate(corpus.documents):
        before = time.perf_counter()
        response = await client.post(
            "/v1/documents",
            files={"file": (f"doc-{number:03d}.txt", text.encode(), "text/plain")},
        )
        upload_seconds.append(time.perf_counter() - before)
        if response.status_code != 201:
            msg = f"upload {number}: {response.status_code} {response.text}"
            raise SystemExit(msg)
        uploads.append(response.json())
    jobs: dict[str, dict[str, Any]] = {}
    while len(jobs) < len(uploads):
        for upload in uploads:
            job_id = upload["job_id"]
            if job_id in jobs:
                continue
            job = (await client.get(f"/v1/jobs/{job_id}")).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                jobs[job_id] = job
        await asyncio.sleep(0.01)
    wall = time.perf_counter() - started
    failed = [job for job in jobs.values() if job["status"] != "succeeded"]
    if failed:
        msg = f"{len(failed)} ingestion job(s) did not succeed, e.g. {json.dumps(failed[0])}"
        raise SystemExit(msg)
    chunks = sum(job["result"]["chunks"] for job in jobs.values())
    expected = sum(count for _text, _topics, count in corpus.documents)
    if chunks != expected:
        print(f"  note: the service cut {chunks} chunks, the corpus was made for {expected}")
    per_job = [seconds_between(j["started_at"], j["finished_at"]) for j in jobs.values()]
    queued = [seconds_between(j["created_at"], j["started_at"]) for j in jobs.values()]
    figures = {
        "documents": len(uploads),
        "chunks": chunks,
        "wall": wall,
        "chunks_per_s": chunks / wall,
        "job_s": per_job,
        "queued_s": queued,
        "upload_s": upload_seconds,
        "bytes": sum(u["size_bytes"] for u in uploads),
        "attempts": max(j["attempts"] for j in jobs.values()),
    }
    return figures, [u["id"] for u in uploads]


async def ask(client: httpx2.AsyncClient, kind: str, question: str) -> tuple[float, Any]:
    if kind == "query":
        path, body = "/v1/rag/query", {"question": question, "top_k": 5}
    else:
        path, body = "/v1/embeddings", {"model": "local-embedding", "input": question}
    started = time.perf_counter()
    response = await client.post(path, json=body)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        msg = f"{path}: {response.status_code} {response.text}"
        raise SystemExit(msg)
    return seconds, response.json()


async def warm_up(client: httpx2.AsyncClient, asked: list[tuple[int, str]]) -> None:
    for _number, question in asked:
        await ask(client, "query", question)
        await ask(client, "embeddings", question)


async def query(
    client: httpx2.AsyncClient, asked: list[tuple[int, str]], document_ids: list[str]
) -> dict[str, Any]:
    seconds: dict[str, list[float]] = {"query": [], "embeddings": []}
    hits = 0
    for index, start in enumerate(range(0, len(asked), ROUND)):
        kinds = ("query", "embeddings") if index % 2 == 0 else ("embeddings", "query")
        for kind in kinds:
            for number, question in asked[start : start + ROUND]:
                took, body = await ask(client, kind, question)
                seconds[kind].append(took)
                if kind == "query":
                    sources = body["sources"]
                    hits += bool(sources) and sources[0]["document_id"] == document_ids[number]
    return {
        kind: {"p50": statistics.median(values), "p95": percentile(values, 0.95)}
        for kind, values in seconds.items()
    } | {"hit_rate": hits / len(asked), "count": len(asked)}


def report(ingested: dict[str, Any], queried: dict[str, Any]) -> None:
    job_s, queued_s, upload_s = ingested["job_s"], ingested["queued_s"], ingested["upload_s"]
    q, e = queried["query"], queried["embeddings"]
    rows = [
        ("documents / chunks", f"{ingested['documents']} / {ingested['chunks']}"
         f" ({ingested['bytes'] / 1e6:.2f} MB)"),
        ("ingestion wall (first upload to last job done)", f"{ingested['wall']:.2f} s"),
        ("ingestion throughput", f"{ingested['chunks_per_s']:.0f} chunks/s"),
        ("job seconds per document: median (min-max)",
         f"{statistics.median(job_s):.2f} ({min(job_s):.2f}-{max(job_s):.2f}) s"),
        ("queued before start: median (max)",
         f"{statistics.median(queued_s):.2f} ({max(queued_s):.2f}) s"),
        ("upload request: median (max)",
         f"{statistics.median(upload_s) * 1000:.0f} ({max(upload_s) * 1000:.0f}) ms"),
        ("most attempts of a job", str(ingested["attempts"])),
        (f"rag query p50 / p95 ({queried['count']} queries)",
         f"{q['p50'] * 1000:.1f} / {q['p95'] * 1000:.1f} ms"),
        ("embeddings p50 / p95 (baseline)", f"{e['p50'] * 1000:.1f} / {e['p95'] * 1000:.1f} ms"),
        ("ratio query / embeddings p50 (p95)",
         f"{q['p50'] / e['p50']:.1f} ({q['p95'] / e['p95']:.1f})"),
        ("hit rate (first source from the question's document)",
         f"{queried['hit_rate']:.1%} (chance {1 / ingested['documents']:.0%})"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def report_stages(phase: str, stages: dict[str, list[float]]) -> None:
    print(f"  service stages during {phase} (timed in the service; calls, total, mean, max):")
    width = max((len(name) for name in stages), default=0)
    for name in sorted(stages):
        values = stages[name]
        print(
            f"    {name:<{width}}  {len(values):5d}  {sum(values):7.2f} s"
            f"  {statistics.fmean(values) * 1000:8.2f} ms  {max(values) * 1000:8.1f} ms"
        )


async def measure(package: str, args: argparse.Namespace, logs: Path) -> None:
    corpus = Corpus(package, args.chunks, args.chunks_per_document)
    port = probe_support.free_port()
    with logs.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, package, "--serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        await probe_support.wait_until_up(url, process)
        headers = await probe_support.sign_in(url, os.environ["BENCH_AUTH"])
        async with httpx2.AsyncClient(base_url=url, timeout=120, headers=headers) as client:
            await client.get(STAGES_PATH)  # start-up and sign-in are not ingestion
            ingested, document_ids = await ingest(client, corpus)
            # Taking the stages resets them: ingestion, warm-up, then queries.
            ingestion_stages = (await client.get(STAGES_PATH)).json()
            asked = corpus.questions(WARMUP + args.queries)
            await warm_up(client, asked[:WARMUP])
            await client.get(STAGES_PATH)
            queried = await query(client, asked[WARMUP:], document_ids)
            query_stages = (await client.get(STAGES_PATH)).json()
    finally:
        process.terminate()
        process.wait(30)
    report(ingested, queried)
    report_stages("ingestion", ingestion_stages)
    report_stages("queries and embeddings", query_stages)
    problems = [
        line
        for line in logs.read_text(errors="replace").splitlines()
        if '"level": "error"' in line or '"level": "warning"' in line or "Traceback" in line
    ]
    if problems:
        print(f"  service log: {len(problems)} warning/error line(s), first: {problems[0][:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--port", type=int)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--chunks-per-document", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    if args.serve:
        serve(args.package, args.port)
        return
    database = asyncio.run(probe_support.prepare_database(args.package))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rag-") as tmp:
            asyncio.run(measure(args.package, args, Path(tmp) / "service.log"))
    finally:
        asyncio.run(probe_support.drop_database(args.package, database))


if __name__ == "__main__":
    main()
