"""A real browser and a real Airflow api-server for the UI tests.

Debian's ``chromium`` is driven over the DevTools protocol with websocket-client (already
pinned as Airflow's dependency): no browser driver package to add. ``airflow_api_server``
runs the venv's ``airflow api-server`` against the tests' own AIRFLOW_HOME and SQLite
database, the one ``dag.test()`` writes (Airflow opens SQLite in WAL mode, so the test
process and the server read and write it side by side).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import TEST_BASE_PORT

# The api-server takes a port from this block (offset 900 is no test cluster's).
API_SERVER_PORTS = range(TEST_BASE_PORT + 900, TEST_BASE_PORT + 1000)


class DevTools:
    """The few DevTools calls the tests need, over one websocket (flattened target sessions)."""

    def __init__(self, url: str) -> None:
        import websocket

        self.socket = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.ids = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.ids += 1
        message: dict[str, Any] = {"id": self.ids, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self.socket.recv()))


@contextmanager
def chromium(profile: Path) -> Iterator[DevTools]:
    """Headless Debian chromium with its own profile folder, stopped afterwards."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is needed: apt-get install chromium"
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # tests run as root in a container
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Chromium prints where DevTools listens once it does.
        assert process.stderr is not None
        line = ""
        while "DevTools listening on" not in line:
            line = process.stderr.readline()
            assert line or process.poll() is None, "chromium exited before DevTools listened"
        devtools = DevTools(line.split("DevTools listening on", 1)[1].strip())
        yield devtools
        devtools.socket.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


# Finds the innermost visible element whose own text is ``text`` (buttons, links, tabs...).
_FIND_BY_TEXT = """((text, role, within) => {
    const visible = (el) => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
    const selector = role ? `[role="${role}"], ${role}` : 'button, a, [role], label, span, div, p';
    const scope = [...document.querySelectorAll(within)].filter(visible).pop();
    const all = [...(scope ? scope.querySelectorAll(selector) : [])]
        .filter(el => visible(el) && (el.innerText || '').trim() === text);
    return all.find(el => !all.some(other => other !== el && el.contains(other))) || null;
})"""


class Page:
    """One browser tab: navigate, wait on a DOM condition, click, type, read, screenshot."""

    def __init__(self, devtools: DevTools, *, width: int = 1400, height: int = 1800) -> None:
        self.devtools = devtools
        target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.devtools.call(method, self.session, **params)

    def goto(self, url: str) -> None:
        self.devtools.events.clear()  # an earlier page's load event must not count as this one's
        self.call("Page.navigate", url=url)
        self.devtools.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_until(self, expression: str, what: str, timeout: float = 30.0) -> Any:
        """Poll a JavaScript condition until it is truthy and return its value; fail with
        ``what`` and the page's text at the deadline. A page being replaced (navigation)
        counts as not yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                page = self.text()[:3000]
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; page:\n{page}")
            time.sleep(0.2)  # the interval between two looks at the DOM

    def wait_for_text(self, text: str, timeout: float = 30.0) -> None:
        self.wait_until(f"document.body.innerText.includes({json.dumps(text)})", repr(text), timeout)

    def click(
        self, text: str, role: str | None = None, *, within: str = "body", timeout: float = 30.0
    ) -> None:
        """Click, with real mouse events at its centre, the element whose text is ``text``
        (of ``role`` — an ARIA role or a tag name — when given) inside the last visible
        element matching the CSS selector ``within`` (a dialog, say)."""
        find = f"{_FIND_BY_TEXT}({json.dumps(text)}, {json.dumps(role)}, {json.dumps(within)})"
        self.wait_until(f"!!{find}", f"an element {text!r}" + (f" ({role})" if role else ""), timeout)
        box = self.evaluate(
            f"(() => {{ const el = {find}; el.scrollIntoView({{block: 'center'}});"
            " const r = el.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1
            )

    def type_into(self, selector: str, text: str) -> None:
        """Replace the value of the input ``selector`` as a person typing would."""
        self.wait_until(f"!!document.querySelector({json.dumps(selector)})", selector)
        found = f"document.querySelector({json.dumps(selector)})"
        self.evaluate(f"(() => {{ const el = {found}; el.focus(); el.select(); }})()")
        self.call("Input.insertText", text=text)

    def press(self, key: str, code: int) -> None:
        """One key stroke (``key`` as DOM names it, ``code`` its Windows virtual key code)."""
        for kind in ("rawKeyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode=code)

    def text(self, selector: str = "body") -> str:
        value = self.evaluate(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")
        return str(value)

    def screenshot(self, path: Path) -> Path:
        """The whole page as PNG, kept for a person to look at (the path is printed)."""
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"screenshot: {path}")
        return path


@dataclass(frozen=True)
class ApiServer:
    url: str
    user: str
    password: str
    log: Path

    def token(self) -> str:
        """A JWT for the REST API, from the simple auth manager's ``POST /auth/token``."""
        body = json.dumps({"username": self.user, "password": self.password}).encode()
        request = urllib.request.Request(
            f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.loads(response.read())["access_token"])

    def get(self, path: str, token: str) -> Any:
        """``GET`` a REST API path (``/api/v2/...``) as JSON."""
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def _free_port() -> int:
    for port in API_SERVER_PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {API_SERVER_PORTS}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def airflow_api_server(
    folder: Path,
    *,
    user: str = "oncall-engineer",
    extra_env: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port, on this process's AIRFLOW_HOME and database,
    with the simple auth manager and one admin user (``user``) whose password is set here;
    stopped (its whole process group) afterwards. Its log is ``folder/api-server.log``."""
    folder.mkdir(parents=True, exist_ok=True)
    password = base64.urlsafe_b64encode(os.urandom(12)).decode()
    passwords = folder / "simple-auth-passwords.json"
    passwords.write_text(json.dumps({user: password}))
    port = _free_port()
    env = dict(os.environ)
    env.update(
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",  # a named user logs in: the "who" is real
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{user}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra_env or {})
    log = folder / "api-server.log"
    airflow = Path(sys.executable).parent / "airflow"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(airflow), "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: uvicorn's worker stops with it
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            tail = log.read_text()[-3000:]
            assert process.poll() is None, f"airflow api-server exited {process.returncode}:\n{tail}"
            assert time.monotonic() < deadline, f"api-server not healthy after {timeout:.0f} s:\n{tail}"
            time.sleep(0.5)  # the interval between two health probes
        yield ApiServer(url=url, user=user, password=password, log=log)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def log_in(page: Page, server: ApiServer) -> None:
    """Sign in through the simple auth manager's login page, as a person does."""
    page.goto(f"{server.url}/auth/login")
    page.type_into("input[name='username']", server.user)
    page.type_into("input[name='password']", server.password)
    page.click("Sign in", "button")
    page.wait_until("!location.pathname.startsWith('/auth/')", "the UI after signing in")
