"""The one loop: observe -> act -> apply, timed per stage, optionally recorded."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from agent.desktops import ActionRefused, Desktop, DesktopError
from agent.sessions.format import RecordingError, SessionRecorder
from policies.actions import Action, Done, Wait
from policies.base import Observation, Policy

STAGES = ("capture", "encode", "infer", "act")
SAME_POINT = 0.005  # max_no_effect: points this close (normalised) are the same place


def _same(a: list[Action], b: list[Action] | None) -> bool:
    """The same actions, points within :data:`SAME_POINT` (a model's repeated click lands a pixel or
    two apart as its history changes)."""
    if b is None or len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        jx, jy = x.to_json(), y.to_json()
        if jx.keys() != jy.keys():
            return False
        for k, v in jx.items():
            w = jy[k]
            if k in ("x", "y", "x2", "y2") and isinstance(v, int | float) and isinstance(w, int | float):
                if abs(v - w) > SAME_POINT:
                    return False
            elif v != w:
                return False
    return True


@dataclass
class RunResult:
    steps: int = 0
    actions: int = 0
    success: bool | None = None
    reason: str = ""
    duration: float = 0.0
    errors: list[str] = field(default_factory=list)
    refused: int = 0
    timings_ns: dict[str, list[int]] = field(default_factory=lambda: {s: [] for s in STAGES})
    # With an ``after_success`` window (Agent): when the success was first seen (desktop clock),
    # the steps up to it (the step whose action succeeded included), and the policy's non-wait,
    # non-done actions after it.
    success_t: float | None = None
    success_step: int | None = None
    actions_after_success: int | None = None
    done_ignored: int = 0  # ``done`` actions the run went on after (stop_on_done=False)

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "actions": self.actions,
            "success": self.success,
            "reason": self.reason,
            "duration": round(self.duration, 6),
            "errors": self.errors,
            "refused": self.refused,
            **({"success_step": self.success_step, "actions_after_success": self.actions_after_success}
               if self.success_step is not None else {}),
            **({"done_ignored": self.done_ignored} if self.done_ignored else {}),
        }


class Agent:
    """Runs a policy against a desktop until the episode ends, a limit is hit, or it is stopped.

    A policy that raises or returns something other than a list of Actions has that step
    skipped and logged; after ``max_policy_errors`` in a row the run stops. An action the
    desktop refuses is logged and the loop goes on. ``stop()`` (from any thread, e.g. a kill
    switch) ends the run after the current step; every stop closes the session with its reason.

    The policy's ``done`` ends the run (reason ``"done"``); with ``stop_on_done=False`` it is
    recorded as a ``done_ignored`` system event and the run goes on (``dw run --keep-running``).

    ``after_success`` (seconds, None: off) is the evaluation's look at what a policy does once the
    task is done: from the moment ``desktop.success`` is first true the run goes on for that long on
    the desktop's clock (``max_steps`` no longer applies; a desktop that reports ``finished`` in
    the meantime, its own tail over, is observed on), counting the policy's actions other than
    ``wait`` and ``done`` (:attr:`RunResult.actions_after_success`). ``done`` still ends it early;
    ``0`` ends the run at the first success.
    ``max_no_effect`` (None: off) stops a run that is stuck: once the policy has applied the same
    actions (points within :data:`SAME_POINT`) that many times in a row with nothing drawn on screen in between (reason
    ``"no-effect"``). Only frames that say what changed (the live X11 desktop's) count; on other
    desktops it never fires.

    With a ``director`` (:class:`agent.conductor.director.Director`: a conductor and, usually, a
    workflow) the instruction changes step by step: before each frame's policy call the director
    names the instruction in force (None: no action this frame, a conductor call is pending on its
    thread while capture, recording and the stop checks go on), and after the actions it judges the
    step (its checks, the policy's ``done``, its timeout). The policy's ``done`` then ends a step,
    not the run; the run ends when the director finishes. Its events are recorded with source
    ``"conductor"``.
    """

    def __init__(
        self,
        desktop: Desktop,
        policy: Policy,
        *,
        instruction: str | None = None,
        recorder: SessionRecorder | None = None,
        max_steps: int | None = None,
        max_seconds: float | None = None,
        history: int = 8,
        max_policy_errors: int = 10,
        director=None,
        stop_on_done: bool = True,
        after_success: float | None = None,
        max_no_effect: int | None = None,
    ):
        self.desktop = desktop
        self.policy = policy
        self.instruction = desktop.instruction if instruction is None else instruction
        self.recorder = recorder
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.history: deque[Action] = deque(maxlen=history)
        self.max_policy_errors = max_policy_errors
        self._stop = threading.Event()
        self._stop_reason = ""
        self.director = director
        self.stop_on_done = stop_on_done
        self.after_success = after_success
        if max_no_effect is not None and max_no_effect < 2:
            raise ValueError(f"max_no_effect must be at least 2 (or None), got {max_no_effect}")
        self.max_no_effect = max_no_effect
        if director is not None and director.on_event is None:
            director.on_event = lambda t, **fields: self._event(t, "conductor", **fields)

    def stop(self, reason: str = "stopped") -> None:
        self._stop_reason = reason
        self._stop.set()

    def _event(self, t: float, source: str, action: Action | None = None, **fields) -> None:
        if self.recorder is not None:
            self.recorder.add_event(t, source, action, **fields)

    def _close_recording(self, reason: str, res: RunResult) -> None:
        """Record the final screen (the outcome of the last actions) and the stop, then close.

        After a recording error only the close is attempted; its own failure is reported in
        the result, never raised, so the run's outcome is not lost."""
        rec, desktop = self.recorder, self.desktop
        try:
            if not reason.startswith(("desktop-error", "recording-error")):
                try:
                    rec.add_frame(desktop.observe())
                except (DesktopError, RecordingError) as e:
                    self._event(desktop.now(), "system", event="final_frame_error", error=str(e))
            if not reason.startswith("recording-error"):
                self._event(desktop.now(), "system", event="stop", reason=reason, success=res.success)
        except RecordingError as e:
            res.errors.append(str(e))
        try:
            rec.close(reason, success=res.success, steps=res.steps)
        except RecordingError as e:
            res.errors.append(str(e))

    def run(self) -> RunResult:
        res = RunResult()
        desktop, policy, timings = self.desktop, self.policy, res.timings_ns
        policy.reset(self.instruction)
        t_start = desktop.now()
        errors_in_row = 0
        clock = time.perf_counter_ns
        reason = ""
        director, serial = self.director, 0
        window = self.after_success
        repeated, still, last_applied, seen = 0, False, None, None  # max_no_effect: same actions, nothing drawn

        def seen_success(acted: bool) -> None:  # the after-success window opens at the first success
            if window is not None and res.success_t is None and desktop.success:  # the step that acted counts
                res.success_t, res.success_step, res.actions_after_success = desktop.now(), res.steps + acted, 0

        def in_window() -> bool:
            return res.success_t is not None and desktop.now() - res.success_t < window
        if director is not None and director.wait_s is None:  # see agent.conductor.director: why a thread
            director.wait_s = 0.0 if getattr(desktop, "realtime", False) else 1.0 / float(getattr(desktop, "fps", 10.0))
        try:
            while True:
                if self._stop.is_set():
                    reason = self._stop_reason or "stopped"
                    break
                if self.max_steps is not None and res.steps >= self.max_steps and res.success_t is None:
                    reason = "max-steps"
                    break
                if self.max_seconds is not None and desktop.now() - t_start >= self.max_seconds:
                    reason = "max-seconds"
                    break
                t0 = clock()
                frame = desktop.observe()
                t1 = clock()
                if self.recorder is not None:
                    self.recorder.add_frame(frame)
                t2 = clock()
                # nothing drawn since the last frame this loop saw (the frame says so, and follows it)
                still = still and getattr(frame, "changed", None) == () and frame.follows(seen)
                seen = (getattr(frame, "source", 0), frame.index)
                seen_success(False)
                if res.success_t is not None and not in_window():
                    reason = "finished"  # the after-success window is over (or 0: ends at the success)
                    break
                if director is not None:
                    now = desktop.now()
                    step_instruction = director.instruction(frame, now)
                    if director.finished:
                        reason = "workflow-done" if director.success else "workflow-failed"
                        break
                    if step_instruction is None:  # waiting on the conductor: capture goes on, no action
                        res.steps += 1
                        timings["capture"].append(t1 - t0)
                        timings["encode"].append(t2 - t1)
                        continue
                    if director.serial != serial:  # a new step or a new attempt: a fresh start for the policy
                        serial = director.serial
                        self.instruction = step_instruction
                        policy.reset(step_instruction)
                        if director.attempt > 1 and hasattr(policy, "retry"):  # the last attempt failed
                            policy.retry(director.attempt)
                        self.history.clear()
                        if hasattr(desktop, "on_instruction"):
                            desktop.on_instruction(step_instruction)
                obs = Observation(frame, self.instruction, desktop.cursor, tuple(self.history), desktop.oracle)
                try:
                    actions = policy.act(obs)
                    if not isinstance(actions, list) or not all(isinstance(a, Action) for a in actions):
                        raise TypeError(f"policy returned {type(actions).__name__}, not a list of Actions")
                    errors_in_row = 0
                except Exception as e:  # a broken step is skipped, not fatal
                    actions = []
                    errors_in_row += 1
                    msg = f"step {res.steps}: policy error: {type(e).__name__}: {e}"
                    res.errors.append(msg)
                    self._event(desktop.now(), "system", event="policy_error", error=msg)
                t3 = clock()
                done = False
                applied = []
                for action in actions:
                    t_issue = desktop.now()
                    if isinstance(action, Done):
                        if not self.stop_on_done and director is None:
                            self._event(t_issue, "system", action, event="done_ignored")
                            res.done_ignored += 1
                            continue
                        self._event(t_issue, "policy", action)
                        res.actions += 1
                        done = True
                        break
                    if res.success_t is not None and not isinstance(action, Wait):
                        res.actions_after_success += 1
                    try:
                        desktop.apply(action)
                    except ActionRefused as e:
                        res.refused += 1
                        self._event(t_issue, "system", action, event="refused", reason=str(e))
                        continue
                    finally:
                        seen_success(True)
                    self._event(t_issue, "policy", action)
                    self.history.append(action)
                    res.actions += 1
                    if not isinstance(action, Wait):
                        applied.append(action)
                t4 = clock()
                if applied and self.max_no_effect is not None:
                    repeated = repeated + 1 if still and _same(applied, last_applied) else 1
                    last_applied, still = applied, True
                    if repeated >= self.max_no_effect:
                        self._event(desktop.now(), "system", event="no_effect", repeats=repeated,
                                    actions=[a.to_json() for a in applied])
                        reason = "no-effect"
                if director is not None:
                    director.after_actions(desktop, desktop.now(), bool(actions), done)
                    done = False  # the policy's done ends a step, not the run
                    if director.finished:
                        reason = "workflow-done" if director.success else "workflow-failed"
                res.steps += 1
                timings["capture"].append(t1 - t0)
                timings["encode"].append(t2 - t1)
                timings["infer"].append(t3 - t2)
                timings["act"].append(t4 - t3)
                if reason:
                    break
                if done:
                    reason = "done"
                    break
                if res.success_t is not None and not in_window():
                    reason = "finished"  # the after-success window is over
                    break
                if desktop.finished and not (res.success_t is not None and desktop.success):
                    reason = "finished"
                    break
                if errors_in_row >= self.max_policy_errors:
                    reason = "policy-errors"
                    break
        except DesktopError as e:
            reason = f"desktop-error: {e}"
            res.errors.append(str(e))
        except RecordingError as e:
            reason = f"recording-error: {e}"
            res.errors.append(str(e))
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            if director is not None:
                if not director.finished:
                    try:
                        director.stop(reason or "stopped")
                    except RecordingError as e:
                        res.errors.append(str(e))
                if reason == "workflow-failed":
                    reason = f"workflow-failed: {director.reason}"
            res.success = desktop.success if director is None else director.success
            res.reason = reason
            res.duration = desktop.now() - t_start
            if self.recorder is not None:
                self._close_recording(reason, res)
        return res
