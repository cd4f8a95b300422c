"""The Policy protocol and what a policy sees."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from capture import Frame
from policies.actions import Action


@dataclass(slots=True)
class Observation:
    """What a policy sees at one step.

    ``cursor`` is the pointer position in normalised coordinates (None when unknown);
    ``history`` the last few actions applied, oldest first. ``oracle`` is privileged state a
    desktop may expose for expert policies and demos (the virtual desktop's task); learned
    policies must not read it.
    """

    frame: Frame
    instruction: str = ""
    cursor: tuple[float, float] | None = None
    history: Sequence[Action] = field(default_factory=tuple)
    oracle: Any = None


@runtime_checkable
class Policy(Protocol):
    """``reset`` starts an episode; ``act`` returns the actions for this frame (empty = nothing)."""

    name: str

    def reset(self, instruction: str) -> None: ...

    def act(self, observation: Observation) -> list[Action]: ...

    # Optional: ``retry(attempt)``, called after ``reset`` when a workflow step is tried again
    # (attempt 2, 3, ...) because the last attempt failed its check: a deterministic policy that
    # would repeat the failed attempt may look more carefully (the pixel policy: a second look).


class PolicyError(RuntimeError):
    """A policy cannot be built or cannot act in this setting."""
