"""Headless Chromium driven over the Chrome DevTools Protocol (one websocket, websocket-client), offline.

Three layers keep every request on the machine and record any attempt to leave it:
- the page's requests pass through the DevTools `Fetch` domain: loopback, `data:` and `blob:` go on, any
  other URL is failed on the spot and recorded;
- everything else the browser might send (its own background traffic) goes to `RecordingProxy`, a proxy on
  127.0.0.1 that answers 403 to every request and records it;
- `--host-resolver-rules` resolves no name but localhost, so nothing could connect even past both.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
LOCAL_SCHEMES = {"data", "blob", "about"}
# Chromium's own background services (extension updates, account checks) still call these at start-up,
# whatever the flags; the proxy refuses them. Any other host reaching the proxy came from a page.
BROWSER_SERVICE_HOSTS = ("google.com", "googleapis.com", "gstatic.com", "gvt1.com")


def find_chromium() -> str | None:
    """The Chromium to use: $TFS_CHROMIUM if set, else the first of CANDIDATES on PATH."""
    chosen = os.environ.get("TFS_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).exists() else shutil.which(chosen)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or (parts.hostname or "") in LOCAL_HOSTS


def proxy_host(first_line: str) -> str:
    """The host of a proxied request line: `CONNECT host:443 HTTP/1.1` or `GET http://host/path HTTP/1.1`."""
    parts = first_line.split()
    if len(parts) < 2:
        return ""
    target = parts[1]
    return (urlsplit(target).hostname if "://" in target else target.rsplit(":", 1)[0]) or ""


def from_browser_services(first_line: str) -> bool:
    host = proxy_host(first_line)
    return any(host == h or host.endswith("." + h) for h in BROWSER_SERVICE_HOSTS)


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that refuses every request (403) and records its first line."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(5)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                    self.seen.append(first)
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._sock.close()


@dataclass
class PageLog:
    """What one page did: every request it attempted and every error it reported."""

    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loaded: bool = False

    @property
    def external(self) -> list[str]:
        return sorted({u for u in self.requests + self.blocked if not is_local(u)})


class CDPError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium; `open(url)` gives a `Page` in a fresh tab."""

    def __init__(self, executable: str, proxy_port: int, width: int = 1280, height: int = 1400) -> None:
        import websocket

        self.profile = tempfile.mkdtemp(prefix="tfs-chromium-")
        args = [
            executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            "--disable-extensions", "--disable-default-apps", "--disable-domain-reliability",
            "--disable-client-side-phishing-detection", "--no-default-browser-check", "--metrics-recording-only",
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
            "--hide-scrollbars", "--mute-audio", f"--window-size={width},{height}",
            f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
            f"--proxy-server=http://127.0.0.1:{proxy_port}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            "about:blank",
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
                self.close()
                raise CDPError(f"Chromium did not start its DevTools endpoint: {err}")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        # suppress_origin: Chromium refuses DevTools websockets that send an Origin it was not told to allow.
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", suppress_origin=True, timeout=60,
                                              enable_multithread=False)
        self._next_id = 0
        self.events: list[dict] = []
        self.logs: dict[str, PageLog] = {}

    # -- the protocol ---------------------------------------------------------------------------------------
    def _post(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        return self._next_id

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        wanted = self._post(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline - time.monotonic())
            if message is None:
                raise CDPError(f"{method}: no answer within {timeout} s")
            if message.get("id") == wanted:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})

    def pump(self, seconds: float) -> None:
        """Handle events for `seconds` (requests to let through or block, errors to record)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())

    def _receive(self, timeout: float) -> dict | None:
        import websocket

        self.ws.settimeout(max(timeout, 0.01))
        try:
            message = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        if "method" in message:
            self._event(message)
        return message

    def _event(self, message: dict) -> None:
        method, params = message["method"], message.get("params", {})
        log = self.logs.get(message.get("sessionId", ""))
        if log is None:
            return
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if is_local(url):
                self._post("Fetch.continueRequest", {"requestId": params["requestId"]}, message["sessionId"])
            else:
                log.blocked.append(url)
                self._post("Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                           message["sessionId"])
        elif method == "Network.requestWillBeSent":
            log.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", a.get("type")))) for a in params.get("args", []))
            log.errors.append(f"console.{params['type']}: {text[:500]}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            log.errors.append(f"uncaught exception: {text[:500]}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            log.errors.append(f"{entry.get('source')}: {entry.get('text', '')[:300]} {entry.get('url', '')}")
        elif method == "Page.loadEventFired":
            log.loaded = True

    # -- pages ----------------------------------------------------------------------------------------------
    def open(self, url: str, timeout: float = 60) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        log = self.logs[session] = PageLog()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        deadline = time.monotonic() + timeout
        while not log.loaded and time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        if not log.loaded:
            raise CDPError(f"{url} did not finish loading within {timeout} s")
        return Page(self, session, target, log)

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:  # the browser may already be gone; closing must not mask the test's result
                pass
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@dataclass
class Page:
    browser: Chromium
    session: str
    target: str
    log: PageLog

    def evaluate(self, expression: str, timeout: float = 60):
        result = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, self.session, timeout)
        if "exceptionDetails" in result:
            raise CDPError(f"evaluate: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.25) -> bool:
        """Poll a JavaScript expression until it is truthy (handling events meanwhile); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            self.browser.pump(interval)
        return False

    def screenshot(self, clip: dict, path: Path, beyond_viewport: bool = False) -> None:
        """A PNG of the page region `clip` (page coordinates: x, y, width, height).

        Scroll the region into view first: capturing beyond the viewport re-lays out a tall page (seconds)."""
        data = self.browser.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": beyond_viewport,
            "clip": {"x": clip["x"], "y": clip["y"], "width": clip["width"], "height": clip["height"], "scale": 1},
        }, self.session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})
