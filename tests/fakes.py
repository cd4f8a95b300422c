"""A minimal deterministic desktop for testing the loop and sessions without the virtual desktop."""

from __future__ import annotations

import numpy as np

from capture import Frame, Screen
from policies.actions import Action, Click


class FakeDesktop:
    """A gradient with a square that moves to wherever the last click landed; virtual clock."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 10.0, finish_after_clicks: int | None = None):
        self.screen = Screen(width, height)
        self.fps = fps
        self._t = 0.0
        self._index = 0
        self.applied: list[Action] = []
        self._pos = (0.5, 0.5)
        self.finish_after_clicks = finish_after_clicks
        yy, xx = np.mgrid[0:height, 0:width]
        self._bg = np.zeros((height, width, 4), np.uint8)
        self._bg[..., 0] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
        self._bg[..., 1] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
        self._bg[..., 2] = 96
        self._bg[..., 3] = 255

    def observe(self) -> Frame:
        self._t += 1.0 / self.fps
        px = self._bg.copy()
        cx, cy = int(self._pos[0] * self.screen.width), int(self._pos[1] * self.screen.height)
        px[max(0, cy - 10): cy + 10, max(0, cx - 10): cx + 10, :3] = 255
        f = Frame(px, round(self._t, 6), self._index, self.screen)
        self._index += 1
        return f

    def apply(self, action: Action) -> None:
        self.applied.append(action)
        if action.point is not None:
            self._pos = action.point
        self._t += 0.05

    def now(self) -> float:
        return round(self._t, 6)

    def close(self) -> None:
        pass

    @property
    def cursor(self):
        return self._pos

    @property
    def instruction(self) -> str:
        return "click around"

    @property
    def oracle(self):
        return None

    @property
    def finished(self) -> bool:
        clicks = sum(isinstance(a, Click) for a in self.applied)
        return self.finish_after_clicks is not None and clicks >= self.finish_after_clicks

    @property
    def success(self):
        return True if self.finished else None

    def info(self) -> dict:
        return {"kind": "fake", "size": [self.screen.width, self.screen.height]}
