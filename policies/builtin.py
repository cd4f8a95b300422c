"""Built-in policies that need no model: the scripted expert and a seeded random baseline."""

from __future__ import annotations

import random as _random

from policies.actions import Action, Click, Done, Key, Move, Scroll, Type, Wait
from policies.base import Observation, PolicyError


class ScriptedPolicy:
    """Drives a task from its ground truth.

    It asks the desktop's oracle (the virtual desktop's current task) for the expert's next
    actions, so it works wherever a task exposes ``expert_actions()``: the virtual desktop live,
    and replays of virtual-desktop sessions, which rebuild the task from the session.
    """

    name = "scripted"

    def reset(self, instruction: str) -> None:
        self.instruction = instruction

    def act(self, observation: Observation) -> list[Action]:
        oracle = observation.oracle
        if oracle is None or not hasattr(oracle, "expert_actions"):
            raise PolicyError(
                "the scripted policy needs a task with ground truth (the virtual desktop, or a replay "
                "of a virtual-desktop session); this desktop has none"
            )
        return list(oracle.expert_actions())


class RandomPolicy:
    """Uniformly random but valid actions, from a seed: a floor for every benchmark."""

    name = "random"
    WORDS = ("hello", "ok", "search", "42", "yes")
    KEYS = ("enter", "tab", "escape", "backspace", "up", "down")

    def __init__(self, seed: int = 0, rate: float = 1.0):
        self.seed = seed
        self.rate = rate
        self.rng = _random.Random(seed)

    def reset(self, instruction: str) -> None:
        self.rng = _random.Random(self.seed)

    def act(self, observation: Observation) -> list[Action]:
        r = self.rng
        if r.random() > self.rate:
            return []
        x, y = r.random(), r.random()
        kind = r.choices(("click", "move", "key", "type", "scroll", "wait", "done"), (8, 4, 2, 2, 1, 1, 0.1))[0]
        if kind == "click":
            return [Click(x, y, count=r.choice((1, 1, 1, 2)))]
        if kind == "move":
            return [Move(x, y)]
        if kind == "key":
            return [Key(r.choice(self.KEYS))]
        if kind == "type":
            return [Type(r.choice(self.WORDS))]
        if kind == "scroll":
            return [Scroll(x, y, dy=r.choice((-3, -1, 1, 3)))]
        if kind == "wait":
            return [Wait(0.0)]
        return [Done()]
