"""Headless Chromium, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): opens a
page from disk, says whether every image loaded and what the console reported, and takes a
full-page screenshot. Standard library only: the protocol's messages are JSON separated by NUL bytes
on file descriptors 3 (to the browser) and 4 (from it); no port is opened.

Debian's package is ``chromium`` (``apt-get install -y chromium``); :data:`CHROMIUM` is None without it.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

# Each image: loaded or not, its natural size, and where it lies on the page (CSS pixels).
_IMAGES = ("JSON.stringify(Array.from(document.images).map(i => { const r = i.getBoundingClientRect(); "
           "return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, "
           "x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; }))")


@dataclass
class PageCheck:
    """What the browser saw of a page."""

    images: list[dict]
    errors: list[str]
    screenshot: bytes
    title: str
    text: str
    events: list[dict] = field(repr=False, default_factory=list)


class Chromium:
    """One headless browser process; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 900, timeout: float = 120.0):
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
        self.width, self.height, self.timeout = width, height, timeout
        self.profile = tempfile.mkdtemp(prefix="gtacity-chromium-")
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()
        flags = ["--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                 "--no-default-browser-check", "--hide-scrollbars", "--disable-extensions",
                 f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # bash puts the pipe's ends on the descriptors the protocol expects (3 and 4); dash takes none above 9.
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}',
                                      CHROMIUM, *flags, "about:blank"],
                                     pass_fds=(to_browser, from_browser), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out)
        os.close(self._in)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile go to :attr:`events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """The first event ``method`` (already received or to come)."""
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._in], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"chromium said nothing for {self.timeout:.0f} s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def check(self, page: str | Path) -> PageCheck:
        """Open ``page`` from disk (file://), wait for its load event, look at it and screenshot all of it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session)
        self.events.clear()
        self.send("Page.navigate", {"url": Path(page).resolve().as_uri()}, session)
        self.wait_for("Page.loadEventFired")

        def evaluate(expression: str):
            return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                             session)["result"]["value"]

        images = json.loads(evaluate(_IMAGES))
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1}}, session)
        return PageCheck(images, _errors(self.events), base64.b64decode(shot["data"]), evaluate("document.title"),
                         evaluate("document.body.innerText"), list(self.events))


def _errors(events: list[dict]) -> list[str]:
    """The console's errors: console.error calls, uncaught exceptions, and the browser's own error
    entries (failed loads, Content-Security-Policy refusals)."""
    found = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            found.append(p.get("exceptionDetails", {}).get("text", "exception"))
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            found.append(p["entry"].get("text", ""))
    return found
