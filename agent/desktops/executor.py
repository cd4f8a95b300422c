"""The executor: the ONLY module that sends keyboard and mouse input to the operating system.

Actions carry coordinates normalised to [0, 1] over the captured screen. The executor maps
them explicitly (:func:`to_input_space`):

    normalised (x, y) --Screen.to_pixels--> physical pixel (px, py) inside the captured screen
                      --+ screen origin, pixel centre--> physical pixel on the virtual desktop
                      --/ input_scale--> the OS input space

``input_scale`` is physical pixels per input unit: 1 on X11 and Windows (pyautogui makes the
process DPI-aware there, so input is in physical pixels), ``screen.scale`` on macOS (input in
logical points). :func:`default_input_scale` picks it.

Before anything is sent, every action passes the safety rules, in this order: the allowed
region, the deny list of key combos, the confirmation rule, the rate limit. A refusal raises
:class:`agent.desktops.ActionRefused` (the loop logs it and goes on). Dry-run applies the rules
and logs the input it would send, but never imports pyautogui's input functions or sends
anything. pyautogui is imported lazily (it needs a display at import), with ``PAUSE = 0`` (we
rate-limit ourselves) and ``FAILSAFE`` on: the pointer in a screen corner raises
:class:`agent.desktops.DesktopError` so the run stops with that reason.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from agent.desktops import ActionRefused, DesktopError
from capture import Screen
from policies.actions import (
    Action,
    Click,
    Done,
    Drag,
    Key,
    MouseDown,
    MouseUp,
    Move,
    Scroll,
    Type,
    Wait,
    normalise_combo,
)

log = logging.getLogger("digital_worker.executor")

DEFAULT_DENY_KEYS: tuple[str, ...] = (
    "ctrl+alt+delete",
    "ctrl+alt+backspace",  # kills the X server on some setups
    "alt+f4",
    "super+l",
    "cmd+q",
    "cmd+option+escape",
    "ctrl+shift+escape",
    "ctrl+alt+f1",  # virtual-terminal switches leave the captured session
    "ctrl+alt+f2", "ctrl+alt+f3", "ctrl+alt+f4", "ctrl+alt+f5", "ctrl+alt+f6", "ctrl+alt+f7",
)

# Names meaning the same physical key, folded before comparing combos with the deny list.
_ALIASES = {"return": "enter", "esc": "escape", "win": "super", "meta": "super", "cmd": "super", "option": "alt"}

# Action key names -> pyautogui key names.
_PYAUTOGUI_KEYS = {
    "super": "win", "meta": "win", "cmd": "command" if sys.platform == "darwin" else "win",
    "option": "option" if sys.platform == "darwin" else "alt", "escape": "esc", "menu": "apps",
}

# Characters pyautogui can type (its KEY_NAMES on every platform): ASCII printable, \n and \t.
_TYPEABLE = frozenset(chr(c) for c in range(32, 127)) | {"\n", "\t"}


def default_input_scale(screen: Screen) -> float:
    """Physical pixels per OS input unit: ``screen.scale`` on macOS (points), 1 elsewhere."""
    return screen.scale if sys.platform == "darwin" else 1.0


def to_input_space(x: float, y: float, screen: Screen, input_scale: float = 1.0) -> tuple[int, int]:
    """Normalised (x, y) over ``screen`` -> an integer point in the OS input space.

    The target physical pixel is ``screen.to_pixels(x, y)``; its centre, offset by the screen's
    origin on the virtual desktop, is divided by ``input_scale`` and floored, so the returned
    input point is the one whose physical span covers the target pixel's centre — at scale 1
    it is the pixel itself, at 2 the point holding that 2x2 block, at 1.25/1.5 the point whose
    span contains the centre.
    """
    if not input_scale > 0:
        raise ValueError(f"input_scale must be positive, got {input_scale}")
    px, py = screen.to_pixels(x, y)
    return (
        math.floor((screen.left + px + 0.5) / input_scale),
        math.floor((screen.top + py + 0.5) / input_scale),
    )


def from_input_space(ix: float, iy: float, screen: Screen, input_scale: float = 1.0) -> tuple[float, float]:
    """An OS input point (e.g. the pointer) -> normalised coordinates over ``screen`` (clamped).

    The point's physical span starts at ``ix * input_scale``; the pixel at the span's centre is
    taken, so ``from_input_space(*to_input_space(x, y))`` lands on the same target.
    """
    px = (ix + 0.5) * input_scale - screen.left - 0.5
    py = (iy + 0.5) * input_scale - screen.top - 0.5
    return screen.to_normalised(px, py)


def canonical_combo(combo: str) -> frozenset[str]:
    """A combo as an order-insensitive set of key names with aliases folded (cmd = win = super)."""
    parts = normalise_combo(combo)
    keys = ["+"] if parts == "+" else parts.split("+")
    return frozenset(_ALIASES.get(k, k) for k in keys)


class RateLimiter:
    """At most ``rate`` actions in any window of one second (a sliding-window log, not a token bucket:
    a full bucket plus its refill lets twice the rate through within one second).

    A rate below 1 allows one action per ``1 / rate`` seconds. ``take()`` returns False when over."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"the rate must be positive, got {rate}")
        self.rate = float(rate)
        self.n = max(1, math.floor(self.rate))
        self.window = self.n / self.rate  # seconds in which at most n actions pass (1 s when rate >= 1)
        self._times: deque[float] = deque(maxlen=self.n)
        self._clock = clock

    def take(self) -> bool:
        now = self._clock()
        if len(self._times) == self.n and now - self._times[0] < self.window:
            return False
        self._times.append(now)
        return True


def describe(action: Action) -> str:
    d = action.to_json()
    kind = d.pop("type")
    return kind + (" " + " ".join(f"{k}={v!r}" for k, v in d.items()) if d else "")


def terminal_confirm(action: Action, stream_in=None, stream_out=None) -> bool:
    """Ask on the terminal; refuse (False) whenever stdin is not a TTY."""
    stream_in = stream_in or sys.stdin
    stream_out = stream_out or sys.stderr
    try:
        if not stream_in.isatty():
            return False
        stream_out.write(f"dw: apply {describe(action)}? [y/N] ")
        stream_out.flush()
        answer = stream_in.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")


def needs_confirmation_default(action: Action) -> bool:
    """The default confirmation rule: everything that sends input except pointer moves."""
    return not isinstance(action, Move | Wait | Done)


class Executor:
    """Maps validated actions to OS input through pyautogui, behind the safety rules.

    - ``region``: ``(x0, y0, x1, y1)`` normalised; pointer actions outside it are refused.
    - ``deny_keys``: combos refused whatever the policy says (order and aliases don't matter).
    - ``confirm``: ``callable(action) -> bool`` asked for each action matching ``confirm_when``
      (default: all but moves); False refuses. None asks nothing.
    - ``max_actions_per_second``: at most that many actions in any one second (:class:`RateLimiter`);
      over it, refused. None or 0 turns it off. Waits don't count.
    - ``input_scale``: physical pixels per input unit; None uses :func:`default_input_scale`.
    - ``stop_event``: interrupts a ``wait`` (and a drag or typing in progress) when set.
    - ``backend``: the input module (pyautogui by default; tests pass a fake).
    """

    def __init__(
        self,
        screen: Screen,
        *,
        dry_run: bool = False,
        max_actions_per_second: float | None = 20.0,
        region: tuple[float, float, float, float] | None = None,
        deny_keys: Iterable[str] = DEFAULT_DENY_KEYS,
        confirm: Callable[[Action], bool] | None = None,
        confirm_when: Callable[[Action], bool] = needs_confirmation_default,
        failsafe: bool = True,
        input_scale: float | None = None,
        stop_event: threading.Event | None = None,
        backend: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.screen = screen
        self.dry_run = dry_run
        self.rate = float(max_actions_per_second) if max_actions_per_second else None
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"max_actions_per_second must be positive, got {max_actions_per_second}")
        if region is not None:
            x0, y0, x1, y1 = (float(v) for v in region)
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError(f"region must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {region}")
            region = (x0, y0, x1, y1)
        self.region = region
        self.deny_keys = tuple(deny_keys)
        self._deny = {canonical_combo(c) for c in self.deny_keys}
        self.confirm = confirm
        self.confirm_when = confirm_when
        self.failsafe = failsafe
        self.input_scale = input_scale if input_scale is not None else default_input_scale(screen)
        self.stop_event = stop_event or threading.Event()
        self._backend = backend
        self._clock = clock
        self._limiter = RateLimiter(self.rate, clock) if self.rate is not None else None
        # Every button and key this executor may hold down, in press order: marked before the input
        # is sent and cleared once it is up again, so a failure part-way leaves it here to release.
        self._held_buttons: dict[str, None] = {}
        self._held_keys: dict[str, None] = {}
        self._input_lock = threading.RLock()  # input is sent by one thread at a time (release_all too)
        self.released: list[str] = []  # what release_all let go of, for logs and tests
        self.sent = 0
        self.refused = 0
        self.dry_log: list[str] = []

    # --- backend --------------------------------------------------------------------------
    @property
    def backend(self) -> Any:
        if self._backend is None:
            try:
                import pyautogui
            except Exception as e:  # no display, Wayland, missing Xlib ...
                raise DesktopError(f"cannot load pyautogui for input: {type(e).__name__}: {e}") from e
            pyautogui.PAUSE = 0
            pyautogui.FAILSAFE = self.failsafe
            self._backend = pyautogui
        return self._backend

    def position(self) -> tuple[float, float] | None:
        """The pointer, normalised over the screen (reading it sends no input); None if unknown."""
        try:
            ix, iy = self.backend.position()
        except DesktopError:
            return None
        except Exception:
            return None
        return from_input_space(ix, iy, self.screen, self.input_scale)

    # --- rules ----------------------------------------------------------------------------
    def _points(self, action: Action) -> list[tuple[float, float]]:
        if isinstance(action, Drag):
            return [(action.x, action.y), (action.x2, action.y2)]
        p = action.point
        return [p] if p is not None else []

    def check(self, action: Action) -> None:
        """Raise :class:`ActionRefused` when a rule forbids ``action`` (consumes no rate budget)."""
        if self.region is not None:
            x0, y0, x1, y1 = self.region
            for x, y in self._points(action):
                if not (x0 <= x <= x1 and y0 <= y <= y1):
                    raise ActionRefused(
                        f"{action.type} at ({x:.4f}, {y:.4f}) is outside the allowed region {x0},{y0},{x1},{y1}"
                    )
        if isinstance(action, Key):
            combo = canonical_combo(action.keys)
            if combo in self._deny:
                raise ActionRefused(f"key combo {action.keys!r} is on the deny list")
        if isinstance(action, Type):
            bad = [c for c in action.text if c not in _TYPEABLE]
            if bad:
                raise ActionRefused(f"cannot type {bad[0]!r}: the input backend types ASCII text only")

    def _take_token(self, action: Action) -> None:
        if self._limiter is None or isinstance(action, Wait | Done):
            return
        if not self._limiter.take():
            raise ActionRefused(f"rate limit: more than {self.rate:g} actions per second")

    # --- held input -----------------------------------------------------------------------
    @property
    def held(self) -> list[str]:
        """Buttons and keys this executor may still hold down (``button:left``, ``key:ctrl``)."""
        return [f"button:{b}" for b in self._held_buttons] + [f"key:{k}" for k in self._held_keys]

    def release_all(self) -> list[str]:
        """Let go of every button and key this executor pressed and has not released (any thread).

        Called on every refusal, error, stop and close; errors while releasing (a display that is
        gone) are logged, never raised. Returns what it released."""
        with self._input_lock:
            if not (self._held_buttons or self._held_keys):
                return []
            keys, buttons = list(self._held_keys), list(self._held_buttons)
            self._held_keys.clear()
            self._held_buttons.clear()
            out = []
            g = self._backend
            for k in reversed(keys):
                out.append(f"key:{k}")
                if g is not None:
                    try:
                        g.keyUp(k)
                    except Exception as e:
                        log.warning("could not release key %s: %s: %s", k, type(e).__name__, e)
            for b in buttons:
                out.append(f"button:{b}")
                if g is not None:
                    try:
                        g.mouseUp(button=b)
                    except Exception as e:
                        log.warning("could not release the %s button: %s: %s", b, type(e).__name__, e)
            log.info("released held input: %s", ", ".join(out))
            self.released.extend(out)
            return out

    def _check_stopped(self, action: Action) -> None:
        if self.stop_event.is_set():
            raise DesktopError(f"stopped during {action.type}; held input released")

    # --- apply ----------------------------------------------------------------------------
    def apply(self, action: Action) -> None:
        """Check the rules, then send ``action`` (or only log it in dry-run)."""
        try:
            self.check(action)
            if self.confirm is not None and self.confirm_when(action) and not self.confirm(action):
                raise ActionRefused(f"not confirmed: {describe(action)}")
            self._take_token(action)
        except ActionRefused:
            self.refused += 1
            self.release_all()  # a refusal breaks whatever the policy was holding down
            raise
        if isinstance(action, Done):
            return
        if isinstance(action, Wait):
            self.stop_event.wait(action.seconds)
            return
        if self.dry_run:
            msg = f"dry-run: {describe(action)} -> {self._describe_target(action)}"
            self.dry_log.append(msg)
            log.info(msg)
            return
        g = self.backend
        try:
            with self._input_lock:
                self._send(g, action)
        except BaseException as e:
            self.release_all()  # a failure part-way (or a stop) must not leave anything held
            if not isinstance(e, Exception):
                raise
            if type(e).__name__ == "FailSafeException":
                raise DesktopError(
                    "failsafe: the pointer was moved into a screen corner (pyautogui FAILSAFE); input stopped"
                ) from e
            if isinstance(e, ActionRefused | DesktopError):
                raise
            raise DesktopError(f"input failed for {describe(action)}: {type(e).__name__}: {e}") from e
        self.sent += 1

    def _describe_target(self, action: Action) -> str:
        pts = [self._input_point(x, y) for x, y in self._points(action)]
        return " ".join(f"({ix},{iy})" for ix, iy in pts) if pts else "keyboard"

    def _input_point(self, x: float, y: float) -> tuple[int, int]:
        ix, iy = to_input_space(x, y, self.screen, self.input_scale)
        if self.failsafe:
            # Never let our own move trip the corner failsafe: keep targets one unit off the corners
            # of the primary screen (a person's move there still stops the run).
            try:
                w, h = self.backend.size()
            except Exception:
                return ix, iy
            if (ix, iy) in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):
                ix = 1 if ix == 0 else ix - 1
        return ix, iy

    def _send(self, g: Any, action: Action) -> None:
        if isinstance(action, Move):
            g.moveTo(*self._input_point(action.x, action.y))
        elif isinstance(action, Click):
            ix, iy = self._input_point(action.x, action.y)
            self._held_buttons[action.button] = None
            g.click(ix, iy, clicks=action.count, interval=0.0, button=action.button)
            self._held_buttons.pop(action.button, None)
        elif isinstance(action, MouseDown):
            ix, iy = self._input_point(action.x, action.y)
            self._held_buttons[action.button] = None  # held until a mouse_up, a refusal, an error or a stop
            g.mouseDown(ix, iy, button=action.button)
        elif isinstance(action, MouseUp):
            ix, iy = self._input_point(action.x, action.y)
            g.mouseUp(ix, iy, button=action.button)
            self._held_buttons.pop(action.button, None)
        elif isinstance(action, Drag):
            x0, y0 = self._input_point(action.x, action.y)
            x1, y1 = self._input_point(action.x2, action.y2)
            self._held_buttons[action.button] = None
            g.mouseDown(x0, y0, button=action.button)
            steps = 8  # intermediate motion so toolkits see a drag, not a jump
            for i in range(1, steps + 1):
                self._check_stopped(action)  # a stop mid-drag lets go (apply releases)
                g.moveTo(round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps))
                time.sleep(0.005)
            g.mouseUp(x1, y1, button=action.button)
            self._held_buttons.pop(action.button, None)
        elif isinstance(action, Scroll):
            ix, iy = self._input_point(action.x, action.y)
            g.moveTo(ix, iy)
            if action.dy:
                g.scroll(-action.dy, x=ix, y=iy)  # pyautogui: positive scrolls up; ours: dy > 0 is down
            if action.dx:
                g.hscroll(action.dx, x=ix, y=iy)
        elif isinstance(action, Key):
            keys = [_PYAUTOGUI_KEYS.get(k, k) for k in action.parts]
            for k in keys:
                self._held_keys[k] = None
            if len(keys) == 1:
                g.press(keys[0])
            else:
                g.hotkey(*keys, interval=0.0)
            for k in keys:
                self._held_keys.pop(k, None)
        elif isinstance(action, Type):
            self._held_keys["shift"] = None  # the backend holds shift for capitals and symbols
            for i in range(0, len(action.text), 64):  # a stop interrupts long text between chunks
                if i:
                    self._check_stopped(action)
                g.write(action.text[i:i + 64], interval=0.0)
            self._held_keys.pop("shift", None)
        else:  # pragma: no cover - every Action type is handled above
            raise ActionRefused(f"the executor cannot perform {action.type!r}")
