"""Record a human demonstration: live frames plus the person's keyboard and mouse as Actions.

Frames come from :class:`capture.live.ScreenSource`; input from pynput listeners on their own
threads, each event stamped on arrival with the source's clock (the clock frames carry) and
queued. The main thread grabs frames and turns queued input into ``source="human"`` events,
coordinates normalised at capture time over the captured screen:

- press + release at the same spot within ``click_seconds`` -> ``click``; a second (third)
  such click within ``double_click_seconds`` -> ``click count=2`` (3);
- otherwise ``mouse_down`` / ``mouse_up`` (a drag);
- wheel -> ``scroll`` (dy > 0 down, dx > 0 right);
- printable keys without ctrl/alt/super -> coalesced into ``type`` (until a pause of
  ``text_pause`` s, a special key or any mouse input);
- special keys and combos -> ``key`` (``enter``, ``ctrl+shift+t``); the stop hotkey is not recorded;
- the done hotkey (default ``ctrl+alt+shift+d``) -> ``done`` at that moment, after everything
  pending; it is not recorded as a key and ends the recording (reason ``done``);
- pointer motion -> ``move``, at most ``move_hz`` per second (0: no ``move`` at all). A move is
  held until the pointer goes on from it, so the point the pointer rests at before a click,
  press, release or scroll is not also written as a ``move``: that action carries the point.

Each event's ``frame`` is the last frame captured at or before its ``t``. Recording ends on
the done hotkey, Ctrl+C (SIGINT), SIGTERM, the stop hotkey or ``max_seconds``; the session is
always closed with the reason. ``session.json`` holds ``cursor0``, the pointer at the start
(normalised over the recorded screen), unless the pointer was off that screen.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import queue
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agent.desktops.executor import canonical_combo, default_input_scale, from_input_space
from agent.desktops.safety import DEFAULT_STOP_HOTKEY, StopHotkey, hotkey_to_pynput, stop_on_signals
from capture import Screen
from capture.live import CaptureError, ScreenSource
from policies.actions import (
    MAX_SCROLL,
    MAX_TEXT,
    Action,
    ActionError,
    Click,
    Done,
    Key,
    MouseDown,
    MouseUp,
    Move,
    Scroll,
    Type,
    normalise_combo,
)

log = logging.getLogger("digital_worker.humanrec")

_MODS = {"ctrl": "ctrl", "ctrl_l": "ctrl", "ctrl_r": "ctrl", "alt": "alt", "alt_l": "alt", "alt_r": "alt",
         "alt_gr": "alt", "shift": "shift", "shift_l": "shift", "shift_r": "shift", "cmd": "super",
         "cmd_l": "super", "cmd_r": "super"}
_NAMED = {"enter": "enter", "tab": "tab", "backspace": "backspace", "delete": "delete", "esc": "escape",
          "insert": "insert", "home": "home", "end": "end", "page_up": "pageup", "page_down": "pagedown",
          "up": "up", "down": "down", "left": "left", "right": "right", "caps_lock": "capslock",
          "num_lock": "numlock", "scroll_lock": "scrolllock", "print_screen": "printscreen", "pause": "pause",
          "menu": "menu", "media_volume_up": "volumeup", "media_volume_down": "volumedown",
          "media_volume_mute": "volumemute", **{f"f{i}": f"f{i}" for i in range(1, 25)}}
_UNSHIFT = dict(zip('~!@#$%^&*()_+{}|:"<>?', "`1234567890-=[]\\;',./", strict=True))
_MOD_ORDER = ("ctrl", "alt", "shift", "super")
DEFAULT_DONE_HOTKEY = "ctrl+alt+shift+d"


def key_name(key) -> tuple[str, str] | None:
    """A pynput key -> ("mod", name) | ("named", name) | ("char", c); None when unusable."""
    name = getattr(key, "name", None)
    if name is not None:  # a pynput Key member
        if name in _MODS:
            return "mod", _MODS[name]
        if name == "space":
            return "char", " "
        if name in _NAMED:
            return "named", _NAMED[name]
        return None
    char = getattr(key, "char", None)
    if isinstance(char, str) and len(char) == 1 and 32 <= ord(char) < 127:
        return "char", char
    return None


@dataclass
class RecordResult:
    path: str
    reason: str
    frames: int
    dropped: int
    events: int
    duration: float
    counts: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"session": self.path, "reason": self.reason, "frames": self.frames, "dropped": self.dropped,
                "events": self.events, "duration": round(self.duration, 3), "counts": self.counts}


class HumanInput:
    """Turns raw, time-stamped input into human Actions (the state machine, no threads, no X).

    Feed it with :meth:`move`, :meth:`press`, :meth:`release`, :meth:`scroll`, :meth:`key_down`,
    :meth:`key_up` (physical input-space coordinates, ``t`` on the session clock), call
    :meth:`tick` now and then and :meth:`flush` at the end; ``emit(t, action)`` gets the Actions in
    non-decreasing ``t``.

    ``ignore_combo`` (the stop hotkey) is dropped; ``done_combo`` emits ``done`` after everything
    pending, calls ``on_done()`` and ends the demonstration: later input is ignored
    (:attr:`finished`). ``move_hz`` <= 0 records no ``move``.
    """

    def __init__(self, screen: Screen, emit, *, input_scale: float = 1.0, move_hz: float = 10.0,
                 click_seconds: float = 0.5, double_click_seconds: float = 0.4, slop_px: float = 3.0,
                 text_pause: float = 1.0, ignore_combo: str | None = None, done_combo: str | None = None,
                 on_done=None):
        self.screen, self._emit, self.input_scale = screen, emit, input_scale
        self.move_interval = 1.0 / move_hz if move_hz > 0 else math.inf
        self.click_seconds, self.double_click_seconds = click_seconds, double_click_seconds
        self.slop, self.text_pause = slop_px, text_pause
        self.ignore = canonical_combo(ignore_combo) if ignore_combo else None
        self.done = canonical_combo(done_combo) if done_combo else None
        self.on_done = on_done
        self.finished = False
        self.mods: set[str] = set()
        self._move: tuple[float, float, float] | None = None
        self._last_move_t = -1e9
        self._press: dict | None = None
        self._click: dict | None = None
        self._text: list = []  # [t_first, chars, t_last]
        self._last_t = 0.0
        self.counts: dict[str, int] = {}

    # --- helpers ----------------------------------------------------------------------------
    def norm(self, x: float, y: float) -> tuple[float, float]:
        return from_input_space(x, y, self.screen, self.input_scale)

    def out(self, t: float, action: Action) -> None:
        t = max(t, self._last_t)
        self._last_t = t
        self.counts[action.type] = self.counts.get(action.type, 0) + 1
        self._emit(t, action)

    def _near(self, a: dict, x: float, y: float) -> bool:
        return abs(a["x"] - x) <= self.slop and abs(a["y"] - y) <= self.slop

    def flush_move(self) -> None:
        if self._move is not None:
            t, x, y = self._move
            self._move = None
            self._last_move_t = t
            self.out(t, Move(*self.norm(x, y)))

    def flush_text(self) -> None:
        if self._text:
            t, chars, _ = self._text
            self._text = []
            self.out(t, Type("".join(chars)))

    def flush_click(self) -> None:
        if self._click is not None:
            c, self._click = self._click, None
            self.out(c["t"], Click(*self.norm(c["x"], c["y"]), button=c["button"], count=c["count"]))

    def flush_press(self) -> None:
        p = self._press
        if p is not None and not p["down"]:
            p["down"] = True
            self.out(p["t"], MouseDown(*self.norm(p["x"], p["y"]), button=p["button"]))

    def flush(self) -> None:
        """Everything pending, in time order."""
        pending = []
        if self._move is not None:
            pending.append((self._move[0], self.flush_move))
        if self._text:
            pending.append((self._text[0], self.flush_text))
        if self._click is not None:
            pending.append((self._click["t"], self.flush_click))
        if self._press is not None and not self._press["down"]:
            pending.append((self._press["t"], self.flush_press))
        for _, fn in sorted(pending, key=lambda p: p[0]):
            fn()

    def _drop_move_at(self, x: float, y: float) -> None:
        """Forget the held move when it is where a pointer action happens (the action has the point)."""
        m = self._move
        if m is not None and abs(m[1] - x) <= self.slop and abs(m[2] - y) <= self.slop:
            self._move = None

    def finish(self, t: float) -> None:
        """The person says the task is done: everything pending, then ``done``; nothing after it."""
        if self.finished:
            return
        self.flush()
        self.out(t, Done())
        self.finished = True
        if self.on_done is not None:
            self.on_done()

    # --- input ------------------------------------------------------------------------------
    def move(self, t: float, x: float, y: float) -> None:
        if self.finished:
            return
        p, c = self._press, self._click
        if p is not None and not p["down"] and self._near(p, x, y):
            return  # jitter while a button is down
        if c is not None and p is None and self._near(c, x, y):
            return  # jitter between the clicks of a double click
        if self._text or c is not None or (p is not None and not p["down"]):
            self.flush()
        if self.move_interval == math.inf:
            return  # move_hz 0: no moves
        # The held move is written once the pointer has gone on from it (so the point a click
        # then lands on is not written twice), and only ``move_interval`` after the last one.
        m = self._move
        if m is not None and m[0] - self._last_move_t >= self.move_interval:
            self.flush_move()
        self._move = (t, x, y)

    def press(self, t: float, x: float, y: float, button: str) -> None:
        if self.finished:
            return
        self._drop_move_at(x, y)
        c = self._click
        if (c is not None and c["button"] == button and self._near(c, x, y) and c["count"] < 3
                and t - c["t_release"] <= self.double_click_seconds):
            self._move = None
            if self._text:
                self.flush_text()
            self._press = {"t": t, "x": x, "y": y, "button": button, "down": False, "merge": True}
            return
        self.flush()
        self._press = {"t": t, "x": x, "y": y, "button": button, "down": False, "merge": False}

    def release(self, t: float, x: float, y: float, button: str) -> None:
        if self.finished:
            return
        self._drop_move_at(x, y)
        p = self._press
        if p is None or p["button"] != button:
            self.flush()
            self.out(t, MouseUp(*self.norm(x, y), button=button))
            return
        self._press = None
        if not p["down"] and t - p["t"] <= self.click_seconds and self._near(p, x, y):
            if p["merge"] and self._click is not None:
                self._click["count"] += 1
                self._click["t_release"] = t
            else:
                self.flush()
                self._click = {"t": p["t"], "x": p["x"], "y": p["y"], "button": button, "count": 1, "t_release": t}
            return
        if not p["down"]:
            self.flush_click()
            self.out(p["t"], MouseDown(*self.norm(p["x"], p["y"]), button=button))
        self.flush()
        self.out(t, MouseUp(*self.norm(x, y), button=button))

    def scroll(self, t: float, x: float, y: float, dx: float, dy: float) -> None:
        if self.finished:
            return
        self._drop_move_at(x, y)
        self.flush()
        clip = lambda v: max(-MAX_SCROLL, min(MAX_SCROLL, int(round(v))))  # noqa: E731
        sdx, sdy = clip(dx), clip(-dy)  # pynput: dy > 0 is up; ours: dy > 0 is down
        if sdx or sdy:
            self.out(t, Scroll(*self.norm(x, y), dx=sdx, dy=sdy))

    def key_down(self, t: float, kind: str, name: str) -> None:
        if self.finished:
            return
        if kind == "mod":
            self.mods.add(name)
            return
        combo = frozenset([*self.mods, _combo_key(kind, name)])
        if self.done is not None and combo == self.done:
            self.finish(t)
            return
        if self.ignore is not None and combo == self.ignore:
            return
        combo_mods = self.mods - {"shift"}
        if kind == "char" and not combo_mods:
            if self._text and (t - self._text[2] > self.text_pause or len(self._text[1]) >= MAX_TEXT):
                self.flush_text()
            if not self._text:
                self.flush()
                self._text = [t, [], t]
            self._text[1].append(name)
            self._text[2] = t
            return
        parts = [m for m in _MOD_ORDER if m in self.mods] + [_combo_key(kind, name)]
        self.flush()
        try:
            action = Key("+".join(parts))
        except ActionError as e:
            log.info("unrecordable key %s: %s", "+".join(parts), e)
            return
        self.out(t, action)

    def key_up(self, t: float, kind: str, name: str) -> None:
        if kind == "mod":
            self.mods.discard(name)

    def tick(self, now: float) -> None:
        """Emit what can no longer change (called with the current session time).

        A held move is not among them: the pointer may rest there and then click."""
        if self._text and now - self._text[2] > self.text_pause:
            self.flush_text()
        if self._click is not None and self._press is None and now - self._click["t_release"] > self.double_click_seconds:
            self.flush_click()
        p = self._press
        if p is not None and not p["down"] and now - p["t"] > self.click_seconds:
            if not p["merge"]:
                self.flush_click()
                self.flush_press()


def _combo_key(kind: str, name: str) -> str:
    """The key's name in a combo: a char unshifted and lower-case, space as ``space``."""
    if kind == "char":
        name = _UNSHIFT.get(name, name.lower())
        return "space" if name == " " else name
    return name


def _button_name(button) -> str:
    name = getattr(button, "name", str(button))
    return name if name in ("left", "right", "middle") else "left"


def check_hotkeys(stop_hotkey: str | None, done_hotkey: str | None) -> None:
    """ValueError (a one-line reason) unless both hotkeys can be global hotkeys and differ."""
    if stop_hotkey:
        hotkey_to_pynput(stop_hotkey)
    if done_hotkey:
        try:
            hotkey_to_pynput(done_hotkey)
        except ValueError as e:
            raise ValueError(str(e).replace("stop hotkey", "done hotkey")) from None
        if stop_hotkey and canonical_combo(stop_hotkey) == canonical_combo(done_hotkey):
            raise ValueError(f"the done hotkey and the stop hotkey are both {normalise_combo(done_hotkey)}; "
                             "give them different keys")


def cursor_start(ix: float, iy: float, screen: Screen, input_scale: float = 1.0) -> list[float] | None:
    """The pointer at input point (ix, iy) as ``cursor0``: [x, y] normalised over ``screen``;
    None when the pointer is not on that screen (another monitor)."""
    px = (ix + 0.5) * input_scale - screen.left
    py = (iy + 0.5) * input_scale - screen.top
    if not (0 <= px <= screen.width and 0 <= py <= screen.height):
        return None
    return [round(v, 6) for v in from_input_space(ix, iy, screen, input_scale)]


def _pointer_position(mouse) -> tuple[float, float] | None:
    try:
        pos = mouse.Controller().position
    except Exception as e:  # noqa: BLE001 - the start cursor is a nicety, never a reason not to record
        log.info("cannot read the pointer position: %s", e)
        return None
    if pos is None or len(pos) != 2 or not all(isinstance(v, int | float) for v in pos):
        return None
    return float(pos[0]), float(pos[1])


def record_human(
    out_dir: str | Path,
    monitor: int = 1,
    fps: float = 10,
    instruction: str = "",
    stop_hotkey: str | None = DEFAULT_STOP_HOTKEY,
    max_seconds: float | None = None,
    *,
    scale: float | None = None,
    move_hz: float = 10.0,
    done_hotkey: str | None = DEFAULT_DONE_HOTKEY,
    on_ready=None,
) -> RecordResult:
    """Record a person at the screen into a session at ``out_dir`` until stopped (see module doc).

    ``on_ready()`` is called once the input listeners and the stop hotkey run and the first frame
    is written: input from then on is recorded. A bad hotkey raises ValueError before anything
    starts; input that cannot be listened to raises :class:`CaptureError`.
    """
    from agent.sessions.format import SessionRecorder

    check_hotkeys(stop_hotkey, done_hotkey)
    if not move_hz >= 0:
        raise ValueError(f"move_hz must be 0 or more, got {move_hz:g}")
    try:
        from pynput import keyboard, mouse
    except ImportError as e:
        raise CaptureError(f"cannot listen to keyboard and mouse: {e}".splitlines()[0]) from None

    source = ScreenSource(monitor=monitor, fps=fps, scale=scale)
    screen = source.screen
    input_scale = default_input_scale(screen)
    info = {"kind": "live", "monitor": monitor, "display": os.environ.get("DISPLAY", ""),
            "platform": sys.platform, "scale": screen.scale, "input_scale": input_scale,
            "stop_hotkey": stop_hotkey, "done_hotkey": done_hotkey, "move_hz": move_hz, "human": True}
    pos = _pointer_position(mouse)
    cursor0 = cursor_start(*pos, screen, input_scale) if pos is not None else None
    try:
        recorder = SessionRecorder(out_dir, screen, fps, instruction=instruction, policy="human", desktop=info,
                                   extra={"cursor0": cursor0} if cursor0 is not None else None)
    except BaseException:
        source.close()
        raise
    q: queue.Queue = queue.Queue()
    now = source.now
    stop_reason: list[str] = []

    def request_stop(reason: str) -> None:
        if not stop_reason:
            stop_reason.append(reason)

    frame_ts: list[float] = []

    def emit(t: float, action: Action) -> None:
        frame = bisect.bisect_right(frame_ts, t) - 1
        recorder.add_event(t, "human", action, frame=frame)

    human = HumanInput(screen, emit, input_scale=input_scale, move_hz=move_hz, ignore_combo=stop_hotkey,
                       done_combo=done_hotkey, on_done=lambda: request_stop("done"))
    mouse_l = mouse.Listener(
        on_move=lambda x, y, *a: q.put((now(), "move", (x, y))),
        on_click=lambda x, y, b, pressed, *a: q.put((now(), "press" if pressed else "release", (x, y, _button_name(b)))),
        on_scroll=lambda x, y, dx, dy, *a: q.put((now(), "scroll", (x, y, dx, dy))),
    )
    key_l = keyboard.Listener(
        on_press=lambda k, *a: q.put((now(), "key_down", key_name(k))),
        on_release=lambda k, *a: q.put((now(), "key_up", key_name(k))),
    )
    hotkey = StopHotkey(stop_hotkey, request_stop) if stop_hotkey else None
    reason = "stopped"

    def drain() -> None:
        batch = []
        while True:
            try:
                batch.append(q.get_nowait())
            except queue.Empty:
                break
        # two listener threads feed the queue: put their input back in time order
        for t, kind, data in sorted(batch, key=lambda item: item[0]):
            if human.finished:
                return  # input after the done hotkey is not part of the demonstration
            if kind == "move":
                human.move(t, *data)
            elif kind == "press":
                human.press(t, *data)
            elif kind == "release":
                human.release(t, *data)
            elif kind == "scroll":
                human.scroll(t, *data)
            elif kind in ("key_down", "key_up") and data is not None:
                getattr(human, kind)(t, *data)

    try:
        with stop_on_signals(request_stop, (signal.SIGINT, signal.SIGTERM)):
            for listener in (mouse_l, key_l):
                listener.daemon = True
                listener.start()
                listener.wait()
            if hotkey is not None:
                try:
                    hotkey.start()
                except RuntimeError as e:
                    raise CaptureError(str(e)) from None
            recorder.add_event(now(), "system", event="start", fps=fps, screen=screen.to_json())
            ready = False
            while not stop_reason:
                if max_seconds is not None and now() >= max_seconds:
                    request_stop("max-seconds")
                    break
                try:
                    frame = source.grab()
                except CaptureError as e:
                    request_stop(f"capture-error: {e}")
                    break
                recorder.add_frame(frame)
                frame_ts.append(frame.t)
                drain()
                human.tick(now())
                if not ready:
                    ready = True
                    if on_ready is not None:
                        on_ready()
            reason = stop_reason[0] if stop_reason else "stopped"
    except KeyboardInterrupt:
        reason = "interrupted"
    except BaseException as e:
        reason = f"error: {type(e).__name__}: {e}"
        raise
    finally:
        for listener in (mouse_l, key_l):
            try:
                listener.stop()
            except Exception:
                pass
        if hotkey is not None:
            hotkey.stop()
        try:
            drain()
            human.flush()
        except Exception as e:  # never lose the session over a late event
            log.warning("dropping late input: %s", e)
        if human.finished and not reason.startswith(("error", "capture-error")):
            reason = "done"  # the done hotkey, even when a signal or the stop hotkey came in the same frame
        n_events = sum(human.counts.values())
        recorder.add_event(max(now(), human._last_t), "system", event="stop", reason=reason)
        recorder.close(reason, human_events=n_events, dropped_frames=source.dropped)
        source.close()
    return RecordResult(str(out_dir), reason, recorder.frames, source.dropped, n_events, now(), dict(human.counts))
