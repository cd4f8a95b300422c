"""The live desktop: frames from the real screen (mss), actions through the executor (pyautogui).

Safety controls, all on by default where sensible:

- a global stop hotkey (pynput, default ``ctrl+alt+shift+q``) calling ``on_stop(reason)`` — bind
  it to ``Agent.stop`` (``desktop.on_stop = agent.stop``); unbound, the next ``observe``/``apply``
  raises :class:`DesktopError` with the reason;
- pyautogui's corner failsafe (the executor turns it into :class:`DesktopError`);
- a dead-man stop: frames are grabbed on a capture thread and ``observe`` raises
  :class:`DesktopError` when none arrives within ``deadman_seconds`` (capture hung or failing);
  a vanished display raises at once;
- the executor's rate limit, allowed region, deny list, confirmation rule and dry-run.

Every stop therefore goes through ``Agent.stop(reason)`` or ``DesktopError``, and the loop writes
the reason into the session.

Input is always released: every button and key the executor pressed and has not let go of is
released on a refusal, an input error, a stop (hotkey, signal, :meth:`request_stop`) and on
:meth:`close` (:meth:`release_input`; :meth:`agent.desktops.executor.Executor.release_all`).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent.desktops import DesktopError
from agent.desktops.executor import DEFAULT_DENY_KEYS, Executor, needs_confirmation_default
from agent.desktops.safety import DEFAULT_STOP_HOTKEY, StopHotkey
from capture import Frame
from capture.incremental import IncrementalScreenSource
from capture.live import CaptureError
from policies.actions import Action

log = logging.getLogger("digital_worker.live")
# How long a grab on a still screen waits for drawing. It returns at the first drawing, so this
# bounds only how often a still screen gives a frame (an uncapped loop, and what it records, then
# runs at 10 frames a second, as the default cap) and how stale the pointer position may get.
IDLE_S = 0.1


class _CaptureThread:
    """Owns the grabbing thread (and so its mss instance); one outstanding request at a time."""

    def __init__(self, source: Any):
        self.source = source
        self._requests: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self.pending = False
        self._thread = threading.Thread(target=self._run, name="dw-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            req = self._requests.get()
            if req is None:
                return
            try:
                self._results.put((True, self.source.grab()))
            except BaseException as e:  # noqa: B036 - handed to the caller
                self._results.put((False, e))

    def request(self) -> None:
        if not self.pending:
            self.pending = True
            self._requests.put(1)

    def result(self, timeout: float) -> tuple[bool, Any]:
        ok, value = self._results.get(timeout=max(0.0, timeout))
        self.pending = False
        return ok, value

    def stop(self, timeout: float = 1.0) -> bool:
        """Ask the thread to end; True when it did (a hung grab leaves it, as a daemon)."""
        self._requests.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class LiveDesktop:
    """The real screen as a :class:`agent.desktops.Desktop`.

    Safety keywords: ``region`` (normalised x0,y0,x1,y1 allowed for pointer actions),
    ``max_actions_per_second`` (rate limit, default 20), ``deny_keys``, ``confirm``
    (``callable(action) -> bool``; see :func:`agent.desktops.executor.terminal_confirm`), ``confirm_when``,
    ``failsafe`` (default True), ``stop_hotkey`` (None disables it), ``deadman_seconds``
    (default 5), ``on_stop``. Others: ``scale`` (override HiDPI detection), ``capture_region``
    (pixels, see :class:`ScreenSource`), ``input_scale``, ``source`` (a ScreenSource-like
    object, for tests), ``backend`` (the input module, for tests).
    """

    kind = "live"
    realtime = True  # a ``wait`` takes real seconds (a server must not run it on a shared thread)

    def __init__(
        self,
        monitor: int = 1,
        fps: float | None = None,
        dry_run: bool = False,
        instruction: str = "",
        *,
        region: tuple[float, float, float, float] | None = None,
        max_actions_per_second: float | None = 20.0,
        deny_keys: Iterable[str] = DEFAULT_DENY_KEYS,
        confirm: Callable[[Action], bool] | None = None,
        confirm_when: Callable[[Action], bool] = needs_confirmation_default,
        failsafe: bool = True,
        stop_hotkey: str | None = DEFAULT_STOP_HOTKEY,
        deadman_seconds: float = 5.0,
        on_stop: Callable[[str], None] | None = None,
        scale: float | None = None,
        capture_region: tuple[int, int, int, int] | None = None,
        input_scale: float | None = None,
        source: Any = None,
        backend: Any = None,
    ):
        if sys.platform == "linux" and not os.environ.get("DISPLAY") and source is None:
            raise DesktopError(
                "no display: DISPLAY is not set (the live desktop needs an X11 session; Wayland alone is not supported)"
            )
        if not deadman_seconds > 0:
            raise ValueError(f"deadman_seconds must be positive, got {deadman_seconds}")
        try:
            # On X11 only what changed is copied (XDamage), full grabs elsewhere: capture.incremental.
            # On a still screen a grab waits up to IDLE_S for drawing, so the loop sleeps, not spins.
            self.source = source or IncrementalScreenSource(monitor, capture_region, fps, scale, idle_s=IDLE_S)
        except CaptureError as e:
            raise DesktopError(str(e)) from e
        self.monitor = monitor
        self.fps = fps
        self.dry_run = dry_run
        self._instruction = instruction
        self.deadman_seconds = float(deadman_seconds)
        self.on_stop = on_stop
        self._stop_reason = ""
        self._stop_event = threading.Event()
        self._closed = False
        self.screen = self.source.screen
        self.executor = Executor(
            self.screen,
            dry_run=dry_run,
            max_actions_per_second=max_actions_per_second,
            region=region,
            deny_keys=deny_keys,
            confirm=confirm,
            confirm_when=confirm_when,
            failsafe=failsafe,
            input_scale=input_scale,
            stop_event=self._stop_event,
            backend=backend,
        )
        self._capture = _CaptureThread(self.source)
        self.last_error = ""
        self.hotkey: StopHotkey | None = None
        self.stop_hotkey = stop_hotkey
        if stop_hotkey:
            try:
                self.hotkey = StopHotkey(stop_hotkey, self.request_stop).start()
            except (RuntimeError, ValueError) as e:
                self._capture.stop()
                self.source.close()
                raise DesktopError(str(e)) from e

    # --- stopping -------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop the run (stop hotkey, signals): calls ``on_stop`` or latches for the next call."""
        if not self._stop_reason:
            self._stop_reason = reason
        self._stop_event.set()  # interrupts a running wait, drag or typing
        self.release_input()  # waits for an input call in progress (a drag ends at its next step)
        cb = self.on_stop
        if cb is not None:
            cb(reason)

    def _check_stop(self) -> None:
        if self._stop_reason and self.on_stop is None:
            self.release_input()
            raise DesktopError(self._stop_reason)

    def release_input(self) -> list[str]:
        """Release every button and key the worker pressed and still holds (any thread; never raises)."""
        try:
            return self.executor.release_all()
        except Exception as e:  # pragma: no cover - release_all logs its own failures
            log.warning("releasing held input failed: %s", e)
            return []

    # --- Desktop protocol -----------------------------------------------------------------
    def observe(self) -> Frame:
        if self._closed:
            raise DesktopError("the live desktop is closed")
        self._check_stop()
        deadline = time.monotonic() + self.deadman_seconds
        while True:
            self._capture.request()
            try:
                ok, value = self._capture.result(deadline - time.monotonic())
            except queue.Empty:
                last = f"; last error: {self.last_error}" if self.last_error else " (capture hung)"
                raise DesktopError(f"dead-man: no frame for {self.deadman_seconds:g} s{last}") from None
            if ok:
                self.last_error = ""
                self.screen = value.screen
                return value
            err = value
            if isinstance(err, CaptureError) and err.gone:
                raise DesktopError(str(err)) from err
            if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit in the thread
                raise err
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("capture failed, retrying: %s", self.last_error)
            if time.monotonic() + 0.05 >= deadline:
                raise DesktopError(f"dead-man: no frame for {self.deadman_seconds:g} s; last error: {self.last_error}")
            time.sleep(0.05)

    def apply(self, action: Action) -> None:
        if self._closed:
            raise DesktopError("the live desktop is closed")
        self._check_stop()
        self.executor.apply(action)

    def now(self) -> float:
        return self.source.now()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_event.set()
        self.release_input()
        if self.hotkey is not None:
            self.hotkey.stop()
        if not self._capture.pending:
            self._capture.stop()
            self.source.close()
        # else: a grab is hung; its thread is a daemon and its connection goes with the process.

    @property
    def cursor(self) -> tuple[float, float] | None:
        return self.executor.position()

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def oracle(self) -> Any:
        return None

    @property
    def finished(self) -> bool:
        return False

    @property
    def success(self) -> bool | None:
        return None

    def info(self) -> dict:
        ex = self.executor
        return {
            "kind": "live",
            "monitor": self.monitor,
            "display": os.environ.get("DISPLAY", ""),
            "platform": sys.platform,
            "fps": self.fps,
            "scale": self.screen.scale,
            "input_scale": ex.input_scale,
            "dry_run": self.dry_run,
            "region": list(ex.region) if ex.region else None,
            "max_actions_per_second": ex.rate,
            "deny_keys": list(ex.deny_keys),
            "confirm": ex.confirm is not None,
            "failsafe": ex.failsafe,
            "stop_hotkey": self.stop_hotkey,
            "deadman_seconds": self.deadman_seconds,
        }

    def stats(self) -> dict:
        """Counters after (or during) a run: frames captured/dropped, input sent/refused."""
        return {
            "captured": getattr(self.source, "captured", None),
            "dropped": getattr(self.source, "dropped", None),
            "sent": self.executor.sent,
            "refused": self.executor.refused,
        }

    def __enter__(self) -> LiveDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
