"""Real Tk and GTK apps on a private Xvfb, behind the :class:`agent.desktops.Desktop` protocol.

:class:`AppWorld` owns the X server (one Xvfb the suite starts itself; no window manager: app
windows sit at the origin, and X's default focus follows the pointer), a D-Bus session bus for
AT-SPI when a task needs it, and the interpreters that run the apps. :class:`AppDesktop` is one
episode: it starts the task's app as a subprocess, captures the app's window with mss and drives it
through the live executor (pyautogui) — the same path as ``dw run``
(:class:`agent.desktops.live.LiveDesktop`). Success and the expert's targets come from the app:
the task apps' own report over a pipe, or the accessibility tree over AT-SPI for
``gtk3-widget-factory``.

Interpreters: Tk apps run with this Python when it has ``tkinter`` (else ``/usr/bin/python3``);
GTK apps and the AT-SPI reader with a Python that has PyGObject — Debian's ``python3-gi`` is
system-wide, so in a virtualenv that is ``/usr/bin/python3``: PyGObject has no wheels to put in
the venv, so the apps and the reader run as subprocesses of the system Python.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agent.desktops import DesktopError
from agent.desktops.apps.tasks import TASKS, AppTask, factory_state
from capture import Frame
from policies.actions import Action, Done, Move, Wait

HERE = Path(__file__).resolve().parent
SCREEN = (1440, 900)  # fits gtk3-widget-factory (about 1366 x 760 at its natural size)
APP_SIZE = (640, 480)  # the task apps' window, at the origin
TAIL_S = 1.5  # after success the app keeps running (and being captured) this long unless `done` ends it
DONE_AFTER_S = 0.3  # the expert looks at the finished screen this long, then says done
SETTLE_S = 0.12  # after each action: let the app handle the input and repaint before the next capture
START_TIMEOUT = 20.0
SYSTEM_PYTHON = "/usr/bin/python3"

# What each toolkit needs, and the Debian packages that bring it.
NEEDS = {
    "tk": ("import tkinter", "python3-tk"),
    "gtk": ("import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk", "python3-gi gir1.2-gtk-3.0"),
    "atspi": ("import gi; gi.require_version('Atspi', '2.0'); from gi.repository import Atspi",
              "python3-gi gir1.2-atspi-2.0"),
}


class AppUnavailable(DesktopError):
    """A program, toolkit or service the apps suite needs is missing (the message names the package)."""


_PYTHONS: dict[str, str] = {}


def python_for(need: str) -> str:
    """The interpreter that can run apps needing ``need`` ("tk", "gtk", "atspi"), or AppUnavailable."""
    if need in _PYTHONS:
        return _PYTHONS[need]
    code, pkg = NEEDS[need]
    for exe in dict.fromkeys((sys.executable, SYSTEM_PYTHON)):
        if exe and os.path.exists(exe):
            r = subprocess.run([exe, "-c", code], capture_output=True, env={**os.environ, "DISPLAY": ""})
            if r.returncode == 0:
                _PYTHONS[need] = exe
                return exe
    what = {"tk": "Tk for Python (tkinter)", "gtk": "GTK 3 for Python (PyGObject)",
            "atspi": "the AT-SPI client library"}[need]
    raise AppUnavailable(f"{what} is not installed: apt-get install {pkg}")


def check_task_available(task: AppTask) -> None:
    """AppUnavailable (naming the Debian package) when ``task``'s app cannot run here."""
    if task.app == "tk-task":
        python_for("tk")
    elif task.app == "gtk-task":
        python_for("gtk")
    elif task.app == "gtk3-widget-factory":
        if shutil.which("gtk3-widget-factory") is None:
            raise AppUnavailable("gtk3-widget-factory is not installed: apt-get install gtk-3-examples")
        if shutil.which("dbus-daemon") is None:
            raise AppUnavailable("dbus-daemon is not installed (AT-SPI needs a session bus): apt-get install dbus")
        if not any(os.path.exists(p) for p in ("/usr/libexec/at-spi-bus-launcher",
                                               "/usr/lib/at-spi2-core/at-spi-bus-launcher")):
            raise AppUnavailable("the AT-SPI bus launcher is not installed: apt-get install at-spi2-core")
        python_for("atspi")


def _point_input_at(display: str) -> None:
    """pyautogui opens its X connection once, at import: point it at ``display`` if it was imported
    for another one (a process that runs the suite after other live work)."""
    mod = sys.modules.get("pyautogui._pyautogui_x11")
    if mod is not None and getattr(mod, "_display", None) is not None:
        if isinstance(mod._display, _LazyDisplay) or mod._display.get_display_name() != display:
            from Xlib.display import Display

            mod._display = Display(display)


class _LazyDisplay:
    """Stands in for pyautogui's X connection once our Xvfb is gone: the next input call connects to
    whatever ``DISPLAY`` is then (so live work after the suite, in the same process, still works)."""

    def __getattr__(self, name: str) -> Any:
        from Xlib.display import Display

        mod = sys.modules["pyautogui._pyautogui_x11"]
        mod._display = Display(os.environ.get("DISPLAY", ""))
        return getattr(mod._display, name)


def _release_input_from(display: str) -> None:
    mod = sys.modules.get("pyautogui._pyautogui_x11")
    d = getattr(mod, "_display", None) if mod is not None else None
    if d is not None and not isinstance(d, _LazyDisplay) and d.get_display_name() == display:
        try:
            d.close()
        except Exception:
            pass
        mod._display = _LazyDisplay()


class AppWorld:
    """The X server, session bus and interpreters shared by a run's episodes.

    ``display``: use this X display instead of starting an Xvfb. ``bus``: use this D-Bus session bus
    address for AT-SPI instead of starting one (default: ``DW_APPS_BUS`` from the environment, else a
    private ``dbus-daemon``). Sets ``DISPLAY`` in this process while open (mss and pyautogui read it)."""

    def __init__(self, display: str | None = None, size: tuple[int, int] = SCREEN, bus: str | None = None):
        from agent.desktops.xvfb import XvfbUnavailable, start_xvfb

        self.xvfb = None
        self._bus_proc: subprocess.Popen | None = None
        self._bus = bus or os.environ.get("DW_APPS_BUS") or None
        self._old_display = os.environ.get("DISPLAY")
        if display is None:
            try:
                self.xvfb = start_xvfb(*size)
            except XvfbUnavailable as e:
                raise AppUnavailable(str(e)) from None
            except RuntimeError as e:
                raise DesktopError(str(e)) from None
            display = self.xvfb.display
        self.display = display
        os.environ["DISPLAY"] = display
        _point_input_at(display)

    @property
    def bus(self) -> str:
        """The D-Bus session bus address for AT-SPI (started on first use)."""
        if self._bus is None:
            proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            line = proc.stdout.readline().strip()
            if not line:
                proc.kill()
                raise AppUnavailable("dbus-daemon did not start a session bus (apt-get install dbus)")
            self._bus_proc, self._bus = proc, line
        return self._bus

    def env(self, atspi: bool = False) -> dict:
        env = {**os.environ, "DISPLAY": self.display, "NO_AT_BRIDGE": "0" if atspi else "1",
               "GTK_THEME": "Adwaita", "GDK_SCALE": "1", "GDK_BACKEND": "x11"}
        if atspi:
            env["DBUS_SESSION_BUS_ADDRESS"] = self.bus
        else:
            env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        return env

    def close(self) -> None:
        if self._bus_proc is not None:
            self._bus_proc.terminate()
            try:
                self._bus_proc.wait(5)
            except subprocess.TimeoutExpired:
                self._bus_proc.kill()
            self._bus_proc = None
        if self.xvfb is not None:
            _release_input_from(self.display)
            self.xvfb.stop()
            self.xvfb = None
        if self._old_display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = self._old_display

    def __enter__(self) -> AppWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Pipe:
    """A subprocess spoken to one line at a time (JSON replies), with a timeout on each reply."""

    def __init__(self, argv: list[str], env: dict, what: str):
        self.what = what
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, bufsize=1)
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def reply(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise DesktopError(f"{self.what} did not answer within {timeout:g} s") from None
        if line is None:
            err = (self.proc.stderr.read() or "").strip().splitlines()
            raise DesktopError(f"{self.what} exited" + (f": {err[-1]}" if err else ""))
        return json.loads(line)

    def ask(self, cmd: str, timeout: float = 5.0) -> dict:
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return self.reply(0.5)  # it exited: say why
        return self.reply(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(2)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(3)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


class _Oracle:
    """The scripted expert for the current episode (reads the app's state; for demos only)."""

    def __init__(self, desk: AppDesktop):
        self.desk = desk

    def expert_actions(self) -> list[Action]:
        d = self.desk
        if d.finished or d._success is False:
            return []
        if d._success:
            left = round(DONE_AFTER_S - (d.now() - d._success_t), 3)
            return [Done()] if left <= 0 else [Wait(left)]
        return d.task.expert(d.state, d.goal, d.point) or [Wait(0.1)]

    def expert_target(self) -> str | None:
        d = self.desk
        if d.finished or d._success is not None:
            return None
        return d.task.target_word(d.state, d.goal)


class AppDesktop:
    """One episode of an apps-suite task: the app on ``world``'s display, captured and driven live.

    ``live_kw`` go to :class:`agent.desktops.live.LiveDesktop` (``stop_hotkey`` is off by default:
    a private Xvfb has no keyboard to press it on)."""

    kind = "apps"
    realtime = True

    def __init__(self, task: str | AppTask, seed: int, world: AppWorld, *, live_kw: dict | None = None,
                 settle: float = SETTLE_S):
        from agent.desktops.live import LiveDesktop

        self.task = TASKS[task] if isinstance(task, str) else task
        check_task_available(self.task)
        os.environ["DISPLAY"] = world.display  # mss and pyautogui: this world's display, whatever ran before
        _point_input_at(world.display)
        self.seed = int(seed)
        self.world = world
        self.settle = float(settle)
        ep = self.task.episode(self.seed)
        self._instruction, self.goal, self.look = ep.instruction, ep.goal, ep.spec["look"]
        self._success: bool | None = None
        self._success_t = 0.0
        self._done = False
        self._closed = False
        self.state: dict = {"targets": {}, "values": {}, "events": []}
        self._reader: _Pipe | None = None
        self._t0 = time.monotonic()
        if self.task.app == "gtk3-widget-factory":
            env = {**world.env(atspi=True), "GTK_THEME": ep.spec["look"]}
            self._app = _Pipe(["gtk3-widget-factory"], env, "gtk3-widget-factory")
            self._reader = _Pipe([python_for("atspi"), str(HERE / "atspi_reader.py"), "gtk3-widget-factory"],
                                 env, "the AT-SPI reader")
            try:
                hello = self._reader.reply(10.0)
            except DesktopError as e:  # libatspi aborts when it cannot reach the bus
                hello = {"ok": False, "error": re.sub(r"^.*?\*\*: [\d:.]+: ", "", str(e).split("exited: ")[-1])}
            if not hello.get("ok"):
                self._app.close()
                self._reader.close()
                raise DesktopError(f"AT-SPI bus not running or not reachable at {env['DBUS_SESSION_BUS_ADDRESS']}: "
                                   f"{hello.get('error')}")
        else:
            spec = {**ep.spec, "size": list(APP_SIZE)}
            script = "tk_app.py" if self.task.toolkit == "tk" else "gtk_app.py"
            env = world.env() if self.task.toolkit == "tk" else {**world.env(), "GTK_THEME": ep.spec["look"]}
            self._app = _Pipe([python_for(self.task.toolkit), str(HERE / script), json.dumps(spec)],
                              env, f"the {self.task.name} app")
        try:
            box = self._wait_ready()
            kw = {"stop_hotkey": None, "scale": 1.0, "input_scale": 1.0, **(live_kw or {})}
            self.live = LiveDesktop(capture_region=tuple(box), **kw)
        except BaseException:
            self._close_apps()
            raise
        self.screen = self.live.screen
        self.box = box
        # Park the pointer inside the window (X gives keyboard focus to the window under it) on an
        # empty spot: the bottom-right corner of the window.
        self.live.apply(Move(*self.screen.to_normalised(self.screen.width - 12, self.screen.height - 12)))
        time.sleep(self.settle)
        self._t0 = time.monotonic()
        self._refresh()

    # -- the app's state ---------------------------------------------------------------------------
    def _query(self) -> dict:
        if self._reader is not None:
            r = self._reader.ask("tree", timeout=10.0)
            if not r.get("ok"):
                raise DesktopError(f"AT-SPI: {r.get('error')}")
            st = factory_state(r["nodes"])
            st["window"] = r.get("window")
            return st
        return self._app.ask("state")

    def _wait_ready(self) -> list[int]:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self._app.proc.poll() is not None:
                err = (self._app.proc.stderr.read() or "").strip().splitlines()
                raise DesktopError(f"{self.task.app} exited at start" + (f": {err[-1]}" if err else ""))
            try:
                st = self._query()
            except DesktopError as e:
                last = str(e)
                time.sleep(0.2)
                continue
            if self._reader is not None:
                win = st.get("window")
                if win and len(st["targets"]) >= 6 and win[2] > 0:
                    self.state = st
                    x, y, w, h = win
                    sw, sh = self.world_size()
                    return [max(0, x), max(0, y), min(w, sw - max(0, x)), min(h, sh - max(0, y))]
            elif st.get("ready") and st.get("targets"):
                self.state = st
                return [0, 0, *APP_SIZE]
            time.sleep(0.1)
        if self._reader is not None and "not on the accessibility bus" in last:
            raise DesktopError(f"AT-SPI: {self.task.app} did not appear on the accessibility bus within "
                               f"{START_TIMEOUT:g} s (is the AT-SPI bus running?)")
        raise DesktopError(f"{self.task.app} did not show its window within {START_TIMEOUT:g} s"
                           + (f": {last}" if last else ""))

    def world_size(self) -> tuple[int, int]:
        x = self.world.xvfb
        return (x.width, x.height) if x is not None else (10 ** 5, 10 ** 5)

    def point(self, box, fx: float = 0.5, fy: float = 0.5) -> tuple[float, float]:
        """A root-window box's point (fractions fx, fy of it) in normalised coordinates of the capture."""
        x, y, w, h = box
        px = x + min(w - 1, max(0, round(w * fx))) - self.box[0]
        py = y + min(h - 1, max(0, round(h * fy))) - self.box[1]
        return self.screen.to_normalised(px, py)

    def _refresh(self) -> None:
        if self._success is not None:
            return
        self.state = self._query()
        out = self.task.outcome(self.state, self.goal)
        if out is not None:
            self._success = bool(out)
            self._success_t = self.now()

    # -- Desktop protocol --------------------------------------------------------------------------
    def observe(self) -> Frame:
        if self._closed:
            raise DesktopError("the apps desktop is closed")
        f = self.live.observe()
        return Frame(f.pixels, round(self.now(), 6), f.index, f.screen)

    def apply(self, action: Action) -> None:
        if self._closed:
            raise DesktopError("the apps desktop is closed")
        if self.finished:
            return
        if isinstance(action, Done):
            self._done = True
            if self._success is None:
                self._success = False
            return
        self.live.apply(action)
        if not isinstance(action, Wait):
            time.sleep(self.settle)
        self._refresh()

    def now(self) -> float:
        return time.monotonic() - self._t0

    @property
    def finished(self) -> bool:
        if self._done or self._success is False:
            return True
        return bool(self._success) and self.now() - self._success_t >= TAIL_S

    @property
    def success(self) -> bool | None:
        return bool(self._success)

    @property
    def cursor(self) -> tuple[float, float] | None:
        return self.live.cursor

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def oracle(self) -> Any:
        return _Oracle(self)

    def info(self) -> dict:
        return {"kind": "apps", "task": self.task.name, "toolkit": self.task.toolkit, "app": self.task.app,
                "seed": self.seed, "look": self.look, "display": self.world.display, "window_box": list(self.box),
                "window_manager": None}

    def _close_apps(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._app.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.live.close()
        finally:
            self._close_apps()

    def __enter__(self) -> AppDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
