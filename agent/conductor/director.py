"""The director: runs a conductor's decisions as steps inside the agent loop.

The loop (:class:`agent.loop.Agent`) calls :meth:`Director.instruction` once per frame before the
fast policy acts and :meth:`Director.after_actions` after its actions were applied. Between them
the fast policy acts at video rate on the instruction in force.

**Why a thread.** A model conductor's call takes 0.5-30 s (a network round trip, a VLM's
generation); it cannot be cut into per-frame slices the way a budget would need. So a conductor
marked ``threaded`` runs in a daemon thread: the loop goes on capturing, recording and checking
its stop flag (the stop hotkey, signals, the dead-man) every frame while it waits, and the fast
policy sends nothing in the meantime (there is no instruction in force: a worker must not act
on a finished step's instruction). The scripted workflow conductor answers in microseconds and
is called inline, so a virtual-desktop run stays byte-for-byte deterministic. On a desktop whose
clock is virtual (not ``realtime``) the loop gives a pending call one frame period of wall time
per frame, so a model's thinking costs the virtual clock what it would cost a real one and the
loop does not spin.

**Whatever conductor answers,** the director enforces the workflow: a step runs only after every
earlier step is confirmed; a step is confirmed by its checks (all of them) or, without checks, by
the fast policy's ``done``; a failed attempt (a timeout, or ``done`` with a failing check) is
retried up to the step's ``retries``; a step that exhausts them stops the run with that reason
and nothing after it is attempted. When a step is confirmed, the checks of the other confirmed
``keep`` steps run again: one that no longer holds is ``broken`` (an event, and a record the conductor
sees) and runs again before anything after it, its attempts counting on from its last.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.conductor.base import (
    ConductorError,
    Decision,
    Finish,
    Goal,
    Instruction,
    StepRecord,
    confirmed_steps,
)
from agent.conductor.checks import CheckUnsupported, evaluate_all
from agent.conductor.workflow import DEFAULT_TIMEOUT, Step
from capture import Frame

CHECK_INTERVAL_S = 0.25  # checks also run after every frame that had actions, and on `done`
MAX_CONDUCTOR_ERRORS = 3  # in a row
MAX_REFUSALS = 3  # in a row: decisions that break the workflow's order
CONDUCTOR_TIMEOUT_S = 180.0  # wall seconds one call may take


def _label(step: Step) -> str:
    """``step 3 (email)``; ``step 3`` where the step has no name of its own."""
    return f"step {step.index}" if step.name == f"step {step.index}" else f"step {step.index} ({step.name})"


class _Call:
    """One conductor call on a daemon thread (a hung model cannot keep the process alive)."""

    def __init__(self, fn: Callable[[], Decision]):
        self.done = threading.Event()
        self.value: Decision | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        threading.Thread(target=self._run, args=(fn,), name="dw-conductor", daemon=True).start()

    def _run(self, fn) -> None:
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001 - reported on the loop's thread
            self.error = e
        finally:
            self.done.set()


class Director:
    def __init__(self, conductor: Any, goal: Goal, on_event: Callable[..., None] | None = None, *,
                 wait_s: float | None = None,
                 recent: int = 4, max_decisions: int | None = None):
        self.conductor = conductor
        self.goal = goal
        self.workflow = goal.workflow
        self.on_event = on_event
        self.wait_s = wait_s
        self.frames: deque[Frame] = deque(maxlen=recent)
        self.history: list[StepRecord] = []
        n = len(self.workflow.steps) if self.workflow else 5
        self.max_decisions = max_decisions or 4 * n + 10
        self.decisions = 0
        self.latencies: list[float] = []
        self.finished = False
        self.success: bool | None = None
        self.reason = ""
        self._call: _Call | None = None
        self._current: StepRecord | None = None
        self._step: Step | None = None
        self._deadline = 0.0
        self._last_check = -1e9
        self._last_detail = ""
        self._errors = 0
        self._refusals = 0
        self.serial = 0  # counts attempts started: the loop resets the policy when it changes

    @property
    def attempt(self) -> int:
        """The running step's attempt (1 = its first; 0 when none runs)."""
        return self._current.attempt if self._current is not None else 0

    # -- the loop's side -------------------------------------------------------------------------
    def instruction(self, frame: Frame, now: float) -> str | None:
        """The instruction in force for this frame, or None (no action: a decision is pending or
        the run is over). Asks the conductor when no step is running."""
        self.frames.append(frame)
        while not self.finished and self._current is None:
            decision = self._decide(now)
            if decision is None:
                return None  # pending on the conductor's thread
            self._apply(decision, now)
        return None if self.finished or self._current is None else self._current.instruction

    def after_actions(self, desktop: Any, now: float, acted: bool, done: bool) -> None:
        """Judge the running step after this frame's actions: confirmed, failed, or still going."""
        cur, step = self._current, self._step
        if self.finished or cur is None:
            return
        checks = step.checks if step is not None else ()
        if checks and (acted or done or now - self._last_check >= CHECK_INTERVAL_S):
            self._last_check = now
            try:
                ok, detail = evaluate_all(checks, desktop)
            except CheckUnsupported as e:
                ok, detail = False, str(e)
            self._last_detail = detail
            if ok:
                return self._end(now, "confirmed", f"check passed: {detail}", desktop)
            if done:
                return self._end(now, "failed", f"the policy said done but the check failed: {detail}")
        elif not checks and done:
            return self._end(now, "confirmed", "the policy said done", desktop)
        if now >= self._deadline:
            timeout = step.timeout if step is not None else DEFAULT_TIMEOUT
            last = f": {self._last_detail}" if self._last_detail else ""
            self._end(now, "failed", f"not confirmed within {timeout:g} s{last}")

    def stop(self, reason: str) -> None:
        """The loop stopped (hotkey, limit, desktop error): close the running step and the run."""
        if not self.finished:
            if self._current is not None:
                self._current.outcome, self._current.detail = "failed", f"stopped: {reason}"
                self._emit(self._current.t_start, "step_end", step=self._current.step, attempt=self._current.attempt,
                           outcome="stopped", detail=reason)
            self._finish(False, f"stopped: {reason}", None)

    # -- decisions -------------------------------------------------------------------------------
    def _decide(self, now: float) -> Decision | None:
        c = self.conductor
        if self.decisions >= self.max_decisions:
            self._finish(False, f"the conductor made {self.decisions} decisions without finishing", now)
            return None
        frames, history = list(self.frames), list(self.history)
        if not getattr(c, "threaded", False):
            t0 = time.perf_counter()
            try:
                d = c.next_step(self.goal, frames, history)
            except ConductorError as e:
                return self._error(str(e), now)
            self.latencies.append(time.perf_counter() - t0)
            return d
        if self._call is None:
            self._call = _Call(lambda: c.next_step(self.goal, frames, history))
            self._emit(now, "ask", conductor=getattr(c, "name", "?"))
        call = self._call
        if not call.done.wait(self.wait_s or 0.0):
            if time.monotonic() - call.started > CONDUCTOR_TIMEOUT_S:
                self._call = None
                self._finish(False, f"conductor-timeout: no answer in {CONDUCTOR_TIMEOUT_S:g} s", now)
            return None
        self._call = None
        self.latencies.append(time.monotonic() - call.started)
        if call.error is not None:
            e = call.error
            if isinstance(e, ConductorError):
                return self._error(str(e), now)
            return self._error(f"{type(e).__name__}: {e}", now)
        return call.value

    def _error(self, msg: str, now: float) -> None:
        self._errors += 1
        self._emit(now, "conductor_error", error=msg[:300])
        if self._errors >= MAX_CONDUCTOR_ERRORS:
            self._finish(False, f"conductor-error: {msg}"[:300], now)
        return None

    def _apply(self, d: Decision, now: float) -> None:
        self._errors = 0
        self.decisions += 1
        reply = getattr(self.conductor, "last_reply", None)
        base = {"conductor": getattr(self.conductor, "name", "?")}
        if self.latencies:
            base["latency_s"] = round(self.latencies[-1], 4)
        if reply:
            base["reply"] = reply[:300]
        if isinstance(d, Finish):
            self._emit(now, "decision", decision="done" if d.success else "fail", reason=d.reason, **base)
            missing = self._unconfirmed()
            if d.success and missing:
                s = missing[0]
                return self._finish(False, f"the conductor said done with {_label(s)} not confirmed",
                                    now)
            return self._finish(d.success, d.reason or ("done" if d.success else "failed"), now)
        if not isinstance(d, Instruction) or not d.text:
            return self._error(f"not a decision: {d!r}"[:200], now)
        self._emit(now, "decision", decision="step" if d.step is not None else "do", step=d.step,
                   instruction=d.text, **base)
        step = None
        if d.step is not None:
            wf = self.workflow
            if wf is None or not 1 <= d.step <= len(wf.steps):
                return self._refuse(d, f"there is no step {d.step}", now)
            step = wf.steps[d.step - 1]
            done = confirmed_steps(self.history)
            if step.index in done:
                return self._refuse(d, f"step {step.index} is already confirmed", now)
            before = [s for s in wf.steps[: step.index - 1] if s.index not in done]
            if before:
                return self._refuse(d, f"{_label(before[0])} is not confirmed yet", now)
        self._refusals = 0
        attempt = 1 + sum(1 for r in self.history if r.step == d.step and r.outcome in ("failed", "broken")
                          and (d.step is not None or r.instruction == d.text))
        rec = StepRecord(d.text if step is None else step.instruction, d.step, attempt, t_start=now)
        self.history.append(rec)
        self._current, self._step = rec, step
        self.serial += 1
        timeout = step.timeout if step is not None else DEFAULT_TIMEOUT
        self._deadline = now + timeout
        self._last_check, self._last_detail = -1e9, ""
        self._emit(now, "step_start", step=d.step, name=step.name if step else None, attempt=attempt,
                   instruction=rec.instruction, timeout=timeout,
                   checks=[c.to_json() for c in step.checks] if step else [])

    def _refuse(self, d: Instruction, why: str, now: float) -> None:
        self._refusals += 1
        self.history.append(StepRecord(d.text, d.step, 0, "refused", why, now, now))
        self._emit(now, "refused", step=d.step, detail=why)
        if self._refusals >= MAX_REFUSALS:
            self._finish(False, f"the conductor broke the workflow's order {self._refusals} times: {why}", now)

    def _end(self, now: float, outcome: str, detail: str, desktop: Any = None) -> None:
        cur, step = self._current, self._step
        assert cur is not None
        cur.outcome, cur.detail, cur.t_end = outcome, detail[:300], now
        self._current, self._step = None, None
        self._emit(now, "step_end", step=cur.step, name=step.name if step else None, attempt=cur.attempt,
                   outcome=outcome, detail=cur.detail, seconds=round(now - cur.t_start, 3))
        if outcome == "failed" and step is not None and cur.attempt >= step.attempts:
            self._finish(False, f"{_label(step)} not confirmed after {cur.attempt} attempt"
                                f"{'s' if cur.attempt > 1 else ''}: {detail}"[:400], now)
        elif outcome == "confirmed" and step is not None:
            self._recheck(step, desktop, now)

    def _recheck(self, by: Step, desktop: Any, now: float) -> None:
        """Run again the checks of the other confirmed ``keep`` steps (a step run again after it was
        broken may break a later one); mark the first that fails broken (the conductor then runs it
        again), or stop when it has no attempt left."""
        done = confirmed_steps(self.history)
        for s in self.workflow.steps if self.workflow else ():
            if s is by or not s.keep or s.index not in done:
                continue
            try:
                ok, detail = evaluate_all(s.checks, desktop)
            except CheckUnsupported as e:
                ok, detail = False, str(e)
            if ok:
                continue
            detail = f"{_label(by)} broke it: {detail}"[:300]
            used = max(r.attempt for r in self.history if r.step == s.index and r.outcome in ("confirmed", "failed"))
            self.history.append(StepRecord(s.instruction, s.index, used, "broken", detail, now, now))
            self._emit(now, "step_broken", step=s.index, name=s.name, attempt=used, outcome="broken", detail=detail)
            if used >= s.attempts:
                self._finish(False, f"{_label(s)} no longer holds and has no attempt left: {detail}"[:400], now)
            return

    def _unconfirmed(self) -> list[Step]:
        if self.workflow is None:
            return []
        done = confirmed_steps(self.history)
        return [s for s in self.workflow.steps if s.index not in done]

    def _finish(self, success: bool, reason: str, now: float | None) -> None:
        if self.finished:
            return
        self.finished, self.success, self.reason = True, success, reason
        t = now if now is not None else (self.history[-1].t_start if self.history else 0.0)
        wf = self.workflow
        self._emit(t, "workflow_end", success=success, reason=reason,
                   steps_confirmed=len(confirmed_steps(self.history)),
                   steps=len(wf.steps) if wf else None)

    def _emit(self, t: float, event: str, **fields: Any) -> None:
        if self.on_event is not None:
            self.on_event(t, event=event, **{k: v for k, v in fields.items() if v is not None})

    # -- the outcome -----------------------------------------------------------------------------
    def report(self) -> dict:
        """Per step: outcome, attempts, the last attempt's detail and seconds; the run's outcome."""
        steps = []
        if self.workflow is not None:
            done = confirmed_steps(self.history)
            for s in self.workflow.steps:
                recs = [r for r in self.history if r.step == s.index and r.outcome not in ("refused", "broken")]
                broken = sum(1 for r in self.history if r.step == s.index and r.outcome == "broken")
                last = recs[-1] if recs else None
                outcome = "not-attempted" if last is None else ("confirmed" if last.outcome == "confirmed"
                                                                else "failed")
                if s.index not in done and outcome == "confirmed":
                    outcome = "broken"  # a later step undid it and the run ended before it ran again
                steps.append({"step": s.index, "name": s.name, "outcome": outcome, "attempts": len(recs),
                              "detail": last.detail if last else "",
                              "seconds": round(last.t_end - last.t_start, 3) if last and last.t_end is not None
                              else None} | ({"broken": broken} if broken else {}))
        lat = self.latencies
        return {"success": bool(self.success), "reason": self.reason, "steps": steps,
                "free_instructions": sum(1 for r in self.history if r.step is None and r.outcome != "refused"),
                "decisions": self.decisions,
                "conductor": getattr(self.conductor, "name", "?"),
                "conductor_latency_s": {"n": len(lat), "max": round(max(lat), 4) if lat else None,
                                        "mean": round(sum(lat) / len(lat), 4) if lat else None}}


__all__ = ["Director"]
