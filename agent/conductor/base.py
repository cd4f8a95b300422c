"""The conductor interface (System 2 above the fast policy) and the scripted workflow conductor.

``next_step(goal, frames, history) -> Instruction | Finish``: given the goal (a workflow filled
from one row, or a free-text goal), the last few frames and what happened so far, say what the
fast policy does next, or that the work is over. The :class:`~agent.conductor.director.Director`
runs the answer as a step, confirms it (the step's check, or the fast policy's ``done``),
retries it and enforces the workflow's order whichever conductor answered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent.conductor.workflow import Workflow
from capture import Frame


@dataclass(frozen=True)
class Goal:
    """What the run must achieve: a workflow filled from one row, or a free-text goal."""

    text: str
    workflow: Workflow | None = None


@dataclass(frozen=True)
class Instruction:
    """Run this instruction next. ``step`` is the workflow step it runs (1-based; its checks,
    timeout and retries apply), or None for a free instruction (confirmed by the policy's done)."""

    text: str
    step: int | None = None
    why: str = ""


@dataclass(frozen=True)
class Finish:
    """The work is over: done (``success``) or given up (``reason``)."""

    success: bool
    reason: str = ""


Decision = Instruction | Finish


@dataclass
class StepRecord:
    """One attempt at one instruction, as the conductor is told about it."""

    instruction: str
    step: int | None
    attempt: int
    outcome: str = "running"  # confirmed | failed | refused | running | broken (a later step undid it)
    detail: str = ""
    t_start: float = 0.0
    t_end: float | None = None

    def to_json(self) -> dict:
        return {"instruction": self.instruction, "step": self.step, "attempt": self.attempt, "outcome": self.outcome,
                "detail": self.detail, "t_start": round(self.t_start, 3),
                "t_end": None if self.t_end is None else round(self.t_end, 3)}


class ConductorError(RuntimeError):
    """The conductor could not answer (a model's reply without a decision, an endpoint error)."""


@runtime_checkable
class Conductor(Protocol):
    """``threaded``: its calls may take long (a model), so the loop runs them off its thread."""

    name: str
    threaded: bool

    def next_step(self, goal: Goal, frames: Sequence[Frame], history: Sequence[StepRecord]) -> Decision: ...


def confirmed_steps(history: Sequence[StepRecord]) -> set[int]:
    """The workflow steps whose latest record is a confirmation (a ``keep`` step a later step broke
    is no longer confirmed)."""
    last = {r.step: r.outcome for r in history if r.step is not None and r.outcome != "refused"}
    return {step for step, outcome in last.items() if outcome == "confirmed"}


class WorkflowConductor:
    """The scripted conductor: the workflow's steps in order, each until it is confirmed."""

    name = "workflow"
    threaded = False

    def next_step(self, goal: Goal, frames: Sequence[Frame], history: Sequence[StepRecord]) -> Decision:
        wf = goal.workflow
        if wf is None:
            raise ConductorError("the workflow conductor needs a workflow (--workflow FILE)")
        done = confirmed_steps(history)
        for s in wf.steps:
            if s.index not in done:
                return Instruction(s.instruction, s.index)
        return Finish(True, f"all {len(wf.steps)} steps confirmed")


# -- the model conductors' shared prompt and reply --------------------------------------------------

SYSTEM_PROMPT = """You direct a fast computer-use policy. It sees the screen and follows ONE short \
instruction at a time (click a button, type a value into a field, choose a menu item), then \
says it is done. You see the goal, the workflow's steps with their status, what happened so \
far and the current screen. Decide the next instruction.
Reply with exactly one line, one of:
STEP <n>             run workflow step n (its own instruction and check)
DO: <instruction>    a short instruction of your own (to recover from a popup, say)
DONE                 the goal is achieved
FAIL: <reason>       the goal cannot be achieved"""


def describe_history(history: Sequence[StepRecord], n: int = 12) -> str:
    if not history:
        return "(nothing yet)"
    lines = []
    for r in list(history)[-n:]:
        what = f"step {r.step}" if r.step is not None else "instruction"
        lines.append(f"- {what} attempt {r.attempt}: {r.instruction!r} -> {r.outcome}"
                     + (f" ({r.detail})" if r.detail else ""))
    return "\n".join(lines)


def user_prompt(goal: Goal, history: Sequence[StepRecord]) -> str:
    parts = [f"Goal: {goal.text}"]
    wf = goal.workflow
    if wf is not None:
        done = confirmed_steps(history)
        steps = "\n".join(f"{s.index}. [{'done' if s.index in done else 'todo'}] {s.instruction}" for s in wf.steps)
        parts.append(f"Workflow steps (run them in order; a step must be confirmed before the next):\n{steps}")
    parts.append(f"History:\n{describe_history(history)}")
    parts.append("The current screen is attached. Your one-line decision:")
    return "\n\n".join(parts)


_STEP = re.compile(r"^\W*step\s*#?\s*(\d+)\b", re.I)
_DO = re.compile(r"^\W*(?:do|instruction)\s*:\s*(.+)$", re.I)
_DONE = re.compile(r"^\W*done\b", re.I)
_FAIL = re.compile(r"^\W*fail(?:ed)?\b\s*:?\s*(.*)$", re.I)


def parse_reply(text: str, goal: Goal) -> Decision:
    """A model's reply -> a decision. One line ``STEP n`` / ``DO: ...`` / ``DONE`` / ``FAIL: ...``
    (the first such line wins; a leading "Thought:" line is skipped), or a JSON object with
    ``step``, ``instruction``, ``done`` or ``fail``. Anything else is a :class:`ConductorError`
    that quotes the reply."""
    raw = (text or "").strip()
    obj = None
    if raw.startswith("{"):
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
    if isinstance(obj, dict):
        if obj.get("step") is not None:
            return _step(obj["step"], goal, raw)
        if obj.get("instruction"):
            return Instruction(str(obj["instruction"]).strip()[:500])
        if obj.get("done"):
            return Finish(True, "the conductor says the goal is achieved")
        if obj.get("fail"):
            return Finish(False, f"the conductor gave up: {obj['fail']}"[:300])
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        if m := _STEP.match(line):
            return _step(m.group(1), goal, raw)
        if m := _DO.match(line):
            return Instruction(m.group(1).strip()[:500])
        if _DONE.match(line):
            return Finish(True, "the conductor says the goal is achieved")
        if m := _FAIL.match(line):
            return Finish(False, f"the conductor gave up: {m.group(1).strip() or 'no reason given'}"[:300])
    shown = raw if len(raw) <= 160 else raw[:157] + "..."
    raise ConductorError(f"the conductor's reply holds no decision (STEP n, DO: ..., DONE, FAIL: ...): {shown!r}")


def _step(value, goal: Goal, raw: str) -> Instruction:
    wf = goal.workflow
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConductorError(f"the conductor named step {value!r}, not a number: {raw[:160]!r}") from None
    if wf is None or not 1 <= n <= len(wf.steps):
        have = f"1-{len(wf.steps)}" if wf is not None else "none (no workflow)"
        raise ConductorError(f"the conductor named step {n}; the steps are {have}")
    return Instruction(wf.steps[n - 1].instruction, n)


__all__ = ["Conductor", "ConductorError", "Decision", "Finish", "Goal", "Instruction", "StepRecord",
           "WorkflowConductor", "parse_reply", "user_prompt"]
