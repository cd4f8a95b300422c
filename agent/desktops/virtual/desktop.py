"""The built-in virtual desktop: a deterministic, in-process screen that runs one task.

Clock rules (virtual seconds, starting at 0):

- ``observe()`` advances the clock by one frame period (``1 / fps``) and returns a frame
  stamped with the new clock; frame indices count from 0.
- ``apply(action)`` advances the clock by the action's duration: pointer travel at
  ``POINTER_SPEED`` logical points per second, ``CLICK_S`` per click, ``BUTTON_S`` per
  mouse_down / mouse_up, ``KEY_S`` per key combo, ``TYPE_S`` per typed character, ``SCROLL_S``
  per notch, ``wait`` by its seconds, ``done`` instantly.
- Two presses of the same button within ``DOUBLE_CLICK_S`` and ``DOUBLE_CLICK_PT`` of each
  other form a double click, whether they come from one ``click(count=2)`` or two actions.

Frame ownership: ``observe()`` returns a fresh array each time (a copy of the cached screen
with the cursor drawn on it); the caller owns it and may keep or modify it.

Same task, seed, size, scale, fps and the same sequence of calls give byte-identical frames.
"""

from __future__ import annotations

import math
from typing import Any

from agent.desktops import DesktopError
from agent.desktops.virtual.render import Canvas
from agent.desktops.virtual.tasks import TAIL_S, TASKS, Task
from agent.desktops.virtual.themes import resolve_look
from capture import ChangedFrame, Frame, Screen
from policies.actions import Action, Click, Done, Drag, Key, MouseDown, MouseUp, Move, Scroll, Type, Wait

POINTER_SPEED = 2000.0  # logical points per second
CLICK_S = 0.08
BUTTON_S = 0.04
KEY_S = 0.06
TYPE_S = 0.04
SCROLL_S = 0.05
DOUBLE_CLICK_S = 0.5
DOUBLE_CLICK_PT = 4.0


class VirtualDesktop:
    """A virtual screen running one task of :data:`agent.desktops.virtual.TASKS`; implements ``Desktop``.

    ``size`` is the physical screen in pixels, ``scale`` physical pixels per logical point.
    Actions arrive normalised over the physical screen, as everywhere in the runtime.

    ``theme`` and ``font`` (:mod:`agent.desktops.virtual.themes`): a name, ``"mixed"`` (chosen
    from the task and seed), or None (the classic look: the classic theme, the default face at
    13 pt). ``font`` may carry a size, ``"dejavu-sans:14"``; ``font_size`` overrides it.
    Unknown names raise :class:`~agent.errors.UserError`. ``tail``: virtual seconds the desktop
    goes on after a success (:data:`~agent.desktops.virtual.tasks.TAIL_S`).
    """

    def __init__(
        self,
        task: str,
        seed: int = 0,
        size: tuple[int, int] = (1280, 720),
        scale: float = 1.0,
        fps: float = 10.0,
        human_like: bool = False,
        theme: str | None = None,
        font: str | None = None,
        font_size: float | None = None,
        tail: float = TAIL_S,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown virtual task {task!r}; expected one of {', '.join(TASKS)}")
        w, h = int(size[0]), int(size[1])
        if w < 160 or h < 120:
            raise ValueError(f"virtual screen must be at least 160x120, got {w}x{h}")
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.task_name = task
        self.seed = int(seed)
        self.fps = float(fps)
        self.human_like = bool(human_like)
        self.screen = Screen(w, h, 0, 0, float(scale))
        self.look = resolve_look(theme, font, task, self.seed, font_size)
        self._task: Task = TASKS[task](self.seed, self.screen, self.human_like, self.look)
        self.tail = float(tail)
        self._task.tail = self.tail
        self._canvas = Canvas(w, h, self.screen.scale, self.wallpaper, self.look)
        self._cursor_box: tuple[int, int, int, int] | None = None
        self._t = 0.0
        self._index = 0
        self._closed = False
        self._held: set[str] = set()
        self._last_press: tuple[float, float, float, str, int] | None = None  # t, x, y, button, count
        lx, ly = self._task.cursor
        self._px = self._clamp_px(math.floor(lx * self.screen.scale), math.floor(ly * self.screen.scale))
        self._task.pointer_move(*self._logical())

    @property
    def wallpaper(self):
        """This episode's wallpaper gradient (top, bottom colours)."""
        papers = self.look.theme.wallpapers
        return papers[self.seed % len(papers)]

    # -- geometry ------------------------------------------------------------------------------
    def _clamp_px(self, px: int, py: int) -> tuple[int, int]:
        return min(self.screen.width - 1, max(0, px)), min(self.screen.height - 1, max(0, py))

    def _logical(self, px: tuple[int, int] | None = None) -> tuple[float, float]:
        x, y = px or self._px
        s = self.screen.scale
        return (x + 0.5) / s, (y + 0.5) / s

    def _move_to(self, x: float, y: float) -> None:
        """Move the pointer to normalised (x, y), taking pointer-travel time."""
        new = self.screen.to_pixels(x, y)
        if new == self._px:
            return
        (ox, oy), (nx, ny) = self._logical(), self._logical(new)
        self._t += math.hypot(nx - ox, ny - oy) / POINTER_SPEED
        self._px = new
        self._task.pointer_move(nx, ny)

    def _press(self, button: str) -> None:
        x, y = self._logical()
        count = 1
        last = self._last_press
        if (
            last is not None
            and last[3] == button
            and self._t - last[0] <= DOUBLE_CLICK_S
            and math.hypot(x - last[1], y - last[2]) <= DOUBLE_CLICK_PT
        ):
            count = min(3, last[4] + 1)
        self._last_press = (self._t, x, y, button, count)
        self._held.add(button)
        self._task.pointer_down(x, y, button, count)

    def _release(self, button: str) -> None:
        self._held.discard(button)
        self._task.pointer_up(*self._logical(), button)

    # -- Desktop protocol ----------------------------------------------------------------------
    def observe(self) -> Frame:
        """Advance the clock one frame period and return the screen (a fresh array the caller owns),
        as a :class:`~capture.frame.ChangedFrame` saying what was repainted since the previous one."""
        if self._closed:
            raise DesktopError("the virtual desktop is closed")
        self._t += 1.0 / self.fps
        self._task.tick(self._t)
        damage = self._canvas.update(self._task.widgets)
        # What may differ from the previous frame: the repainted boxes and where the cursor was and is
        cursor = self._canvas.cursor_box(self._px)
        changed = None
        if damage is not None and self._index > 0:
            boxes = damage if cursor == self._cursor_box else [*damage, *(b for b in (self._cursor_box, cursor) if b)]
            changed = tuple((x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes)
        self._cursor_box = cursor
        frame = ChangedFrame(self._canvas.snapshot(self._px), round(self._t, 6), self._index, self.screen, changed,
                             id(self))
        self._index += 1
        return frame

    def apply(self, action: Action) -> None:
        """Perform one action, advancing the virtual clock; ignored once the episode is over."""
        if self._closed:
            raise DesktopError("the virtual desktop is closed")
        task = self._task
        if task.finished:
            return
        if isinstance(action, Move):
            self._move_to(action.x, action.y)
        elif isinstance(action, Click):
            self._move_to(action.x, action.y)
            for _ in range(action.count):
                self._press(action.button)
                self._t += CLICK_S / 2
                self._release(action.button)
                self._t += CLICK_S / 2
        elif isinstance(action, MouseDown):
            self._move_to(action.x, action.y)
            self._press(action.button)
            self._t += BUTTON_S
        elif isinstance(action, MouseUp):
            self._move_to(action.x, action.y)
            self._release(action.button)
            self._t += BUTTON_S
        elif isinstance(action, Drag):
            self._move_to(action.x, action.y)
            self._press(action.button)
            self._t += BUTTON_S
            self._move_to(action.x2, action.y2)
            self._release(action.button)
            self._t += BUTTON_S
        elif isinstance(action, Scroll):
            self._move_to(action.x, action.y)
            task.on_scroll(*self._logical(), action.dx, action.dy)
            self._t += SCROLL_S * max(1, abs(action.dx) + abs(action.dy))
        elif isinstance(action, Key):
            task.key(action.keys)
            self._t += KEY_S
        elif isinstance(action, Type):
            task.type_text(action.text)
            self._t += TYPE_S * len(action.text)
        elif isinstance(action, Wait):
            self._t += float(action.seconds)
        elif isinstance(action, Done):
            task.done()
        else:
            raise TypeError(f"not an action: {action!r}")
        task.steps += 1
        task.tick(self._t)

    def now(self) -> float:
        return self._t

    def close(self) -> None:
        self._closed = True

    @property
    def cursor(self) -> tuple[float, float] | None:
        return self.screen.to_normalised(*self._px)

    @property
    def cursor_px(self) -> tuple[int, int]:
        """The pointer's physical pixel (its tip)."""
        return self._px

    @property
    def instruction(self) -> str:
        return self._task.instruction

    @property
    def oracle(self) -> Task:
        return self._task

    @property
    def finished(self) -> bool:
        return self._task.finished

    @property
    def success(self) -> bool | None:
        return self._task.success

    @property
    def reason(self) -> str | None:
        """The outcome: "success", "timeout", "done", or the wrong action's kind; None while undecided.
        A success is decided before the episode finishes (the tail, see :mod:`~agent.desktops.virtual.tasks`)."""
        return self._task.reason

    def info(self) -> dict[str, Any]:
        return {
            "kind": "virtual",
            "task": self.task_name,
            "seed": self.seed,
            "size": [self.screen.width, self.screen.height],
            "scale": self.screen.scale,
            "fps": self.fps,
            "human_like": self.human_like,
            **self.look.info(),
            "tail": self.tail,
        }

    def __enter__(self) -> VirtualDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def desktop_from_info(info: dict[str, Any]) -> VirtualDesktop:
    """Rebuild the desktop described by :meth:`VirtualDesktop.info` (same task, seed, geometry, look
    and tail). A description from before themes has the classic look; one from before the tail
    after success (no ``tail``) ends at success, as those sessions did."""
    if info.get("kind") != "virtual":
        raise ValueError(f"not a virtual desktop description: kind={info.get('kind')!r}")
    size = info.get("size", [1280, 720])
    return VirtualDesktop(
        str(info["task"]),
        seed=int(info.get("seed", 0)),
        size=(int(size[0]), int(size[1])),
        scale=float(info.get("scale", 1.0)),
        fps=float(info.get("fps", 10.0)),
        human_like=bool(info.get("human_like", False)),
        theme=info.get("theme"),
        font=info.get("font"),
        font_size=info.get("font_size"),
        tail=float(info.get("tail", 0.0)),
    )
