"""The documentation site: generated pages are current, it builds strictly, a browser draws it.

The browser check runs Debian's `chromium` headless (`scripts/test` installs it) against the
built site served on a local port, through the DevTools protocol over a pipe: Material for
MkDocs draws each Mermaid diagram into a closed shadow root, which `--dump-dom` cannot see
and the protocol's `includeShadowDOM` can. Mermaid itself is served with the site
(`tools/mermaid.py`, `tools/mkdocs_hooks.py`): the machine that runs this has no CDN.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tools import settings_doc
from tools.matrix import ROOT
from tools.mermaid import mermaid_js

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.xdist_group("docs")

DOCS = ROOT / "docs"


def test_the_configuration_reference_has_not_drifted_from_the_settings_class() -> None:
    settings_doc.check_against_copier()
    assert settings_doc.CONFIGURATION_DOC.read_text() == settings_doc.render(), (
        "run `uv run python -m tools.settings_doc` and commit the result"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `mkdocs build --strict` builds it, with Mermaid served from it."""
    destination = tmp_path_factory.mktemp("site")
    env = {
        k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("PYTEST_")
    }
    env.update(MERMAID_JS=str(mermaid_js()), NO_MKDOCS_2_WARNING="1")
    build = subprocess.run(
        ["uv", "run", "--group", "docs", "mkdocs", "build", "--strict", "-d", str(destination)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return destination


def _nav_pages(nav: list[Any]) -> Iterator[str]:
    for entry in nav:
        value = entry if isinstance(entry, str) else next(iter(entry.values()))
        if isinstance(value, list):
            yield from _nav_pages(value)
        else:
            yield value


def test_every_page_is_in_the_nav_and_built(site: Path) -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # noqa: S506
    in_nav = set(_nav_pages(config["nav"]))

    assert in_nav == {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    for page in in_nav:
        built = "index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html"
        assert (site / built).is_file(), page
    assert (site / "javascripts" / "mermaid.min.js").is_file()


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_architecture_page_draws_its_mermaid_diagrams_in_a_browser(served: str) -> None:
    source = (DOCS / "architecture.md").read_text()
    diagrams = source.count("```mermaid")
    assert diagrams >= 4

    html = rendered_html(f"{served}/architecture/", ready=f"{diagrams} diagrams drawn")

    assert re.search(r"<h1[^>]*>Architecture", html)
    drawn = re.findall(
        r'<div class="mermaid"><template shadowrootmode="closed"><svg[^>]*aria-roledescription',
        html,
    )
    assert len(drawn) == diagrams, "every diagram is an SVG drawn by Mermaid"
    assert "Syntax error" not in html
    assert '<pre class="mermaid"' not in html


# Drawn: Material replaces each <pre class="mermaid"> by a <div> whose shadow root holds the
# SVG, once Mermaid has drawn it.
_DRAWN = (
    "document.readyState === 'complete' && document.querySelector('div.mermaid') !== null"
    " && document.querySelector('pre.mermaid') === null"
)


def rendered_html(url: str, *, ready: str, timeout: float = 60) -> str:
    """The page's HTML with its shadow roots, once its diagrams are drawn, from Chromium."""
    chromium = shutil.which("chromium")
    assert chromium, "the browser check needs Debian's chromium (scripts/test installs it)"
    profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
    with profile, DevTools(chromium, profile.name) as browser:
        target = browser.call("Target.createTarget", url=url)["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)
        browser.session = session["sessionId"]
        expression = f"location.href === {json.dumps(url)} && {_DRAWN}"
        deadline = time.monotonic() + timeout
        while not browser.evaluate(expression):
            assert time.monotonic() < deadline, f"{url}: not {ready} within {timeout} s"
            time.sleep(0.2)
        root = browser.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
        return browser.call("DOM.getOuterHTML", nodeId=root, includeShadowDOM=True)["outerHTML"]


class DevTools:
    """Chromium headless, driven through the DevTools protocol on fds 3 and 4
    (`--remote-debugging-pipe`: NUL-terminated JSON messages, no port, no websocket)."""

    def __init__(self, chromium: str, profile: str) -> None:
        self.args = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.session: str | None = None
        self._ids = 0
        self._buffer = b""

    def __enter__(self) -> DevTools:
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def onto_fds_3_and_4() -> None:
            # Duplicated first, so that neither is closed by the other's dup2.
            commands, replies = os.dup(commands_read), os.dup(replies_write)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        self.process = subprocess.Popen(
            self.args,
            pass_fds=(3, 4),
            preexec_fn=onto_fds_3_and_4,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the renderers go with it
        )
        os.close(commands_read)
        os.close(replies_write)
        return self

    def __exit__(self, *exc: object) -> None:
        self.session = None
        with contextlib.suppress(AssertionError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._replies, 1 << 16)
                assert chunk, f"chromium exited ({self.process.poll()}) during {method}"
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._ids:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")
