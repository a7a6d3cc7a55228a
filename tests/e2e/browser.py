"""Headless Chromium (Debian's ``chromium``), driven over the Chrome DevTools Protocol: a page
opened, waited on, clicked, typed into and photographed, and every request it made recorded.

The browser reaches loopback only: any other host fails to resolve and goes to a proxy that
refuses, so a page that renders here needs nothing from the internet.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.sync.client import ClientConnection, connect

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_SECONDS = 20.0
CALL_TIMEOUT_SECONDS = 15.0
WINDOW = (1280, 1000)
# Nothing but loopback (which Chromium never sends through a proxy): names do not resolve, and
# what would leave goes to a proxy on a closed port.
OFFLINE_FLAGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
)
QUIET_FLAGS = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-default-browser-check",
    "--no-first-run",
    "--no-pings",
    "--metrics-recording-only",
    "--mute-audio",
)


class BrowserError(AssertionError):
    pass


def find_chromium() -> str:
    """The browser to drive: $CHROMIUM, else one on PATH. Skips the test when there is none,
    but fails it where REQUIRE_BROWSER=1 (CI), which has `make browser` install one."""
    configured = os.environ.get("CHROMIUM")
    found = configured or next(filter(None, map(shutil.which, BROWSER_NAMES)), None)
    if found:
        return found
    reason = (
        "no Chromium found (chromium, chromium-browser, google-chrome or $CHROMIUM): "
        "`make browser` installs Debian's package where it may (as root with apt-get)"
    )
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Page:
    """One tab: commands in, events recorded."""

    connection: ClientConnection
    requested: list[str] = field(default_factory=list)
    """Every URL the page asked for, in order."""
    blocked: list[str] = field(default_factory=list)
    """The URLs the browser refused to fetch (the page's Content-Security-Policy): never sent."""
    _urls: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    """The status of each answered URL (the last answer when asked more than once)."""
    errors: list[str] = field(default_factory=list)
    """Uncaught script errors and failed loads."""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result, recording the events that come before."""
        call_id = next(self._ids)
        self.connection.send(json.dumps({"id": call_id, "method": method, "params": params}))
        message = self._next(lambda message: message.get("id") == call_id, what=method)
        if "error" in message:
            raise BrowserError(f"{method}: {message['error']}")
        result: dict[str, Any] = message.get("result", {})
        return result

    def _next(self, wanted: Callable[[dict[str, Any]], bool], *, what: str) -> dict[str, Any]:
        """The first message ``wanted`` accepts, recording every event on the way."""
        deadline = time.monotonic() + CALL_TIMEOUT_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"{what} did not come in {CALL_TIMEOUT_SECONDS} s")
            message: dict[str, Any] = json.loads(self.connection.recv(timeout=remaining))
            if "method" in message:
                self._record(message)
            if wanted(message):
                return message

    def _record(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            self._urls[params["requestId"]] = params["request"]["url"]
            self.requested.append(params["request"]["url"])
        elif method == "Network.responseReceived":
            self.statuses[params["response"]["url"]] = params["response"]["status"]
        elif method == "Network.loadingFailed":
            url = self._urls.get(params["requestId"], "?")
            if params.get("blockedReason") == "csp":
                self.blocked.append(url)
            else:
                self.errors.append(f"loading {url} failed: {params.get('errorText')}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 10.0, what: str = "") -> Any:
        """The first truthy value of ``expression``, polled; BrowserError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise BrowserError(
            f"{what or expression} did not happen in {timeout} s; page errors: {self.errors}"
        )

    def open(self, url: str) -> int:
        """Go to ``url``; the status its document was answered with."""
        navigation = self.call("Page.navigate", url=url)
        if "errorText" in navigation:
            raise BrowserError(f"{url} could not be opened: {navigation['errorText']}")
        self._next(lambda message: message.get("method") == "Page.loadEventFired", what=url)
        status = self.statuses.get(url)
        if status is None:
            raise BrowserError(f"{url} was not answered; requests: {self.requested}")
        return status

    def click(self, selector: str) -> None:
        """Click the first element ``selector`` finds, once it is there."""
        found = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.scrollIntoView(); e.click(); return true; })()",
            what=f"an element {selector} to click",
        )
        assert found

    def type_into(self, selector: str, text: str) -> None:
        """Replace the content of the field ``selector`` finds by ``text``, typed as a person
        would (input events), so that the page's own script sees it."""
        self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.focus(); e.select(); return true; })()",
            what=f"a field {selector}",
        )
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _devtools_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """The port Chromium chose, which it writes into the profile once it listens."""
    written = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with status {process.returncode}")
        if written.exists():
            lines = written.read_text().split()
            if lines:
                return int(lines[0])
        time.sleep(0.05)
    raise BrowserError(f"chromium did not listen for DevTools in {START_TIMEOUT_SECONDS} s")


@contextmanager
def chromium_page(executable: str) -> Iterator[Page]:
    """A headless Chromium with one blank tab, offline but for loopback, until the block ends."""
    # Chromium's helper processes may still write to the profile for a moment after the
    # browser has exited: what they leave is not worth failing a test over.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as folder:
        profile = Path(folder)
        command = [
            executable,
            "--headless",
            "--no-sandbox",  # as root (CI) Chromium refuses to start with its sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            *OFFLINE_FLAGS,
            *QUIET_FLAGS,
            "about:blank",
        ]
        log = (profile / "chromium.log").open("wb")
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its helper processes, ended together below
        )
        try:
            port = _devtools_port(profile, process)
            targets = httpx2.get(f"http://127.0.0.1:{port}/json/list", timeout=5.0).json()
            [tab] = [target for target in targets if target["type"] == "page"]
            with connect(tab["webSocketDebuggerUrl"], max_size=None) as connection:
                page = Page(connection)
                for domain in ("Page", "Runtime", "Network"):
                    page.call(f"{domain}.enable")
                yield page
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            log.close()
