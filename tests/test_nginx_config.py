"""Every combination's deploy/nginx.conf passes `nginx -t` (Debian's nginx).

Two lines are changed before the check, each found exactly once:
- `server api:8000;`: nginx resolves an upstream's host name while it loads the config, also
  under `-t`, and `api` is known only to compose's DNS. Making it resolvable instead (an
  /etc/hosts entry, a mount namespace with a hosts file of our own) needs root, and
  HOSTALIASES only renames a name before a DNS query, which then needs a DNS server that
  knows the new name. A loopback address keeps the rest of the file as rendered, and `-t`
  never connects to an upstream.
- `listen 80;`: `-t` binds the listening sockets, and port 80 needs root.
The pid file and error log are given on the command line, in a directory of the test's.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tools.project import RenderedProject

# Debian's package puts it in /usr/sbin, which is not on every user's PATH.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in deploy/nginx.conf"
    return text.replace(old, new)


def nginx_t(config: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the config, with the compose-only host and the privileged port replaced."""
    if NGINX is None:
        pytest.fail("nginx is not installed (apt-get install nginx)", pytrace=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = replace_once(config, "server api:8000;", "server 127.0.0.1:8000;")
    config = replace_once(config, "listen 80;", f"listen 127.0.0.1:{port};")
    path = directory / "nginx.conf"
    path.write_text(config)
    command = [NGINX, "-t", "-p", str(directory), "-c", str(path), "-e", "stderr"]
    return subprocess.run(
        [*command, "-g", f"pid {directory / 'nginx.pid'};"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_nginx_accepts_the_config(project: RenderedProject, tmp_path: Path) -> None:
    result = nginx_t((project.path / "deploy" / "nginx.conf").read_text(), tmp_path)

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_does_report_a_broken_config(project: RenderedProject, tmp_path: Path) -> None:
    config = (project.path / "deploy" / "nginx.conf").read_text()
    broken = config.replace("proxy_buffering off;", "proxy_buffering of;", 1)

    result = nginx_t(broken, tmp_path)

    assert result.returncode != 0
    assert "proxy_buffering" in result.stderr
