"""Readiness: ping every dependency concurrently, each within the same timeout."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from ..schemas.health import CheckResult, Readiness

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..resources import Resources

logger = structlog.get_logger(__name__)


class ReadinessService:
    def __init__(
        self, probes: Mapping[str, Callable[[], Awaitable[object]]], *, timeout: float
    ) -> None:
        self.probes = probes
        self.timeout = timeout

    @classmethod
    def for_resources(cls, resources: Resources) -> ReadinessService:
        async def ping_redis() -> None:
            await resources.redis.ping()

        return cls(
            {"database": resources.database.ping, "redis": ping_redis},
            timeout=resources.settings.readiness_timeout,
        )

    async def check(self) -> Readiness:
        names = list(self.probes)
        results = await asyncio.gather(*(self._run(name) for name in names))
        checks = dict(zip(names, results, strict=True))
        healthy = all(result.status == "ok" for result in checks.values())
        return Readiness(status="ok" if healthy else "unavailable", checks=checks)

    async def _run(self, name: str) -> CheckResult:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.probes[name](), self.timeout)
        except TimeoutError:
            error = f"no answer within {self.timeout:g}s"
        except Exception as exc:  # noqa: BLE001 (any failure of a dependency means not ready)
            error = type(exc).__name__
            logger.warning("readiness_check_failed", check=name, error=repr(exc))
        else:
            return CheckResult(status="ok", latency_ms=_elapsed_ms(started))
        return CheckResult(status="error", latency_ms=_elapsed_ms(started), error=error)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
