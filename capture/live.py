"""The live screen: mss capture into BGRA Frames, with an fps cap, counters and HiDPI scale.

``ScreenSource`` opens one ``mss.MSS`` per thread, lazily, in the thread that grabs (a shared
instance serialises, and an X connection must not cross threads). Pixels come straight from
mss's raw BGRA buffer with no copy or colour conversion. ``t`` is monotonic seconds since the
source was created; :meth:`ScreenSource.now` reads the same clock, so input listeners can stamp
their events on it.

Only ``capture.frame`` is imported from this project.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time

import numpy as np

from capture.frame import Frame, Screen


class CaptureError(RuntimeError):
    """The screen cannot be captured. ``gone`` is True when the display itself vanished."""

    def __init__(self, message: str, *, gone: bool = False):
        super().__init__(message)
        self.gone = gone


def display_name() -> str:
    return os.environ.get("DISPLAY", "")


def failed(e: Exception, what: str) -> CaptureError:
    """``e``, raised while capturing, as a :class:`CaptureError`: "display :N is gone" when the X
    server closed the connection (``gone``), else ``what`` failed."""
    name = display_name()
    gone = not display_alive(name)
    why = f"display {name} is gone (the X server closed the connection)" if gone else what
    return CaptureError(f"{why}: {type(e).__name__}: {e}".rstrip(": "), gone=gone)


def display_alive(name: str | None = None, timeout: float = 0.5) -> bool:
    """Whether a local X display (``:N``) still accepts connections; True when it cannot be told."""
    name = display_name() if name is None else name
    if sys.platform != "linux" or not name:
        return True
    host, _, rest = name.rpartition(":")
    if host not in ("", "unix"):
        return True  # a TCP display: don't guess
    number = rest.split(".")[0]
    path = f"/tmp/.X11-unix/X{number}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        # Linux also has the abstract-namespace socket; try it before declaring the display gone.
        try:
            s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s2.settimeout(timeout)
            s2.connect("\0" + path)
            s2.close()
            return True
        except OSError:
            return False
    finally:
        s.close()


def _parse_dpi(resources: str) -> float | None:
    for line in resources.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Xft.dpi":
            try:
                dpi = float(value.strip())
            except ValueError:
                return None
            return dpi if dpi > 0 else None
    return None


def detect_scale() -> float:
    """Physical pixels per logical point: Xft.dpi / 96 on X11 (RESOURCE_MANAGER), else 1.0.

    On macOS the scale is measured from the first grab instead (pixels vs points). Clamped to
    the [0.5, 4] that :class:`Screen` accepts; any failure answers 1.0.
    """
    if sys.platform != "linux" or not display_name():
        return 1.0
    try:
        from Xlib import X, display  # python-xlib, a dependency on Linux

        d = display.Display()
        try:
            root = d.screen().root
            atom = d.intern_atom("RESOURCE_MANAGER", True)
            if not atom:
                return 1.0
            prop = root.get_full_property(atom, X.AnyPropertyType)
            if prop is None or not prop.value:
                return 1.0
            value = prop.value
            text = value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
        finally:
            d.close()
    except Exception:
        return 1.0
    dpi = _parse_dpi(text)
    if dpi is None:
        return 1.0
    return min(4.0, max(0.5, round(dpi / 96.0, 4)))


class ScreenSource:
    """Frames from the live screen.

    - ``monitor``: mss monitor index; 0 is the union of all monitors, 1 the first.
    - ``region``: ``(left, top, width, height)`` in physical pixels relative to the monitor's
      origin, or None for the whole monitor.
    - ``fps``: a cap; :meth:`grab` sleeps to the next slot. A slot missed because a grab came
      late counts in ``dropped``; ``captured`` counts frames returned.
    - ``scale``: physical pixels per logical point; None detects it (:func:`detect_scale`).
    - ``backend``: mss's capture backend on Linux (``xshmgetimage``, the default, or ``xgetimage``,
      ``xlib``); None lets mss choose.
    """

    def __init__(
        self,
        monitor: int = 1,
        region: tuple[int, int, int, int] | None = None,
        fps: float | None = None,
        scale: float | None = None,
        *,
        backend: str | None = None,
    ):
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.monitor_index = monitor
        self.backend = backend
        self.region = region
        self.fps = fps
        self._period = 1.0 / fps if fps else 0.0
        self._local = threading.local()
        self._all: list = []  # every mss instance opened, closed in close()
        self._lock = threading.Lock()
        self.captured = 0
        self.dropped = 0
        self._index = 0
        self._slot = 0
        self._closed = False
        mon = self._monitor(self._mss())
        self._box = self._region_box(mon)
        self._scale_override = scale
        self.scale = scale if scale is not None else detect_scale()
        self.screen = Screen(self._box["width"], self._box["height"], self._box["left"], self._box["top"], self.scale)
        self.t0 = time.monotonic()

    # --- mss per thread -------------------------------------------------------------------
    def _mss(self):
        sct = getattr(self._local, "sct", None)
        if sct is not None:
            return sct
        if self._closed:
            raise CaptureError("the screen source is closed")
        try:
            import mss

            if sys.platform == "darwin":  # full Retina pixels, not logical points (python-mss #257)
                import mss.darwin

                mss.darwin.IMAGE_OPTIONS = 0
            factory = getattr(mss, "MSS", None) or mss.mss
            sct = factory(backend=self.backend) if self.backend and sys.platform == "linux" else factory()
        except Exception as e:
            name = display_name()
            if sys.platform == "linux" and not name:
                raise CaptureError("no display: DISPLAY is not set (the live desktop needs an X11 session)") from e
            raise CaptureError(
                f"cannot open the screen{f' on display {name}' if name else ''}: {type(e).__name__}: {e}",
                gone=not display_alive(name),
            ) from e
        self._local.sct = sct
        with self._lock:
            self._all.append(sct)
        return sct

    def _monitor(self, sct) -> dict:
        monitors = sct.monitors
        if not 0 <= self.monitor_index < len(monitors):
            raise CaptureError(
                f"monitor {self.monitor_index} does not exist; this display has monitors 1..{len(monitors) - 1} "
                "(0 is all of them together)"
            )
        m = monitors[self.monitor_index]
        return {"left": m["left"], "top": m["top"], "width": m["width"], "height": m["height"]}

    def _region_box(self, mon: dict) -> dict:
        if self.region is None:
            return mon
        left, top, width, height = (int(v) for v in self.region)
        if width <= 0 or height <= 0 or left < 0 or top < 0 or left + width > mon["width"] or top + height > mon["height"]:
            raise CaptureError(
                f"region {self.region} (left, top, width, height) is not inside monitor "
                f"{self.monitor_index} ({mon['width']}x{mon['height']})"
            )
        return {"left": mon["left"] + left, "top": mon["top"] + top, "width": width, "height": height}

    # --- clock and grabbing -----------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the source started, on the clock frames are stamped with."""
        return time.monotonic() - self.t0

    def _wait_slot(self) -> None:
        if not self._period:
            return
        target = self._slot * self._period
        now = self.now()
        if now < target:
            time.sleep(target - now)
        else:
            late = int((now - target) / self._period)
            if late:
                self.dropped += late
                self._slot += late
        self._slot += 1

    def grab(self) -> Frame:
        """The next frame (sleeping to the fps slot when capped); raises :class:`CaptureError`."""
        self._wait_slot()
        sct = self._mss()
        try:
            shot = sct.grab(self._box)
        except Exception as e:
            raise failed(e, "screen capture failed") from e
        w, h = shot.size
        pixels = np.frombuffer(shot.raw, dtype=np.uint8).reshape(h, w, 4)
        t = self.now()
        screen = self.screen
        if w != screen.width or h != screen.height:
            # macOS with IMAGE_OPTIONS = 0: the grab is in pixels while monitors are in points.
            scale = self._scale_override or round(w / self._box["width"], 4)
            screen = Screen(w, h, round(self._box["left"] * scale), round(self._box["top"] * scale),
                            min(4.0, max(0.5, scale)))
            self.screen, self.scale = screen, screen.scale
        frame = Frame(pixels, t, self._index, screen)
        self._index += 1
        self.captured += 1
        return frame

    def close(self) -> None:
        """Close the mss instances (each in whatever state its thread left it)."""
        self._closed = True
        with self._lock:
            all_, self._all = self._all, []
        for sct in all_:
            try:
                sct.close()
            except Exception:
                pass
        self._local = threading.local()

    def info(self) -> dict:
        return {
            "monitor": self.monitor_index,
            "region": list(self.region) if self.region else None,
            "fps": self.fps,
            "captured": self.captured,
            "dropped": self.dropped,
            "screen": self.screen.to_json(),
        }

    def __enter__(self) -> ScreenSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
