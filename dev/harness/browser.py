"""Headless Chromium driven over the DevTools protocol, for tests against the real frontend.

Only aiohttp (already one of ComfyUI's own requirements) is used to speak the protocol, so the browser
tests need nothing beyond Debian's `chromium` package.
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from .server import free_port

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
                  "--hide-scrollbars", "--mute-audio"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One Chromium with one page; every call blocks until the protocol answers."""

    def __init__(self, width: int = 1600, height: int = 1000):
        binary = chromium_binary()
        if binary is None:
            raise FileNotFoundError("no chromium binary on PATH (Debian package: chromium)")
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="mrti-chromium-")
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.loop = asyncio.new_event_loop()
        self._next_id = 0
        self.console: list[str] = []
        self.loop.run_until_complete(self._connect())
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def _page_ws_url(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as resp:
                    pages = [t for t in json.loads(resp.read()) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError("Chromium did not open its DevTools port")

    async def _connect(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self._page_ws_url(), max_msg_size=0)
        await self._send("Page.enable")
        await self._send("Runtime.enable")

    async def _send(self, method: str, **params):
        self._next_id += 1
        message_id = self._next_id
        await self.ws.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(message["params"].get("exceptionDetails", {}))[:500])
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, **params):
        return self.loop.run_until_complete(self._send(method, **params))

    def evaluate(self, expression: str, timeout: float = 60):
        """The value of a JavaScript expression (promises awaited); raises on a JavaScript exception."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                           timeout=int(timeout * 1000))
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {json.dumps(result['exceptionDetails'])[:2000]}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for: {expression}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def screenshot_bytes(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def screenshot(self, path: Path) -> Path:
        Path(path).write_bytes(self.screenshot_bytes())
        return Path(path)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.session.close())
        finally:
            self.loop.close()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_comfyui(browser: Browser, url: str, timeout: float = 90) -> None:
    """Open the frontend and wait until its graph is ready."""
    browser.open(url)
    ready = "!!(window.app && window.app.graph && window.app.canvas)"
    browser.wait_for(ready, timeout=timeout)
    if not browser.evaluate("localStorage.getItem('vueNodesBannerDismissed') === 'true'"):
        browser.evaluate("localStorage.setItem('vueNodesBannerDismissed', 'true')")  # a banner over the canvas
        browser.open(url)
        browser.wait_for(ready, timeout=timeout)
