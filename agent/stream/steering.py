"""Steering the in-process policy of ``dw serve --policy`` from a controller (docs/protocol.md, ``policy``).

:class:`PolicyControl` holds the switches a controller may flip: ``paused`` (the policy is asked for
nothing and what it returns is dropped) and ``instruction`` (the text the policy is given instead of
the desktop's own; ``""`` gives the desktop's back). :class:`SteeredPolicy` wraps the real policy and
reads them on every frame. Any thread may read or change them; the server broadcasts the changes.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from policies.actions import MAX_TEXT, Action

MAX_INSTRUCTION = MAX_TEXT  # characters


class PolicyControl:
    """The switches of one in-process policy. ``listener`` (set by the server) is called, from the
    thread that made the change, when the policy stops on its own."""

    def __init__(self, name: str):
        self.name = str(name)
        self._lock = threading.Lock()
        self.paused = False
        self.instruction = ""  # "" = the desktop's own instruction
        self.serial = 0  # bumped on every instruction change: the policy starts afresh
        self.running = True
        self.reason = ""  # why it stopped ("done", "finished", ...)
        self.listener: Callable[[], None] | None = None

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"name": self.name, "running": self.running, "paused": self.paused,
                    "instruction": self.instruction, "reason": self.reason}

    def update(self, paused: bool | None = None, instruction: str | None = None) -> None:
        """Change the switches (a controller's request; the server announces the change itself)."""
        with self._lock:
            if paused is not None:
                self.paused = bool(paused)
            if instruction is not None and instruction != self.instruction:
                self.instruction = instruction
                self.serial += 1

    def finish(self, reason: str) -> None:
        """The policy's run ended (the runner's thread)."""
        with self._lock:
            self.running, self.reason = False, str(reason)
        if self.listener is not None:
            self.listener()

    def snapshot(self) -> tuple[bool, str, int]:
        with self._lock:
            return self.paused, self.instruction, self.serial


def check_instruction(value: Any) -> str:
    """A controller's instruction text, or ValueError saying what is wrong with it."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_INSTRUCTION:
        raise ValueError(f"is {len(value)} characters, more than the limit of {MAX_INSTRUCTION}")
    bad = [c for c in value if (ord(c) < 32 and c not in "\t\n") or ord(c) == 127]
    if bad:
        raise ValueError(f"contains control character {bad[0]!r}")
    return value.strip()


class SteeredPolicy:
    """A policy that obeys a :class:`PolicyControl`: while paused it returns nothing (and drops what a
    step that began before the pause returns); a new instruction resets it with that text."""

    def __init__(self, policy: Any, control: PolicyControl):
        self.policy = policy
        self.control = control
        self.name = getattr(policy, "name", "policy")
        self._serial = -1
        self._given = ""

    def reset(self, instruction: str) -> None:
        self._given = instruction
        _paused, text, self._serial = self.control.snapshot()
        self.policy.reset(text or instruction)

    def act(self, observation: Any) -> list[Action]:
        paused, text, serial = self.control.snapshot()
        if paused:
            return []
        if serial != self._serial:
            self._serial = serial
            self.policy.reset(text or observation.instruction or self._given)
        if text:
            observation = dataclasses.replace(observation, instruction=text)
        actions = self.policy.act(observation)
        if self.control.snapshot()[0]:  # paused while it thought: nothing it chose is performed
            return []
        return actions
