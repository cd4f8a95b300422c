"""``ServedDesktop``: the served desktop seen from inside the server's process (``dw serve --policy``).

It has the remote desktop's semantics without a socket: ``observe()`` returns the newest frame the
server captured after the last applied action; ``apply()`` goes through the server, so viewers see
the action in their overlay. Any thread but the server's event loop may call it.
"""

from __future__ import annotations

from typing import Any

from agent.desktops import DesktopError
from capture import Frame
from policies.actions import Action


class _Oracle:
    def __init__(self, server: Any):
        self._server = server

    def expert_actions(self) -> list[Action]:
        return self._server.expert_local()


class ServedDesktop:
    def __init__(self, server: Any, frame_timeout: float = 10.0):
        self.server = server
        self.screen = server.desktop.screen
        self.frame_timeout = frame_timeout
        self._min_index = 0
        self._returned = -1
        self._closed = False
        server.hold(True)

    def observe(self) -> Frame:
        if self._closed:
            raise DesktopError("the served desktop is closed")
        frame, seq = self.server.wait_frame(max(self._min_index, self._returned + 1), self.frame_timeout)
        self._returned = seq
        return frame

    def apply(self, action: Action) -> None:
        if self._closed:
            raise DesktopError("the served desktop is closed")
        state = self.server.apply_local(action)
        self._min_index = max(self._min_index, int(state["frame"]))

    def now(self) -> float:
        return float(self.server.state.get("t", 0.0))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.server.hold(False)

    @property
    def cursor(self) -> tuple[float, float] | None:
        c = self.server.state.get("cursor")
        return tuple(c) if c else None

    @property
    def instruction(self) -> str:
        return self.server.state.get("instruction", "")

    @property
    def oracle(self) -> Any:
        return _Oracle(self.server) if self.server.state.get("expert") else None

    @property
    def finished(self) -> bool:
        return bool(self.server.state.get("finished", False))

    @property
    def success(self) -> bool | None:
        return self.server.state.get("success")

    def info(self) -> dict:
        return {"kind": "served", "server": self.server.desktop.info() if hasattr(self.server.desktop, "info") else {}}
