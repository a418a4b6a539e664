"""Provider failures, in the service's terms: what went wrong upstream and may it be retried."""

from __future__ import annotations


class ProviderError(Exception):
    """The upstream failed. `status_code` is what the service answers its own caller."""

    status_code = 502
    code = "upstream_error"
    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ProviderUnavailableError(ProviderError):
    """A 5xx answer, or no answer at all (connection refused or reset)."""

    retryable = True


class ProviderTimeoutError(ProviderError):
    status_code = 504
    code = "upstream_timeout"
    retryable = True


class ProviderRateLimitedError(ProviderError):
    """The upstream's own 429; passed on to the caller with its `Retry-After`."""

    status_code = 429
    code = "upstream_rate_limited"
    retryable = True


class ProviderRejectedError(ProviderError):
    """The upstream refused the request itself (a 4xx other than 429): retrying cannot help."""

    status_code = 400
    code = "upstream_rejected"


class ModelNotFoundError(ProviderError):
    status_code = 404
    code = "model_not_found"


# What a route that calls the provider may answer when the call fails: the classes' statuses.
PROVIDER_ERROR_STATUSES = (400, 404, 429, 502, 504)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header given in seconds; None when absent or a date."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
