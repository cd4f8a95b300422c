"""Shared fixtures: a private Xvfb server for live-desktop tests, and the Tk target app."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.desktops.xvfb import Xvfb, XvfbUnavailable, stop_xvfb  # noqa: F401 - re-exported to tests
from agent.desktops.xvfb import start_xvfb as _start_xvfb

ROOT = Path(__file__).resolve().parent.parent
TK_APP = Path(__file__).resolve().parent / "apps" / "tk_target.py"
XVFB_SIZE = (640, 480)


def start_xvfb(width: int = XVFB_SIZE[0], height: int = XVFB_SIZE[1], timeout: float = 10.0) -> Xvfb:
    """:func:`agent.desktops.xvfb.start_xvfb`, skipping the test where Xvfb is not installed."""
    try:
        return _start_xvfb(width, height, timeout)
    except XvfbUnavailable as e:
        pytest.skip(str(e))


def apps_world(*toolkits: str):
    """Yield an apps-suite :class:`~agent.desktops.apps.AppWorld` (for a module-scoped fixture),
    skipping where Xvfb or one of ``toolkits``' interpreters is missing."""
    from agent.desktops.apps import AppUnavailable, AppWorld
    from agent.desktops.apps import desktop as apps_desktop

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    try:
        for toolkit in toolkits:
            apps_desktop.python_for(toolkit)
    except AppUnavailable as e:
        pytest.skip(str(e))
    w = AppWorld()
    yield w
    w.close()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The project's user cache (encoder probes, dw train's samples, exported ONNX graphs) in a
    folder of this test run, for the tests and every dw they start: no test reads or fills the
    user's own ~/.cache/digital-worker."""
    import os

    old = os.environ.get("DW_CACHE_DIR")
    os.environ["DW_CACHE_DIR"] = str(tmp_path_factory.mktemp("dw-cache"))
    yield Path(os.environ["DW_CACHE_DIR"])
    if old is None:
        os.environ.pop("DW_CACHE_DIR", None)
    else:
        os.environ["DW_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def xvfb_server():
    server = start_xvfb()
    yield server
    stop_xvfb(server.proc)


@pytest.fixture
def xvfb(xvfb_server, monkeypatch):
    """The session's Xvfb, with DISPLAY set for this test; the pointer parked mid-screen."""
    if not xvfb_server.alive():
        pytest.fail("the shared Xvfb died")
    monkeypatch.setenv("DISPLAY", xvfb_server.display)
    if shutil.which("xdotool"):
        subprocess.run(["xdotool", "mousemove", str(xvfb_server.width // 2), str(xvfb_server.height // 2)],
                       env=xvfb_server.env, check=False)
    return xvfb_server


def pointer(server: Xvfb) -> tuple[int, int]:
    out = subprocess.run(["xdotool", "getmouselocation", "--shell"], env=server.env, capture_output=True,
                         text=True, check=True).stdout
    vals = dict(line.split("=", 1) for line in out.split() if "=" in line)
    return int(vals["X"]), int(vals["Y"])


class TkApp:
    def __init__(self, server: Xvfb, log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(TK_APP), str(log), f"{server.width}x{server.height}"],
                                     env=server.env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ready = [e for e in self.events() if e["ev"] == "ready"]
            if ready:
                self.geometry = ready[0]
                return
            if self.proc.poll() is not None:
                raise RuntimeError("the Tk app exited")
            time.sleep(0.05)
        raise RuntimeError("the Tk app did not report ready")

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if kind is None or e["ev"] == kind:
                out.append(e)
        return out

    def wait_for(self, pred, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.events()):
                return True
            time.sleep(0.05)
        return False

    def centre(self, widget: str) -> tuple[int, int]:
        x, y, w, h = self.geometry[widget]
        return x + w // 2, y + h // 2

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def tk_app(xvfb, tmp_path):
    app = TkApp(xvfb, tmp_path / "tk_events.jsonl")
    yield app
    app.close()
