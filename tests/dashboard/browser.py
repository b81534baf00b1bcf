"""Headless Chromium driven over the DevTools protocol, with nothing but the standard
library: the browser talks on a pipe (``--remote-debugging-pipe``: messages are JSON
separated by NUL bytes on file descriptors 3 and 4), so there is no port to find and no
WebSocket client to bring.

    with Browser(tmp_path) as browser:
        page = browser.open("http://127.0.0.1:24442/ui/")
        page.wait_for("document.querySelector('.node') !== null")
        page.screenshot(tmp_path / "page.png")

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
# Per the machine notes: no sandbox as root, no GPU, and no traffic to anything but the
# page (the background services would knock on closed doors at every start).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--metrics-recording-only",
    "--mute-audio",
    "--hide-scrollbars",
    "--window-size=1400,900",
    "--remote-debugging-pipe",
)


def executable() -> str | None:
    for name in CHROMIUM:
        if found := shutil.which(name):
            return found
    return None


class BrowserError(AssertionError):
    pass


class Browser:
    """One Chromium process with a fresh profile under ``workdir``; stopped (with every
    process it started) on leaving the ``with`` block."""

    def __init__(self, workdir: Path, timeout: float = 60) -> None:
        self.workdir, self.timeout = workdir, timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        self.log = workdir / "chromium.log"

    def __enter__(self) -> Browser:
        path = executable()
        if path is None:
            raise BrowserError("no chromium on PATH: `make browser` installs Debian's")
        profile = self.workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        to_browser_read, self._write_fd = os.pipe()
        self._read_fd, from_browser_write = os.pipe()
        command = [path, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        # Chromium reads commands on fd 3 and writes replies on fd 4 (bash: dash takes no
        # descriptor above 9).
        shell = f'exec "$@" 3<&{to_browser_read} 4>&{from_browser_write}'
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["/bin/bash", "-c", shell, "chromium", *command],
                pass_fds=(to_browser_read, from_browser_write),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: all of it is stopped
            )
        os.close(to_browser_read)
        os.close(from_browser_write)
        try:
            self.send("Browser.getVersion")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        with contextlib.suppress(ProcessLookupError):  # what is left: renderers, zygotes
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        for fd in (self._write_fd, self._read_fd):
            os.close(fd)

    # -- the protocol ------------------------------------------------------------------

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Call ``method`` and return its result; an error reply raises BrowserError."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result") or {}
                return result
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read_fd], [], [], left)[0]:
                raise BrowserError(f"chromium did not answer {what} in {self.timeout:g} s")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise BrowserError(f"chromium exited; its log:\n{tail}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def open(self, url: str, before_load: str | None = None) -> Page:
        """A new tab showing ``url``; ``before_load`` is a script run in the page before
        any of its own."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self, session, target)
        page.send("Page.enable")
        page.send("Runtime.enable")
        if before_load is not None:
            page.send("Page.addScriptToEvaluateOnNewDocument", source=before_load)
        page.goto(url)
        return page


class Page:
    """A tab; ``with browser.open(url) as page:`` closes it (and its event streams)."""

    def __init__(self, browser: Browser, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.browser.send("Target.closeTarget", targetId=self.target)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, self.session, **params)

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        reply = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} raised: {text}")
        return (reply.get("result") or {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30, what: str | None = None) -> Any:
        """Poll ``expression`` until it is truthy; return its value. A hang guard, not a
        timing check: ``timeout`` is generous."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"waited {timeout:g} s for {what or expression}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element ``selector`` finds, once it is
        where a user would click it: shown, still over two animation frames, and on top
        at that point (the checks Playwright makes before it clicks)."""
        box = self.wait_for(
            f"""(async () => {{
                const box = () => {{
                    const e = document.querySelector({json.dumps(selector)});
                    if (!e) return null;
                    const r = e.getBoundingClientRect();
                    return r.width && r.height ? [e, r.x + r.width / 2, r.y + r.height / 2] : null;
                }};
                const frame = () => new Promise((done) => requestAnimationFrame(done));
                const before = box();
                await frame();
                await frame();
                const after = box();
                if (!before || !after || before.join() !== after.join()) return null;
                const [e, x, y] = after;
                return e.contains(document.elementFromPoint(x, y)) ? {{x, y}} : null;
            }})()""",
            what=f"{selector} to be shown, still and on top",
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def text(self, selector: str) -> str:
        return str(
            self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''")
        )

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
