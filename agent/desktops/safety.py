"""Live safety controls shared by ``dw run`` and ``dw record``: the global stop hotkey and
signal handling. (The deny list, region, rate limit, confirmation and failsafe live in the
executor; the dead-man stop in :class:`agent.desktops.live.LiveDesktop`.)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator

from policies.actions import ActionError, normalise_combo

log = logging.getLogger("digital_worker.safety")

DEFAULT_STOP_HOTKEY = "ctrl+alt+shift+q"
READY_TIMEOUT = 5.0  # seconds the global keyboard hook may take to install before it counts as failed

_PYNPUT_NAMES = {
    "ctrl": "<ctrl>", "shift": "<shift>", "alt": "<alt>", "option": "<alt>", "super": "<cmd>",
    "win": "<cmd>", "cmd": "<cmd>", "meta": "<cmd>", "enter": "<enter>", "return": "<enter>",
    "tab": "<tab>", "space": "<space>", "backspace": "<backspace>", "delete": "<delete>",
    "escape": "<esc>", "esc": "<esc>", "insert": "<insert>", "home": "<home>", "end": "<end>",
    "pageup": "<page_up>", "pagedown": "<page_down>", "up": "<up>", "down": "<down>",
    "left": "<left>", "right": "<right>", "pause": "<pause>", "menu": "<menu>",
}


def hotkey_to_pynput(combo: str) -> str:
    """``"ctrl+alt+shift+q"`` -> pynput's ``"<ctrl>+<alt>+<shift>+q"``; ValueError if unusable."""
    try:
        norm = normalise_combo(combo)
    except ActionError as e:
        raise ValueError(f"bad stop hotkey {combo!r}: {e}") from None
    out = []
    for part in norm.split("+"):
        if part in _PYNPUT_NAMES:
            out.append(_PYNPUT_NAMES[part])
        elif len(part) == 1:
            out.append(part)
        elif part.startswith("f") and part[1:].isdigit():
            out.append(f"<{part}>")
        else:
            raise ValueError(f"stop hotkey {combo!r}: key {part!r} cannot be used in a global hotkey")
    return "+".join(out)


class StopHotkey:
    """A global hotkey (pynput, on its own thread) that calls ``callback(reason)`` once per press."""

    def __init__(self, combo: str, callback: Callable[[str], None], ready_timeout: float = READY_TIMEOUT):
        self.ready_timeout = float(ready_timeout)
        self.combo = normalise_combo(combo)
        self._spec = hotkey_to_pynput(combo)
        self.callback = callback
        self._listener = None
        self.pressed = 0

    def _fire(self) -> None:
        self.pressed += 1
        log.warning("stop hotkey %s pressed", self.combo)
        try:
            self.callback(f"stop-hotkey ({self.combo})")
        except Exception:  # never let the listener thread die on a callback error
            log.exception("stop hotkey callback failed")

    def start(self) -> StopHotkey:
        """Start listening; raises RuntimeError when no global keyboard hook is available.

        Never waits more than ``ready_timeout`` seconds: a listener that fails while starting (an X
        server without the RECORD extension) or never becomes ready is an error, not a hang."""
        try:
            from pynput import keyboard

            class _QuietHotKeys(keyboard.GlobalHotKeys):
                # A display that vanishes kills the listener thread; say so in one log line, no traceback.
                # A failure before it was ready is kept for start(), which is woken up at once.
                dw_error: BaseException | None = None

                def run(self) -> None:
                    try:
                        super().run()
                    except Exception as e:
                        self.dw_error = e
                        log.warning("stop hotkey listener ended: %s: %s", type(e).__name__, e)
                    finally:
                        with self._condition:
                            self._condition.notify_all()

            listener = _QuietHotKeys({self._spec: self._fire})
            listener.daemon = True
            listener.start()
            deadline = time.monotonic() + self.ready_timeout
            with listener._condition:
                while not listener._ready and listener.dw_error is None and listener.is_alive():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    listener._condition.wait(min(left, 0.1))
            if listener.dw_error is not None or not listener._ready:
                why = listener.dw_error  # no listener.stop(): pynput's stop waits for ready too (a daemon thread)
                if why is None:
                    raise TimeoutError(f"the keyboard hook was not ready within {self.ready_timeout:g} s")
                hint = " (the X server may lack the RECORD extension)" if "record" in str(why).lower() else ""
                raise RuntimeError(f"{type(why).__name__}: {why}{hint}")
            self._listener = listener
        except Exception as e:
            self._listener = None
            raise RuntimeError(f"cannot install the stop hotkey {self.combo}: {e if isinstance(e, RuntimeError) else f'{type(e).__name__}: {e}'}; "
                               "run without it with --stop-hotkey ''") from e
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.stop()
            except Exception:
                pass


@contextlib.contextmanager
def stop_on_signals(callback: Callable[[str], None], signals=(signal.SIGTERM,)) -> Iterator[None]:
    """While inside, the given signals call ``callback("signal SIGTERM")`` instead of killing us.

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in signals:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, lambda signum, _frame: callback(f"signal {signal.Signals(signum).name}"))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
