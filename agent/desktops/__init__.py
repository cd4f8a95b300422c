"""The Desktop protocol: frames in, actions out. The agent loop is written once against it.

The desktops live beside it, one module or sub-package each: :mod:`~agent.desktops.live` (the real
screen, input through :mod:`~agent.desktops.executor` under :mod:`~agent.desktops.safety`;
:mod:`~agent.desktops.xvfb` gives it a private X server), :mod:`~agent.desktops.virtual` (the
built-in rendered desktop and its tasks), :mod:`~agent.desktops.miniwob` (MiniWoB++ in Chromium)
and :mod:`~agent.desktops.remote` (a desktop served by ``dw serve``, over websockets).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from capture import Frame, Screen
from policies.actions import Action


class DesktopError(RuntimeError):
    """The desktop cannot go on (display gone, connection lost, session exhausted)."""


class ActionRefused(RuntimeError):
    """The desktop declined one action (safety rule, region, rate limit); the loop goes on."""


@runtime_checkable
class Desktop(Protocol):
    """Live screens, the virtual desktop, replayed sessions and remote desktops implement this.

    - ``screen``: the geometry frames are captured at (physical pixels, scale).
    - ``observe()``: the current frame, its ``t`` on the session clock.
    - ``apply(action)``: perform one validated action (normalised coordinates); may raise
      :class:`ActionRefused` for that action alone, or :class:`DesktopError` when it cannot go on.
    - ``now()``: seconds on the session clock (virtual desktops run a virtual clock).
    - ``cursor``: the pointer in normalised coordinates, or None when unknown.
    - ``instruction``: the task's instruction, "" when the desktop has none.
    - ``oracle``: privileged task state for expert policies (None outside the virtual desktop).
    - ``finished`` / ``success``: whether the episode is over and how it ended (None: unknown).
    - ``info()``: a JSON-able description for ``session.json`` (task name, seed, ...).
    """

    screen: Screen

    def observe(self) -> Frame: ...

    def apply(self, action: Action) -> None: ...

    def now(self) -> float: ...

    def close(self) -> None: ...

    @property
    def cursor(self) -> tuple[float, float] | None: ...

    @property
    def instruction(self) -> str: ...

    @property
    def oracle(self) -> Any: ...

    @property
    def finished(self) -> bool: ...

    @property
    def success(self) -> bool | None: ...

    def info(self) -> dict: ...
