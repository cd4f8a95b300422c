"""One workflow run per row: build the desktop, the director and the loop; report rows and steps.

Used by ``dw run --workflow`` (any desktop) and ``dw eval --workflow`` (the workflow's virtual
scene). The report, also the ``--json`` document::

    {"workflow": ..., "conductor": ..., "policy": ..., "rows": 20, "rows_succeeded": 19,
     "success_rate": 0.95, "steps": {"1": {"name": ..., "confirmed": 20, "attempted": 20}, ...},
     "results": [{"row": 1, "values": {...}, "success": true, "reason": ..., "steps": [...]}, ...]}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.conductor.base import Goal
from agent.conductor.checks import unsupported
from agent.conductor.director import Director
from agent.conductor.workflow import Workflow
from agent.errors import UserError


def run_row(workflow: Workflow, desktop: Any, policy: Any, conductor: Any, *, record: str | Path | None = None,
            fps: float = 10.0, max_seconds: float | None = None, on_agent: Callable[[Any], None] | None = None
            ) -> dict:
    """One run of ``workflow`` (already filled from its row) on ``desktop``; the desktop stays open."""
    from agent.loop import Agent
    from agent.sessions.format import SessionRecorder

    line = unsupported(workflow, desktop)
    if line:
        raise UserError(line)
    goal = Goal(workflow.goal_text(), workflow)
    director = Director(conductor, goal)
    recorder = None
    if record is not None:
        recorder = SessionRecorder(record, desktop.screen, fps, instruction=goal.text,
                                   policy=str(getattr(policy, "name", policy)), desktop=desktop.info(),
                                   extra={"workflow": workflow.to_json(), "conductor": getattr(conductor, "name", "?")})
    if max_seconds is None:  # every step's every attempt, plus room for the conductor
        max_seconds = sum(s.timeout * s.attempts for s in workflow.steps) + 60.0
    agent = Agent(desktop, policy, instruction="", recorder=recorder, max_seconds=max_seconds, director=director)
    if on_agent is not None:
        on_agent(agent)
    t0 = time.perf_counter()
    res = agent.run()
    rep = director.report()
    return {**rep, "values": dict(workflow.row), "end_reason": res.reason, "frames": res.steps,
            "actions": res.actions, "errors": res.errors[-5:], "virtual_seconds": round(res.duration, 3),
            "wall_seconds": round(time.perf_counter() - t0, 3), "user_stop": agent._stop.is_set()} | ({"session": str(record)} if record else {})


def summarise_rows(workflow: Workflow, results: list[dict], **head: Any) -> dict:
    steps = {}
    for s in workflow.steps:
        per = [next((x for x in r.get("steps", []) if x["step"] == s.index), None) for r in results]
        steps[str(s.index)] = {"name": s.name,
                               "attempted": sum(1 for x in per if x and x["attempts"]),
                               "confirmed": sum(1 for x in per if x and x["outcome"] == "confirmed"),
                               "attempts": sum(x["attempts"] for x in per if x)}
    ok = sum(1 for r in results if r.get("success"))
    return {"workflow": workflow.name, "path": workflow.path, **head, "rows": len(results), "rows_succeeded": ok,
            "success_rate": round(ok / len(results), 4) if results else 0.0, "steps": steps, "results": results}


def run_rows(workflow: Workflow, rows: list[dict] | None, make_desktop: Callable[[int], Any], policy: Any,
             conductor: Any, *, record_dir: str | Path | None = None, fps: float = 10.0,
             max_seconds: float | None = None, close_each: bool = True, on_row: Callable[[dict], None] | None = None,
             on_agent: Callable[[Any], None] | None = None) -> list[dict]:
    """Run ``workflow`` once per row (once, unfilled, when ``rows`` is None). ``make_desktop(i)``
    gives row ``i``'s desktop (a fresh virtual scene, or the same live screen each time)."""
    results = []
    for i, row in enumerate(rows if rows is not None else [{}], 1):
        wf = workflow.fill(row)
        desktop = make_desktop(i)
        rec = None
        if record_dir is not None:
            rec = Path(record_dir) / f"row-{i:03d}" if rows is not None else Path(record_dir)
        try:
            r = run_row(wf, desktop, policy, conductor, record=rec, fps=fps, max_seconds=max_seconds,
                        on_agent=on_agent)
        finally:
            if close_each:
                desktop.close()
        r = {"row": i, **r}
        results.append(r)
        if on_row is not None:
            on_row(r)
        if r["user_stop"] or r["end_reason"].startswith(("desktop-error", "recording-error", "interrupted")):
            break  # the desktop or the user ended it: no further rows
    return results


__all__ = ["run_row", "run_rows", "summarise_rows"]
