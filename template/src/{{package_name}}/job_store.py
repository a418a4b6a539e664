"""Job state in Redis, where every replica (and every worker) reads and writes the same jobs.

A job is one hash, `<namespace>:job:{<id>}`; the results of its finished items are another,
`<namespace>:job:{<id>}:items`, so a job that is run again (after a crash or a transient
failure) skips what is already done. The braces are a Redis Cluster hash tag: the scripts
below touch both keys, which must share a slot.

Every change of state is a Lua script, so two workers (or a worker and a cancelling caller)
never both win a race: only a `queued` job can be claimed, and only the claim that holds
it (its `worker` token) can save items, renew the lease or finish it.

A running job holds a lease that its worker renews while it lives. A job whose lease has
passed belongs to a process that died: `expire` puts it back in the queue (when its worker
can be replaced by another) or marks it failed. Leases are also kept in a sorted set,
so any replica can find the expired ones without scanning every job. Times are Redis's own
clock (`TIME`), so the replicas' clocks do not have to agree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from .security.principal import Principal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from redis.asyncio import Redis
    from redis.typing import EncodableT

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# What a worker writes (ARGV[1] its token) is written only while it holds the running job:
# otherwise the script returns the job's status (`missing` when there is no such job).
_HOLDER_ONLY = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then
  return status or 'missing'
end
"""

# A finished job keeps its result for `retention` seconds; its items are no longer needed.
_FINISH_KEYS = """
local function close(status, retention)
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', now, 'updated_at', now)
  redis.call('HDEL', KEYS[1], 'lease_until', 'worker')
  redis.call('EXPIRE', KEYS[1], retention)
  redis.call('DEL', KEYS[2])
end
"""

# ARGV: token, lease_ms. Returns {outcome, attempts}: outcome `claimed` or the status that
# kept the job from being claimed (`missing` when there is no such job).
_CLAIM = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0} end
if status ~= 'queued' then return {status, 0} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1],
  'lease_until', now + tonumber(ARGV[2]), 'updated_at', now)
redis.call('HSETNX', KEYS[1], 'started_at', now)
return {'claimed', attempts}
"""
)

# ARGV: token, lease_ms. Renews the lease of a job this token holds; returns its status.
_RENEW = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if redis.call('HGET', KEYS[1], 'worker') == ARGV[1]
    and (status == 'running' or status == 'queued') then
  redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[2]))
  return status
end
return 'lost'
"""
)

# ARGV: token, index, value, total. Saves one finished item of a running job.
_SAVE_ITEM = (
    _NOW
    + _HOLDER_ONLY
    + """
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local done = redis.call('HLEN', KEYS[2])
redis.call('HSET', KEYS[1], 'progress', tostring(done / tonumber(ARGV[4])), 'updated_at', now)
return 'running'
"""
)

# ARGV: token, progress. Progress of a job that has no items (or reports within one).
_PROGRESS = (
    _NOW
    + _HOLDER_ONLY
    + """
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'updated_at', now)
return 'running'
"""
)

# ARGV: token, status, result, error, retention_s. Ends the attempt this token holds.
_FINISH = (
    _NOW
    + _FINISH_KEYS
    + _HOLDER_ONLY
    + """
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
if ARGV[2] == 'succeeded' then redis.call('HSET', KEYS[1], 'progress', '1') end
close(ARGV[2], tonumber(ARGV[5]))
return 'ok'
"""
)

# ARGV: token, error, keep_lease_ms ('' to give the lease up). Back to `queued` after a
# transient failure, to be claimed again; its items so far are kept.
_RELEASE = (
    _NOW
    + _HOLDER_ONLY
    + """
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[2], 'updated_at', now)
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'lease_until', 'worker')
else
  redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(ARGV[3]))
end
return 'ok'
"""
)

# ARGV: retention_s. Cancels a job that has not finished; returns its status before.
_CANCEL = (
    _NOW
    + _FINISH_KEYS
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' or status == 'running' then close('cancelled', tonumber(ARGV[1])) end
return status or 'missing'
"""
)

# ARGV: token, error, retention_s. Fails a job this token holds, queued or running, whatever
# its worker is doing: what it writes afterwards is refused. Returns its status before.
_ABANDON = (
    _NOW
    + _FINISH_KEYS
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if (status == 'queued' or status == 'running')
    and redis.call('HGET', KEYS[1], 'worker') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'error', ARGV[2])
  close('failed', tonumber(ARGV[3]))
end
return status or 'missing'
"""
)

# ARGV: requeue ('1' or '0'), max_attempts, error, retention_s. A job whose lease has passed
# is queued again (when allowed and attempts remain) or failed. Returns `alive` when the
# lease has not passed (or the job holds none), else `requeued`, `failed` or its status.
_EXPIRE = (
    _NOW
    + _FINISH_KEYS
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'running' and status ~= 'queued' then return status or 'missing' end
local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '')
if not lease or lease >= now then return 'alive' end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if ARGV[1] == '1' and status == 'running' and attempts < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[3], 'updated_at', now)
  redis.call('HDEL', KEYS[1], 'lease_until', 'worker')
  return 'requeued'
end
redis.call('HSET', KEYS[1], 'error', ARGV[3])
close('failed', tonumber(ARGV[4]))
return 'failed'
"""
)


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    owner_id: str
    principal: Principal
    status: JobStatus
    progress: float
    attempts: int
    input: dict[str, Any]
    result: Any
    # While a job is queued again after a failed attempt, the failure that caused it.
    error: JobError | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # When the worker holding the job must renew its lease by, in ms since the epoch.
    lease_until: int | None


@dataclass(frozen=True, slots=True)
class Claim:
    claimed: bool
    status: str
    attempts: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _moment(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None


class JobStore:
    def __init__(self, redis: Redis, *, namespace: str, retention_seconds: int) -> None:
        self.redis = redis
        self.namespace = namespace
        self.retention_seconds = retention_seconds
        self._leases = f"{namespace}:leases"
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._save_item = redis.register_script(_SAVE_ITEM)
        self._progress = redis.register_script(_PROGRESS)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._cancel = redis.register_script(_CANCEL)
        self._abandon = redis.register_script(_ABANDON)
        self._expire = redis.register_script(_EXPIRE)

    def _keys(self, job_id: str) -> list[str]:
        # The id in braces: a Redis Cluster hash tag, one slot for both keys.
        job = f"{self.namespace}:job:" + "{" + job_id + "}"
        return [job, f"{job}:items"]

    async def create(
        self,
        *,
        job_id: str,
        kind: str,
        principal: Principal,
        input_: Mapping[str, Any],
        lease_holder: str | None = None,
        lease_seconds: float = 0,
    ) -> None:
        """A new `queued` job; with a lease holder, leased to it from the start (the
        in-process runner holds its queued jobs, so a dead process's queue is noticed)."""
        now = await self._now_ms()
        fields: dict[EncodableT, EncodableT] = {
            "id": job_id,
            "kind": kind,
            "owner_id": principal.id,
            "principal": json.dumps(asdict(principal)),
            "status": "queued",
            "progress": "0",
            "attempts": 0,
            "input": json.dumps(input_),
            "created_at": now,
            "updated_at": now,
        }
        lease_until = now + round(lease_seconds * 1000)
        if lease_holder is not None:
            fields |= {"worker": lease_holder, "lease_until": lease_until}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys(job_id)[0], mapping=fields)
            if lease_holder is not None:
                pipe.zadd(self._leases, {job_id: lease_until})
            await pipe.execute()

    async def discard(self, job_id: str) -> None:
        """Forget a job that was never queued."""
        await self.redis.delete(*self._keys(job_id))
        await self.redis.zrem(self._leases, job_id)

    async def get(self, job_id: str) -> Job | None:
        raw = await self.redis.hgetall(self._keys(job_id)[0])
        data = {_text(key): _text(value) for key, value in raw.items()}
        if "status" not in data:
            return None
        error = json.loads(data["error"]) if data.get("error") else None
        return Job(
            id=data["id"],
            kind=data["kind"],
            owner_id=data["owner_id"],
            principal=Principal(**json.loads(data["principal"])),
            status=cast("JobStatus", data["status"]),
            progress=float(data.get("progress", 0)),
            attempts=int(data.get("attempts", 0)),
            input=json.loads(data["input"]),
            result=json.loads(data["result"]) if data.get("result") else None,
            error=JobError(**error) if error else None,
            created_at=_moment(data["created_at"]) or datetime.now(UTC),
            started_at=_moment(data.get("started_at")),
            finished_at=_moment(data.get("finished_at")),
            lease_until=int(data["lease_until"]) if data.get("lease_until") else None,
        )

    async def claim(self, job_id: str, *, token: str, lease_seconds: float) -> Claim:
        outcome, attempts = await self._claim(
            keys=self._keys(job_id), args=[token, round(lease_seconds * 1000)]
        )
        claimed = outcome == b"claimed"
        if claimed:
            await self._track_lease(job_id)
        return Claim(claimed, outcome.decode(), int(attempts))

    async def renew(self, job_ids: list[str], *, token: str, lease_seconds: float) -> list[str]:
        """Renew the leases `token` holds on these jobs; their statuses (`lost` when the
        token no longer holds one: another worker took it over, or it finished)."""
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                await self._renew(
                    keys=self._keys(job_id), args=[token, round(lease_seconds * 1000)], client=pipe
                )
            statuses = [status.decode() for status in await pipe.execute()]
        now = await self._now_ms()
        held = {
            job_id: now + round(lease_seconds * 1000)
            for job_id, status in zip(job_ids, statuses, strict=True)
            if status in ("queued", "running")
        }
        if held:
            await self.redis.zadd(self._leases, held)
        return statuses

    async def save_item(
        self, job_id: str, *, token: str, index: int, value: Any, total: int
    ) -> str:
        """Keep one finished item; the job's status (`running` unless it was taken away)."""
        status: bytes = await self._save_item(
            keys=self._keys(job_id), args=[token, index, json.dumps(value), total]
        )
        return status.decode()

    async def items(self, job_id: str) -> dict[int, Any]:
        raw = await self.redis.hgetall(self._keys(job_id)[1])
        return {int(index): json.loads(value) for index, value in raw.items()}

    async def set_progress(self, job_id: str, *, token: str, progress: float) -> str:
        status: bytes = await self._progress(
            keys=self._keys(job_id), args=[token, f"{min(1.0, max(0.0, progress)):.4f}"]
        )
        return status.decode()

    async def finish(
        self,
        job_id: str,
        *,
        token: str,
        status: Literal["succeeded", "failed"],
        result: Any = None,
        error: JobError | None = None,
    ) -> bool:
        outcome = await self._finish(
            keys=self._keys(job_id),
            args=[
                token,
                status,
                json.dumps(result) if result is not None else "",
                json.dumps(asdict(error)) if error else "",
                self.retention_seconds,
            ],
        )
        await self.redis.zrem(self._leases, job_id)
        return bool(outcome == b"ok")

    async def release(
        self, job_id: str, *, token: str, error: JobError, keep_lease_seconds: float | None
    ) -> bool:
        keep = "" if keep_lease_seconds is None else str(round(keep_lease_seconds * 1000))
        outcome = await self._release(
            keys=self._keys(job_id), args=[token, json.dumps(asdict(error)), keep]
        )
        if keep_lease_seconds is None:
            await self.redis.zrem(self._leases, job_id)
        return bool(outcome == b"ok")

    async def cancel(self, job_id: str) -> str:
        """Cancel the job unless it has finished; its status before."""
        before: bytes = await self._cancel(keys=self._keys(job_id), args=[self.retention_seconds])
        await self.redis.zrem(self._leases, job_id)
        return before.decode()

    async def abandon(self, job_id: str, *, token: str, error: JobError) -> bool:
        """Fail a job `token` holds, queued or running; whether it did."""
        before: bytes = await self._abandon(
            keys=self._keys(job_id),
            args=[token, json.dumps(asdict(error)), self.retention_seconds],
        )
        await self.redis.zrem(self._leases, job_id)
        return before in (b"queued", b"running")

    async def expire(
        self, job_id: str, *, requeue: bool, max_attempts: int, error: JobError
    ) -> str:
        outcome: bytes = await self._expire(
            keys=self._keys(job_id),
            args=[
                "1" if requeue else "0",
                max_attempts,
                json.dumps(asdict(error)),
                self.retention_seconds,
            ],
        )
        if outcome != b"alive":
            await self.redis.zrem(self._leases, job_id)
        return outcome.decode()

    async def expired(self, *, limit: int = 100) -> list[str]:
        """Ids of jobs whose lease, as last recorded, has passed."""
        now = await self._now_ms()
        ids = await self.redis.zrangebyscore(self._leases, "-inf", now, start=0, num=limit)
        return [_text(job_id) for job_id in cast("list[bytes]", ids)]

    async def _track_lease(self, job_id: str) -> None:
        lease = await self.redis.hget(self._keys(job_id)[0], "lease_until")
        if lease:
            await self.redis.zadd(self._leases, {job_id: int(lease)})

    async def _now_ms(self) -> int:
        seconds, microseconds = await self.redis.time()
        return int(seconds) * 1000 + int(microseconds) // 1000
