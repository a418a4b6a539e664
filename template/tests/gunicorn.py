"""The production server, gunicorn with the project's own gunicorn.conf.py, started for
tests of what only it does: several worker processes, signals handled by a process manager."""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.processes import started, wait_until_healthy

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

CONFIG = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@contextmanager
def gunicorn(
    values: dict[str, Any], log: Path, *, workers: int, environment: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """gunicorn serving the app with these settings on a free port; its URL and process."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        args = [
            "gunicorn",
            "--config",
            str(CONFIG),
            # The socket is handed over, so no other process can take the port in between.
            "--bind",
            f"fd://{listener.fileno()}",
            "--workers",
            str(workers),
        ]
        process_context = started(
            args, values, log, pass_fds=(listener.fileno(),), environment=environment
        )
        with process_context as process:
            # Only gunicorn holds the socket now: once it stops listening, connecting fails.
            listener.close()
            wait_until_healthy(url, process, log)
            yield url, process
