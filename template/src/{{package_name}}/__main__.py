"""`python -m <package>` (or the console script): serve the app with uvicorn, in one
process; production runs gunicorn with `gunicorn.conf.py`."""

from __future__ import annotations

import uvicorn

from .server import HeadTimeoutProtocol
from .settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        f"{__package__}.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        # Logging is configured by the app (structlog JSON); uvicorn's access log is replaced.
        log_config=None,
        access_log=False,
        # Request heads have a deadline (http_header_timeout); idle kept-alive connections
        # are closed after uvicorn's timeout_keep_alive (5 s).
        http=HeadTimeoutProtocol,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
        # Streams get the grace period to finish (the app sees to it); the server waits a
        # little longer before it cancels what is left.
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


if __name__ == "__main__":
    main()
