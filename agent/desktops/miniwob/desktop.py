"""MiniWoB++ tasks behind the :class:`agent.desktops.Desktop` protocol, in two modes.

- ``headless`` (:class:`HeadlessMiniWoB`): frames are MiniWoB's own screenshots of the task area
  (160x210 CSS pixels, RGB, converted to a BGRA :class:`Frame`); actions go through MiniWoB's
  action API (``miniwob.selenium_actions``: click-coords, dblclick-coords, mousedown/up-coords,
  scroll-coords, press-key, type-text) on the page's WebDriver. Fast; for training data and
  large evaluations.
- ``desktop`` (:class:`LiveMiniWoB`): Chromium shows the task page as an undecorated ``--app``
  window at a known position on the X display (Xvfb); the live desktop (:class:`LiveDesktop`)
  captures the task area with mss and drives it with pyautogui through the Executor — the whole
  runtime path. Only rewards (and the expert's DOM look-ups) come back through the WebDriver.

Both run in real time (MiniWoB's episode timer is the page's own), expose the utterance as
``instruction``, ``finished`` / ``success`` (raw reward > 0), ``info()`` and an ``oracle`` whose
``expert_actions()`` is the scripted DOM expert. One browser (:class:`MiniWoBBrowser`) serves
many episodes of one task: ``browser.episode(seed)`` starts a seeded episode on it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from agent.desktops import ActionRefused, DesktopError
from agent.desktops.miniwob.browser import MODES, TASK_H, TASK_W, open_env
from agent.desktops.miniwob.experts import expert_actions, expert_target
from capture import Frame, Screen
from policies.actions import Action, Click, Done, Drag, Key, MouseDown, MouseUp, Move, Scroll, Type, Wait

# Our key names -> MiniWoB's press-key syntax (modifier prefixes C- S- A- M-, special keys in <>).
_SPECIAL = {
    "enter": "<Enter>", "return": "<Enter>", "tab": "<Tab>", "space": " ", "backspace": "<Backspace>",
    "delete": "<Delete>", "escape": "<Escape>", "esc": "<Escape>", "insert": "<Insert>", "home": "<Home>",
    "end": "<End>", "pageup": "<PageUp>", "pagedown": "<PageDown>", "up": "<ArrowUp>", "down": "<ArrowDown>",
    "left": "<ArrowLeft>", "right": "<ArrowRight>", **{f"f{i}": f"<F{i}>" for i in range(1, 13)},
}
_MODS = {"ctrl": "C-", "shift": "S-", "alt": "A-", "option": "A-", "cmd": "M-", "meta": "M-", "super": "M-", "win": "M-"}


def miniwob_key(combo: Key) -> str:
    """``Key("ctrl+a")`` -> ``"C-a"``; raises :class:`ActionRefused` for keys MiniWoB cannot press."""
    parts = combo.parts
    mods, key = parts[:-1], parts[-1]
    prefix = ""
    for m in mods:
        if m not in _MODS:
            raise ActionRefused(f"MiniWoB cannot press {combo.keys!r}: {m!r} is not a modifier")
        prefix += _MODS[m]
    if key in _MODS:
        raise ActionRefused(f"MiniWoB cannot press a lone modifier ({combo.keys!r})")
    if key in _SPECIAL:
        return prefix + _SPECIAL[key]
    if len(key) == 1:
        return prefix + key
    raise ActionRefused(f"MiniWoB cannot press {combo.keys!r}")


class MiniWoBBrowser:
    """One Chromium page for one task (``headless`` or ``desktop``), reused across episodes."""

    def __init__(self, task: str, mode: str = "headless", *, position: tuple[int, int] = (40, 30),
                 window: tuple[int, int] = (500, 320)):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.task, self.mode, self.position = task, mode, position
        self.env = open_env(task, mode, position=position, size=window)
        self.instance = self.env.instance
        self.driver = self.instance.driver
        self.episodes = 0
        self._closed = False

    def metadata(self) -> dict:
        try:
            return self.instance.get_metadata()
        except Exception as e:
            raise DesktopError(f"MiniWoB page lost: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def start(self, seed: int) -> str:
        """Start a seeded episode; returns the utterance."""
        from selenium.webdriver.common.action_chains import ActionChains

        try:
            self.instance.force_stop()
            # Release any button or key the last episode left pressed (one that ended mid-drag), so it
            # does not carry into this one; the release lands on the stopped episode.
            ActionChains(self.driver).reset_actions()
            self.instance.begin_task(seed=seed)
            resp = self.driver.execute_script("return core.getUtterance();")
        except Exception as e:
            raise DesktopError(f"cannot start a MiniWoB episode: {type(e).__name__}: {e}") from e
        self.episodes += 1
        return resp["utterance"] if isinstance(resp, dict) else str(resp)

    def task_box(self) -> tuple[int, int, int, int]:
        """The task area on the screen (desktop mode): left, top, width, height in pixels."""
        x, y, ow, oh, iw, ih, wl, wt = self.driver.execute_script(
            "const r = document.getElementById('wrap').getBoundingClientRect();"
            "return [window.screenX, window.screenY, window.outerWidth, window.outerHeight,"
            " window.innerWidth, window.innerHeight, r.left, r.top];")
        left = x + (ow - iw) // 2 + round(wl)
        top = y + (oh - ih) + round(wt)
        return int(left), int(top), TASK_W, TASK_H

    def screenshot_rgb(self) -> np.ndarray:
        from miniwob.screenshot import get_screenshot, pil_to_numpy_array

        inst = self.instance
        img = get_screenshot(self.driver, inst.inner_width, inst.inner_height, inst.task_width, inst.task_height)
        return pil_to_numpy_array(img)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.instance.close()
        except Exception:
            pass

    def __enter__(self) -> MiniWoBBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Oracle:
    """The scripted expert for the current episode (reads the DOM; for demos only)."""

    def __init__(self, desk: _MiniWoBBase):
        self.desk = desk

    def expert_actions(self) -> list[Action]:
        d = self.desk
        if d.finished:
            return [Done()]
        return expert_actions(d.task, d.browser.driver, d.instruction)

    def expert_target(self) -> str | None:
        """The instruction word naming what the expert clicks next (demos record it)."""
        d = self.desk
        return None if d.finished else expert_target(d.task, d.browser.driver, d.instruction)


class _MiniWoBBase:
    mode = ""

    def __init__(self, task: str, seed: int, browser: MiniWoBBrowser | None, **browser_kw: Any):
        self.task = task
        self.seed = int(seed)
        self._own = browser is None
        self.browser = browser or MiniWoBBrowser(task, self.mode, **browser_kw)
        if self.browser.task != task or self.browser.mode != self.mode:
            raise ValueError(f"browser runs {self.browser.task}/{self.browser.mode}, not {task}/{self.mode}")
        self._utterance = self.browser.start(self.seed)
        self._t0 = time.monotonic()
        self._done = False
        self._success: bool | None = None
        self._reward = 0.0
        self._reason = None
        self._closed = False
        self._oracle = _Oracle(self)

    # -- outcome ------------------------------------------------------------------------------
    def _poll(self) -> None:
        if self._done:
            return
        m = self.browser.metadata()
        if m.get("done"):
            self._done = True
            self._reward = float(m.get("raw_reward") or 0.0)
            self._success = self._reward > 0
            self._reason = m.get("reason")

    def now(self) -> float:
        return time.monotonic() - self._t0

    @property
    def instruction(self) -> str:
        return self._utterance

    @property
    def oracle(self) -> Any:
        return self._oracle

    @property
    def finished(self) -> bool:
        self._poll()
        return self._done

    @property
    def success(self) -> bool | None:
        self._poll()
        return self._success if self._done else False

    @property
    def reward(self) -> float:
        return self._reward

    def info(self) -> dict:
        return {"kind": "miniwob", "task": self.task, "seed": self.seed, "mode": self.mode,
                "task_size": [TASK_W, TASK_H]}

    def _end_by_done(self) -> None:
        self._poll()
        if not self._done:
            self._done, self._success, self._reason = True, False, "done"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._own:
            self.browser.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HeadlessMiniWoB(_MiniWoBBase):
    """MiniWoB++ in headless Chromium: MiniWoB screenshots in, MiniWoB actions out."""

    mode = "headless"
    kind = "miniwob"

    def __init__(self, task: str, seed: int = 0, browser: MiniWoBBrowser | None = None, **browser_kw: Any):
        from miniwob.action import ActionSpaceConfig, ActionTypes

        super().__init__(task, seed, browser, **browser_kw)
        self.screen = Screen(TASK_W, TASK_H, 0, 0, 1.0)
        self._types = ActionTypes
        self._config = ActionSpaceConfig(
            action_types=[ActionTypes.NONE, ActionTypes.MOVE_COORDS, ActionTypes.CLICK_COORDS,
                          ActionTypes.DBLCLICK_COORDS, ActionTypes.MOUSEDOWN_COORDS, ActionTypes.MOUSEUP_COORDS,
                          ActionTypes.SCROLL_UP_COORDS, ActionTypes.SCROLL_DOWN_COORDS, ActionTypes.PRESS_KEY,
                          ActionTypes.TYPE_TEXT],
            allowed_keys=[], screen_width=TASK_W, screen_height=TASK_H)
        self._index = 0
        self._cursor = (0.5, 0.5)
        self._perform(ActionTypes.MOVE_COORDS, coords=self._coords(0.5, 0.5))  # park the pointer mid-task

    def _coords(self, x: float, y: float) -> np.ndarray:
        px, py = self.screen.to_pixels(x, y)
        return np.array([px + 0.5, py + 0.5], np.float32)

    def _perform(self, kind, **fields: Any) -> None:
        action = {"action_type": self._config.action_types.index(kind), **fields}
        try:
            self.browser.instance.perform(action, self._config)
        except Exception as e:
            raise DesktopError(f"MiniWoB action failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def observe(self) -> Frame:
        if self._closed:
            raise DesktopError("the MiniWoB desktop is closed")
        try:
            rgb = self.browser.screenshot_rgb()
        except Exception as e:
            raise DesktopError(f"MiniWoB screenshot failed: {type(e).__name__}: {e}") from e
        h, w = rgb.shape[:2]
        bgra = np.empty((h, w, 4), np.uint8)
        bgra[:, :, :3] = rgb[:, :, ::-1]
        bgra[:, :, 3] = 255
        frame = Frame(bgra, round(self.now(), 6), self._index, self.screen)
        self._index += 1
        return frame

    def apply(self, action: Action) -> None:
        if self._closed:
            raise DesktopError("the MiniWoB desktop is closed")
        if self.finished:
            return
        T = self._types
        if isinstance(action, Move):
            self._perform(T.MOVE_COORDS, coords=self._coords(action.x, action.y))
        elif isinstance(action, Click):
            if action.button != "left":
                raise ActionRefused(f"MiniWoB's action API has no {action.button} click")
            c = self._coords(action.x, action.y)
            if action.count == 2:
                self._perform(T.DBLCLICK_COORDS, coords=c)
            else:
                for _ in range(action.count):
                    self._perform(T.CLICK_COORDS, coords=c)
        elif isinstance(action, MouseDown | MouseUp):
            if action.button != "left":
                raise ActionRefused(f"MiniWoB's action API has no {action.button} button")
            kind = T.MOUSEDOWN_COORDS if isinstance(action, MouseDown) else T.MOUSEUP_COORDS
            self._perform(kind, coords=self._coords(action.x, action.y))
        elif isinstance(action, Drag):
            if action.button != "left":
                raise ActionRefused(f"MiniWoB's action API has no {action.button} button")
            self._perform(T.MOUSEDOWN_COORDS, coords=self._coords(action.x, action.y))
            for i in range(1, 5):
                f = i / 4
                self._perform(T.MOVE_COORDS, coords=self._coords(action.x + (action.x2 - action.x) * f,
                                                                 action.y + (action.y2 - action.y) * f))
            self._perform(T.MOUSEUP_COORDS, coords=self._coords(action.x2, action.y2))
        elif isinstance(action, Scroll):
            if action.dx:
                raise ActionRefused("MiniWoB's action API scrolls vertically only")
            kind = T.SCROLL_DOWN_COORDS if action.dy > 0 else T.SCROLL_UP_COORDS
            for _ in range(abs(action.dy)):
                self._perform(kind, coords=self._coords(action.x, action.y))
        elif isinstance(action, Key):
            key = miniwob_key(action)
            keys = self._config.allowed_keys
            if key not in keys:
                keys.append(key)
            self._perform(T.PRESS_KEY, key=keys.index(key))
        elif isinstance(action, Type):
            self._perform(T.TYPE_TEXT, text=action.text)
        elif isinstance(action, Wait):
            time.sleep(float(action.seconds))
        elif isinstance(action, Done):
            self._end_by_done()
            return
        else:
            raise TypeError(f"not an action: {action!r}")
        if action.point is not None:
            self._cursor = self.screen.to_normalised(*self.screen.to_pixels(*action.point))
        if isinstance(action, Drag):
            self._cursor = self.screen.to_normalised(*self.screen.to_pixels(action.x2, action.y2))

    @property
    def cursor(self) -> tuple[float, float] | None:
        return self._cursor


PARK_SPOTS = ((0.5, 0.98), (0.15, 0.98), (0.85, 0.98), (0.5, 0.5))  # the bottom edge first: blank in most tasks


def blank_spot(pixels: np.ndarray, spots=PARK_SPOTS, radius: int = 5) -> tuple[float, float]:
    """The first of ``spots`` (normalised) around which ``pixels`` are all one colour (nothing drawn
    there to hover), else the last."""
    h, w = pixels.shape[:2]
    for x, y in spots:
        cx, cy = min(w - 1, int(x * w)), min(h - 1, int(y * h))
        patch = pixels[max(0, cy - radius):cy + radius + 1, max(0, cx - radius):cx + radius + 1, :3]
        if (patch == patch[0, 0]).all():
            return x, y
    return spots[-1]


class LiveMiniWoB(_MiniWoBBase):
    """MiniWoB++ in a visible Chromium window on an X display, driven by the live desktop.

    Frames: mss capture of the task area; input: pyautogui through :class:`agent.desktops.executor.Executor`
    (with its safety rules). ``live_kw`` go to :class:`agent.desktops.live.LiveDesktop` (``stop_hotkey`` is
    off by default here: a benchmark on a private Xvfb has no keyboard to press it on)."""

    mode = "desktop"
    kind = "miniwob"

    def __init__(self, task: str, seed: int = 0, browser: MiniWoBBrowser | None = None, *,
                 live_kw: dict | None = None, settle: float = 0.15, **browser_kw: Any):
        from agent.desktops.live import LiveDesktop

        super().__init__(task, seed, browser, **browser_kw)
        box = self.browser.task_box()
        kw = {"stop_hotkey": None, "scale": 1.0, "input_scale": 1.0, **(live_kw or {})}
        self.live = LiveDesktop(capture_region=box, **kw)
        self.screen = self.live.screen
        self.settle = float(settle)
        # Park the pointer where it hovers nothing. Headless mode parks it mid-task, but MiniWoB's
        # screenshots never show hover styling; a real pointer there darkens the button under it
        # (enter-text's Submit), a screen the headless demos never held.
        self.live.apply(Move(*blank_spot(self.live.observe().pixels)))
        time.sleep(self.settle)

    def observe(self) -> Frame:
        if self._closed:
            raise DesktopError("the MiniWoB desktop is closed")
        f = self.live.observe()
        return Frame(f.pixels, round(self.now(), 6), f.index, f.screen)

    def apply(self, action: Action) -> None:
        if self._closed:
            raise DesktopError("the MiniWoB desktop is closed")
        if self.finished:
            return
        if isinstance(action, Done):
            self._end_by_done()
            return
        self.live.apply(action)
        if not isinstance(action, Wait):
            time.sleep(self.settle)  # let the page repaint before the next capture

    @property
    def cursor(self) -> tuple[float, float] | None:
        return self.live.cursor

    def info(self) -> dict:
        d = super().info()
        left, top, w, h = self.browser.task_box()
        d.update(display=self.live.info().get("display", ""), task_box=[left, top, w, h])
        return d

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.live.close()
        finally:
            super().close()


def open_miniwob(task: str, seed: int = 0, mode: str = "headless", browser: MiniWoBBrowser | None = None,
                 **kw: Any) -> HeadlessMiniWoB | LiveMiniWoB:
    if mode == "headless":
        return HeadlessMiniWoB(task, seed, browser, **kw)
    if mode == "desktop":
        return LiveMiniWoB(task, seed, browser, **kw)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
