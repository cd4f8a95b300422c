"""The live desktop under a private Xvfb: the agent clicks and types into a Tk app, and every
safety control stops or refuses as promised, leaving a closed session with the reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from agent.desktops import ActionRefused, DesktopError
from agent.desktops.executor import to_input_space
from agent.loop import Agent
from agent.sessions.format import SessionRecorder, open_session
from capture.live import CaptureError, ScreenSource
from policies.actions import Click, Key, Move, Type, Wait
from tests.conftest import ROOT, pointer, start_xvfb, stop_xvfb

pytestmark = pytest.mark.xvfb


class ListPolicy:
    """Plays a fixed list of action batches, one per step, then waits."""

    name = "list"

    def __init__(self, steps):
        self.steps = list(steps)
        self.seen = []

    def reset(self, instruction):
        self.i = 0

    def act(self, obs):
        self.seen.append(obs)
        batch = self.steps[self.i] if self.i < len(self.steps) else []
        self.i += 1
        return list(batch)


def norm(server, px, py):
    """A root pixel's centre, normalised over the (single, 1:1) Xvfb screen."""
    return (px + 0.5) / server.width, (py + 0.5) / server.height


def live(**kw):
    from agent.desktops.live import LiveDesktop

    kw.setdefault("stop_hotkey", None)
    return LiveDesktop(**kw)


def events(path):
    return [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]


def stop_event(path):
    return [e for e in events(path) if e.get("event") == "stop"][-1]


def test_screen_source_grabs_bgra_with_fps_cap_and_counters(xvfb):
    with ScreenSource(monitor=1, fps=20) as src:
        assert src.screen.size == (xvfb.width, xvfb.height)
        assert src.scale == 1.0
        frames = [src.grab() for _ in range(6)]
        assert frames[0].pixels.shape == (xvfb.height, xvfb.width, 4)
        assert [f.index for f in frames] == list(range(6))
        assert all(b.t > a.t for a, b in zip(frames, frames[1:], strict=False))
        assert frames[-1].t >= 5 / 20 - 0.02  # capped at 20 fps
        time.sleep(0.3)  # miss ~6 slots
        src.grab()
        assert src.captured == 7 and src.dropped >= 4
    with ScreenSource(monitor=0, region=(10, 20, 100, 50)) as src:
        f = src.grab()
        assert f.pixels.shape == (50, 100, 4) and (src.screen.left, src.screen.top) == (10, 20)
    with pytest.raises(CaptureError, match="monitor 5 does not exist"):
        ScreenSource(monitor=5)


def test_agent_clicks_and_types_into_tk_app(xvfb, tk_app, tmp_path):
    bx, by = tk_app.centre("button")
    ex, ey = tk_app.centre("entry")
    policy = ListPolicy([
        [Click(*norm(xvfb, bx, by))],
        [Click(*norm(xvfb, ex, ey))],
        [Type("hello World")],
        [Key("enter")],
    ])
    desktop = live(instruction="click then type")
    rec = SessionRecorder(tmp_path / "s", desktop.screen, 10, instruction="click then type", policy="list",
                          desktop=desktop.info())
    try:
        res = Agent(desktop, policy, recorder=rec, max_steps=6).run()
    finally:
        desktop.close()
    assert res.reason == "max-steps" and res.actions == 4, res
    assert tk_app.wait_for(lambda ev: any(e["ev"] == "entry" and e["text"] == "hello World" for e in ev))
    ev = tk_app.events()
    presses = [e for e in ev if e["ev"] == "press"]
    assert presses[0]["widget"] == "button" and (presses[0]["x_root"], presses[0]["y_root"]) == (bx, by)
    assert presses[1]["widget"] == "entry" and (presses[1]["x_root"], presses[1]["y_root"]) == (ex, ey)
    assert any(e["ev"] == "command" for e in ev)
    assert any(e["ev"] == "key" and e["keysym"] == "Return" for e in ev)
    # the cursor the policy saw after the first click is where it clicked
    assert policy.seen[1].cursor == pytest.approx(norm(xvfb, bx, by), abs=1e-9)
    s = open_session(tmp_path / "s")
    assert s.meta["closed"] and s.meta["desktop"]["kind"] == "live"
    assert [e.action.type for e in s.actions()] == ["click", "click", "type", "key"]


def test_live_click_lands_on_the_pixel_at_scale_1(xvfb, tk_app):
    desktop = live(max_actions_per_second=None)
    try:
        for px, py in [(1, 1), (xvfb.width - 2, 5), (123, 321), (xvfb.width - 2, xvfb.height - 2)]:
            x, y = norm(xvfb, px, py)
            assert to_input_space(x, y, desktop.screen, desktop.executor.input_scale) == (px, py)
            desktop.apply(Click(x, y))
            assert tk_app.wait_for(lambda ev, p=(px, py): any(
                e["ev"] == "press" and (e["x_root"], e["y_root"]) == p for e in ev))
            assert pointer(xvfb) == (px, py)
    finally:
        desktop.close()


def test_dry_run_sends_no_input(xvfb, tk_app, tmp_path):
    before = pointer(xvfb)
    n_before = len(tk_app.events())
    bx, by = tk_app.centre("button")
    policy = ListPolicy([[Click(*norm(xvfb, bx, by))], [Move(0.1, 0.1)], [Type("nope")], [Key("enter")]])
    desktop = live(dry_run=True)
    try:
        res = Agent(desktop, policy, max_steps=5).run()
    finally:
        desktop.close()
    assert res.actions == 4 and res.refused == 0
    assert len(desktop.executor.dry_log) == 4 and "click" in desktop.executor.dry_log[0]
    time.sleep(0.3)
    assert pointer(xvfb) == before
    assert len(tk_app.events()) == n_before  # the app saw nothing at all


def test_refusals_region_deny_rate(xvfb):
    desktop = live(region=(0.0, 0.0, 0.5, 0.5), max_actions_per_second=3, dry_run=True)
    try:
        with pytest.raises(ActionRefused, match="outside the allowed region"):
            desktop.apply(Click(0.75, 0.25))
        with pytest.raises(ActionRefused, match="deny list"):
            desktop.apply(Key("alt+f4"))
        with pytest.raises(ActionRefused, match="deny list"):
            desktop.apply(Key("delete+alt+ctrl"))
        for _ in range(3):
            desktop.apply(Move(0.25, 0.25))
        with pytest.raises(ActionRefused, match="rate limit"):
            desktop.apply(Move(0.25, 0.25))
        desktop.apply(Wait(0.0))  # waits send nothing and are never rate-limited
    finally:
        desktop.close()


def test_refusals_are_counted_and_the_loop_goes_on(xvfb):
    policy = ListPolicy([[Click(0.9, 0.9), Key("ctrl+alt+delete"), Move(0.2, 0.2)]])
    desktop = live(region=(0, 0, 0.5, 0.5), dry_run=True)
    try:
        res = Agent(desktop, policy, max_steps=2).run()
    finally:
        desktop.close()
    assert res.refused == 2 and res.actions == 1 and res.reason == "max-steps"


def test_refusals_are_logged_and_the_loop_goes_on(xvfb, tmp_path):
    policy = ListPolicy([[Click(0.9, 0.9), Key("ctrl+alt+delete"), Move(0.2, 0.2)]])
    desktop = live(region=(0, 0, 0.5, 0.5), dry_run=True)
    rec = SessionRecorder(tmp_path / "s", desktop.screen, 10, desktop=desktop.info())
    try:
        res = Agent(desktop, policy, recorder=rec, max_steps=2).run()
    finally:
        desktop.close()
    assert res.refused == 2 and res.actions == 1 and res.reason == "max-steps"
    refused = [e for e in events(tmp_path / "s") if e.get("event") == "refused"]
    assert [e["action"]["type"] for e in refused] == ["click", "key"]


def test_confirmation_rule(xvfb):
    asked = []
    desktop = live(dry_run=True, confirm=lambda a: asked.append(a) or a.type == "click")
    try:
        desktop.apply(Click(0.5, 0.5))
        with pytest.raises(ActionRefused, match="not confirmed"):
            desktop.apply(Type("rm -rf"))
        desktop.apply(Move(0.5, 0.5))  # moves are not asked
    finally:
        desktop.close()
    assert [a.type for a in asked] == ["click", "type"]


def test_failsafe_corner_stops_the_run(xvfb, tmp_path):
    policy = ListPolicy([[Move(0.5, 0.5)], [Move(0.4, 0.4)], [Move(0.3, 0.3)]])

    class CornerOnSecondStep(ListPolicy):
        def act(self, obs):
            if self.i == 1:  # a person slams the mouse into the top-left corner
                subprocess.run(["xdotool", "mousemove", "0", "0"], env=xvfb.env, check=True)
            return super().act(obs)

    policy = CornerOnSecondStep(policy.steps)
    desktop = live()
    rec = SessionRecorder(tmp_path / "s", desktop.screen, 10, desktop=desktop.info())
    try:
        res = Agent(desktop, policy, recorder=rec, max_steps=10).run()
    finally:
        desktop.close()
    assert res.reason.startswith("desktop-error: failsafe"), res.reason
    assert res.steps == 1
    assert "failsafe" in stop_event(tmp_path / "s")["reason"]
    assert open_session(tmp_path / "s").meta["end_reason"].startswith("desktop-error: failsafe")


def test_policy_targets_in_corners_do_not_trip_the_failsafe(xvfb):
    desktop = live(max_actions_per_second=None)
    try:
        desktop.apply(Move(0.0, 0.0))
        assert pointer(xvfb) == (1, 0)
        desktop.apply(Move(0.5, 0.5))  # still going: our own move did not trip it
    finally:
        desktop.close()


class HangingSource:
    """A ScreenSource stand-in whose grab hangs (or fails) after ``good`` frames."""

    def __init__(self, real, good=2, fail=False):
        self.real, self.good, self.fail = real, good, fail
        self.screen = real.screen
        self.release = threading.Event()

    def now(self):
        return self.real.now()

    def grab(self):
        if self.good > 0:
            self.good -= 1
            return self.real.grab()
        if self.fail:
            raise CaptureError("simulated capture failure")
        self.release.wait(30)
        raise CaptureError("released")

    def close(self):
        self.real.close()


@pytest.mark.parametrize("fail", [False, True], ids=["hung", "failing"])
def test_dead_man_stop(xvfb, tmp_path, fail):
    src = HangingSource(ScreenSource(), good=2, fail=fail)
    desktop = live(source=src, deadman_seconds=0.5, dry_run=True)
    rec = SessionRecorder(tmp_path / "s", desktop.screen, 10, desktop=desktop.info())
    t0 = time.monotonic()
    try:
        res = Agent(desktop, ListPolicy([]), recorder=rec, max_steps=100).run()
    finally:
        desktop.close()
        src.release.set()
    assert time.monotonic() - t0 < 3
    assert res.steps == 2 and res.reason.startswith("desktop-error: dead-man: no frame for 0.5 s"), res.reason
    if fail:
        assert "simulated capture failure" in res.reason
    s = open_session(tmp_path / "s")
    assert s.meta["closed"] and "dead-man" in s.meta["end_reason"]
    assert "dead-man" in stop_event(tmp_path / "s")["reason"]


def test_stop_hotkey_stops_the_run(xvfb, tmp_path):
    from agent.desktops.live import LiveDesktop

    desktop = LiveDesktop(dry_run=True, fps=20)  # default hotkey ctrl+alt+shift+q
    rec = SessionRecorder(tmp_path / "s", desktop.screen, 20, desktop=desktop.info())
    agent = Agent(desktop, ListPolicy([]), recorder=rec, max_seconds=20)
    desktop.on_stop = agent.stop
    timer = threading.Timer(0.5, lambda: subprocess.run(["xdotool", "key", "ctrl+alt+shift+q"], env=xvfb.env))
    timer.start()
    try:
        res = agent.run()
    finally:
        timer.cancel()
        desktop.close()
    assert res.reason == "stop-hotkey (ctrl+alt+shift+q)" and res.duration < 10
    assert stop_event(tmp_path / "s")["reason"] == "stop-hotkey (ctrl+alt+shift+q)"
    assert open_session(tmp_path / "s").meta["end_reason"] == "stop-hotkey (ctrl+alt+shift+q)"


def test_stop_hotkey_without_agent_binding_raises_on_next_call(xvfb):
    from agent.desktops.live import LiveDesktop

    desktop = LiveDesktop(dry_run=True, stop_hotkey="ctrl+alt+shift+q")
    try:
        desktop.observe()
        subprocess.run(["xdotool", "key", "ctrl+alt+shift+q"], env=xvfb.env, check=True)
        deadline = time.monotonic() + 5
        while not desktop._stop_reason and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(DesktopError, match="stop-hotkey"):
            desktop.observe()
    finally:
        desktop.close()


@pytest.mark.parametrize("fps", ["20", "0"])  # 0: no cap, a still screen's grab waits on the X connection
def test_x_server_vanishing_mid_run(tmp_path, fps):
    """`dw run` on its own Xvfb; the Xvfb is killed: a clear error, a closed readable session."""
    server = start_xvfb(320, 240)
    out = tmp_path / "run"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--policy", "random", "--dry-run", "--fps", fps,
             "--max-seconds", "30", "--record", str(out), "--json"],
            env={**server.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                (out / "events.jsonl").exists() and (out / "events.jsonl").read_text().count("\n") >= 3):
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        stop_xvfb(server.proc)
    assert proc.returncode == 1, (stdout, stderr)
    result = json.loads(stdout)
    assert "is gone" in result["reason"] and result["reason"].startswith("desktop-error"), result
    assert "Traceback" not in stderr.split("stopped:")[-1]
    s = open_session(out)
    assert s.meta["closed"] and "is gone" in s.meta["end_reason"]
    assert "is gone" in stop_event(out)["reason"]


def test_capture_error_when_display_gone():
    server = start_xvfb(160, 120)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = server.display
    try:
        src = ScreenSource()
        src.grab()
        stop_xvfb(server.proc)
        with pytest.raises(CaptureError, match="is gone") as info:
            src.grab()
        assert info.value.gone
        src.close()
    finally:
        stop_xvfb(server.proc)
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old


def test_hidpi_scale_from_xft_dpi(xvfb):
    from Xlib import X, Xatom, display

    from capture.live import detect_scale

    assert detect_scale() == 1.0
    d = display.Display(xvfb.display)
    root = d.screen().root
    atom = d.intern_atom("RESOURCE_MANAGER")
    try:
        root.change_property(atom, Xatom.STRING, 8, b"Xft.antialias:\t1\nXft.dpi:\t144\n", X.PropModeReplace)
        d.sync()
        assert detect_scale() == 1.5
        with ScreenSource() as src:
            assert src.screen.scale == 1.5 and src.grab().screen.scale == 1.5
        with ScreenSource(scale=1.0) as src:  # overridable
            assert src.screen.scale == 1.0
    finally:
        root.delete_property(atom)
        d.sync()
        d.close()


def test_stop_hotkey_on_an_x_server_without_record_is_a_clear_error_not_a_hang(monkeypatch):
    from agent.desktops.live import LiveDesktop
    from agent.desktops.xvfb import XvfbUnavailable
    from agent.desktops.xvfb import start_xvfb as start_raw

    try:
        server = start_raw(320, 240, extra_args=("-extension", "RECORD"))
    except XvfbUnavailable as e:
        pytest.skip(str(e))
    try:
        monkeypatch.setenv("DISPLAY", server.display)
        t0 = time.monotonic()
        with pytest.raises(DesktopError, match="RECORD extension.*--stop-hotkey ''"):
            LiveDesktop(dry_run=True)
        assert time.monotonic() - t0 < 10
        LiveDesktop(dry_run=True, stop_hotkey=None).close()  # and without the hotkey it runs
    finally:
        stop_xvfb(server.proc)


def test_a_stop_hotkey_that_never_becomes_ready_times_out(xvfb, monkeypatch):
    from pynput import keyboard

    from agent.desktops.safety import StopHotkey

    monkeypatch.setattr(keyboard.Listener, "_run", lambda self: time.sleep(3))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="not ready within 0.5 s"):
        StopHotkey("ctrl+alt+shift+q", print, ready_timeout=0.5).start()
    assert time.monotonic() - t0 < 2
