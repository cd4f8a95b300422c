"""Input is always released (#41): after a run stopped mid-drag, mid-key-combo, by a refusal, by an
input error, by close and by a controller's disconnect from a served screen, the X server reports no
button and no key held. State is read from the X server itself (core QueryPointer / QueryKeymap,
what ``xinput query-state`` shows), on the suite's private Xvfb."""

from __future__ import annotations

import json
import threading
import time

import pytest

from agent.desktops import ActionRefused, DesktopError
from agent.loop import Agent
from policies.actions import Click, Drag, Key, MouseDown, Move

pytestmark = pytest.mark.xvfb


def held(server) -> tuple[list[int], list[int]]:
    """(buttons held, keycodes held) as the X server sees them."""
    from Xlib import X
    from Xlib.display import Display

    d = Display(server.display)
    try:
        mask = d.screen().root.query_pointer().mask
        buttons = [i for i, m in enumerate((X.Button1Mask, X.Button2Mask, X.Button3Mask), 1) if mask & m]
        keymap = d.query_keymap()
        keys = [i * 8 + b for i, byte in enumerate(keymap) for b in range(8) if byte >> b & 1]
        return buttons, keys
    finally:
        d.close()


def wait_until(pred, timeout=3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def x(xvfb):
    """pyautogui bound to the suite's Xvfb (it opens its display once, at import), nothing held."""
    import pyautogui
    from pyautogui import _pyautogui_x11 as px
    from Xlib.display import Display

    if px._display.get_display_name() != xvfb.display:
        px._display = Display(xvfb.display)
    assert held(xvfb) == ([], []), "something was held before the test"
    yield xvfb, pyautogui
    pyautogui.mouseUp()  # never leak a held button into the next test
    for k in ("ctrl", "shift", "alt", "t"):
        pyautogui.keyUp(k)


class Slow:
    """pyautogui with slow pointer moves (a drag takes ~0.8 s) and hotkeys that fail half-way."""

    def __init__(self, g, fail_hotkey: BaseException | None = None):
        self._g, self.fail_hotkey = g, fail_hotkey

    def moveTo(self, *a, **kw):
        self._g.moveTo(*a, **kw)
        time.sleep(0.1)

    def hotkey(self, *keys, **kw):
        for k in keys:
            self._g.keyDown(k)
        if self.fail_hotkey is not None:
            raise self.fail_hotkey  # a combo interrupted with every key still down
        for k in reversed(keys):
            self._g.keyUp(k)

    def __getattr__(self, name):
        return getattr(self._g, name)


def live(backend, **kw):
    from agent.desktops.live import LiveDesktop

    kw.setdefault("stop_hotkey", None)
    return LiveDesktop(backend=backend, failsafe=False, **kw)


def test_a_run_stopped_mid_drag_leaves_no_button_held(x):
    server, g = x
    desktop = live(Slow(g))
    try:
        seen = []
        t = threading.Timer(0.3, lambda: (seen.append(held(server)), desktop.request_stop("stop-hotkey (test)")))
        t.start()
        with pytest.raises(DesktopError, match="stopped during drag"):
            desktop.apply(Drag(0.2, 0.2, 0.8, 0.8))
        t.join()
        assert seen[0][0] == [1], "the drag's button should have been down when the stop came"
        assert held(server) == ([], [])
    finally:
        desktop.close()


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), OSError("input broke")], ids=["stop", "error"])
def test_a_key_combo_interrupted_mid_way_leaves_no_key_held(x, interrupt):
    server, g = x
    desktop = live(Slow(g, fail_hotkey=interrupt))
    try:
        with pytest.raises((KeyboardInterrupt, DesktopError)):
            desktop.apply(Key("ctrl+shift+t"))
        assert held(server) == ([], [])
    finally:
        desktop.close()


def test_a_refusal_releases_what_the_policy_held(x):
    server, g = x
    desktop = live(g, region=(0.0, 0.0, 0.5, 0.5))
    try:
        desktop.apply(MouseDown(0.25, 0.25))
        assert held(server)[0] == [1]
        with pytest.raises(ActionRefused, match="outside the allowed region"):
            desktop.apply(Click(0.9, 0.9))
        assert held(server) == ([], [])
    finally:
        desktop.close()


def test_a_stopped_run_and_close_release_a_held_button(x):
    server, g = x
    desktop = live(g)

    class Hold:
        name = "hold"

        def reset(self, instruction):
            self.n = 0

        def act(self, obs):
            self.n += 1
            if self.n == 1:
                return [MouseDown(0.4, 0.4), Move(0.5, 0.5)]
            if self.n == 3:
                desktop.request_stop("stop-hotkey (test)")  # as the hotkey's thread would
            return []

    agent = Agent(desktop, Hold(), max_steps=50)
    desktop.on_stop = agent.stop
    try:
        res = agent.run()
        assert res.reason == "stop-hotkey (test)"
        assert held(server) == ([], [])
        desktop.executor._held_buttons["left"] = None  # closing releases too, even without a stop
        g.mouseDown(button="left")
        assert held(server)[0] == [1]
    finally:
        desktop.close()
    assert held(server) == ([], [])


def test_a_controller_disconnecting_from_a_served_screen_releases_its_input(x):
    from websockets.sync.client import connect

    from agent.stream.server import ServerThread, StreamServer

    server, g = x
    desktop = live(g, fps=20)
    try:
        with ServerThread(StreamServer(desktop, port=0, fps=10, video=False)) as srv:
            ws = connect(f"{srv.url}?token={srv.token}&format=none", compression=None, proxy=None).__enter__()
            json.loads(ws.recv(5))  # hello
            ws.send(json.dumps({"type": "action", "id": 1, "action": {"type": "mouse_down", "x": 0.4, "y": 0.4}}))
            while json.loads(ws.recv(5)).get("type") != "ack":
                pass
            assert held(server)[0] == [1]
            ws.close()
            assert wait_until(lambda: held(server) == ([], [])), held(server)
    finally:
        desktop.close()
