"""A real nginx in front of the app, for the tests: the project's own deploy/nginx.conf, with
only what ties it to compose changed, run in the foreground by the test."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"
# Debian's package puts it in /usr/sbin, which is not on every user's PATH.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str:
    if NGINX is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    return NGINX


def replace_once(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced, failing unless it occurs exactly once: a change to the
    config that moves an anchor must fail here, not silently test another config."""
    count = text.count(old)
    assert count == 1, f"{CONFIG.name}: expected {old!r} once, found it {count} times"
    return text.replace(old, new)


def adapted(text: str, *, port: int, upstreams: list[str], prefix: Path) -> str:
    """The config as these tests run it: on a loopback port, in front of `upstreams`, with one
    worker (one round-robin, so consecutive connections alternate between the upstreams) and
    temp files under `prefix` (the packaged paths belong to root)."""
    text = replace_once(text, "worker_processes auto;", "worker_processes 1;")
    text = replace_once(text, "listen 80;", f"listen 127.0.0.1:{port};")
    servers = "\n        ".join(f"server {upstream};" for upstream in upstreams)
    text = replace_once(text, "server api:8000;", servers)
    temp = "".join(f"    {name}_temp_path {prefix / name};\n" for name in TEMP_PATHS)
    return replace_once(text, "http {\n", "http {\n" + temp)


def command(config: Path, prefix: Path, *, foreground: bool = False) -> list[str]:
    """nginx with this config, its pid file and error log (stderr) of its own."""
    directives = f"pid {prefix / 'nginx.pid'};"
    if foreground:
        directives += " daemon off;"
    if os.geteuid() == 0:
        # As root, workers would switch to an unprivileged user, which cannot enter the
        # test's private temp directory.
        directives += " user root;"
    return [nginx_binary(), "-p", str(prefix), "-c", str(config), "-e", "stderr", "-g", directives]


def check(config: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the config."""
    return subprocess.run(  # noqa: S603 (nginx, with our own arguments)
        [*command(config, prefix), "-t"], capture_output=True, text=True, check=False
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def running(config: Path, prefix: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground; its access log (stdout) goes to `prefix/access.log`, its error
    log to `prefix/error.log`. Stopped (fast shutdown) at the end."""
    with (prefix / "access.log").open("wb") as access, (prefix / "error.log").open("wb") as errors:
        process = subprocess.Popen(  # noqa: S603 (nginx, with our own arguments)
            command(config, prefix, foreground=True), stdout=access, stderr=errors
        )
    try:
        wait_until_listening(port, process, prefix / "error.log")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nginx exited:\n{log.read_text()}", pytrace=False)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.02)
        else:
            return
    pytest.fail(f"nginx did not listen:\n{log.read_text()}", pytrace=False)


def access_log(prefix: Path) -> list[dict[str, Any]]:
    """The access log's lines so far (JSON, one a line)."""
    text = (prefix / "access.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
