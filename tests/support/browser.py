"""Headless Chromium driven through the Chrome DevTools protocol over a pipe (no websocket, no
npm package): for tests of pages the hub serves (`hub dashboard`).

``with Browser(tmp_path) as browser: page = browser.new_page(); page.goto(url)`` then
``page.wait_for(js)``, ``page.evaluate(js)``, ``page.click(css)``, ``page.screenshot(path)``.
`confirm()` dialogs are accepted. Chromium is Debian's (`/usr/bin/chromium`; `python3 dev.py test`
installs it where it can).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Browser", "Page", "chromium_path"]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]


def chromium_path() -> str | None:
    """Debian's chromium, or one on PATH."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    pass


class Browser:
    """One Chromium process; `new_page()` opens a tab."""

    def __init__(self, profile: Path, executable: str | None = None) -> None:
        executable = executable or chromium_path()
        if executable is None:
            raise BrowserError("no chromium: apt-get install chromium")
        profile.mkdir(parents=True, exist_ok=True)
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def pipes_as_3_and_4() -> None:  # where --remote-debugging-pipe reads and writes
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.log = (profile / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            close_fds=False,  # every other descriptor of ours is close-on-exec already
            preexec_fn=pipes_as_3_and_4,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._out = to_chrome_w
        self._in = from_chrome_r
        self._lock = threading.Lock()
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._out, self._in):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.log.close()

    # -- the protocol ---------------------------------------------------------------------------

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._changed:
                    self._changed.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = json.loads(raw)
                if message.get("method") == "Page.javascriptDialogOpening":  # confirm(): say yes
                    self.send(
                        "Page.handleJavaScriptDialog", {"accept": True}, message.get("sessionId"), wait=False
                    )
                with self._changed:
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self._events.append(message)
                    self._changed.notify_all()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        *,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            ident = self._next
            message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
            if session:
                message["sessionId"] = session
            os.write(self._out, json.dumps(message).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + timeout
        with self._changed:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise BrowserError(f"chromium did not answer {method} (log: {self.log.name})")
                self._changed.wait(left)
            reply = self._replies.pop(ident)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def wait_event(self, method: str, session: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self._events:
                    if event.get("method") == method and event.get("sessionId") == session:
                        self._events.remove(event)
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"no {method} within {timeout} s")
                self._changed.wait(left)

    def new_page(self, width: int = 1280, height: int = 1800) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page


class Page:
    """One tab."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session)

    def goto(self, url: str) -> None:
        self.browser._events.clear()
        self.send("Page.navigate", {"url": url})
        self.browser.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        reply = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression}: {reply['exceptionDetails']}")
        return reply.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "") -> Any:
        """Evaluate `expression` until it is truthy (checked every 50 ms); its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(f"timed out waiting for {what or expression}; the page shows:\n{text}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """Click the first match, in one step inside the page (scrolled into view, then its
        ``click()``): the page's live parts are swapped in as they change, and one swapped between
        a mouse press and its release would lose a click made of real mouse events."""
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false;"
            " e.scrollIntoView({block: 'center'}); e.click(); return true; })()"
        )
        if not found:
            raise AssertionError(f"nothing matches {selector}")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
