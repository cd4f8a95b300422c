"""Incremental capture on X11: copy only what changed (XDamage) into persistent frame buffers.

:class:`IncrementalScreenSource` is a :class:`capture.live.ScreenSource` that, where the X server
has the DAMAGE extension, asks the server which rectangles of the root window were drawn since the
last grab and copies only those (mss, XShm per rectangle) into a frame buffer it keeps. A click's
reaction at 5120x2880 is then a few kilobytes copied instead of a 59 MB grab. Where the extension
(or python-xlib, or X11 itself) is missing, every grab is a full one, as in ``ScreenSource``.

**What a frame carries.** Frames are :class:`ChangedFrame`: a :class:`capture.frame.Frame` with one
more field, ``changed``: the rectangles ``(left, top, width, height)`` in frame pixels that may
differ from the previous frame of this source, or ``None`` when the whole frame may have changed
(the first grab, a grab too wide for regions, the fallback). An empty tuple means nothing changed. Consumers
that know nothing of it see an ordinary Frame.

**Correctness.** Each grab first makes a round trip and takes every ``DamageNotify`` queued by
then, then sends ``DamageSubtract`` (the server's damage region is emptied) and makes another
round trip before copying: each event taken is for damage the subtract cleared, so drawing later
over the same area is reported again (the server reports only damage that grows its region).
Drawing between the two round trips is cleared but its events stay queued, and the next grab
copies it; drawing after the subtract is reported at the next grab. No change is lost. The
screen is also re-read a band of rows at a time (1/16 of them every ``refresh_s`` / 16 seconds),
compared with the buffer and any difference copied and reported in ``changed``: drift from anything
damage does not see (none is known on Xvfb or Xorg without a compositor) lasts at most
``refresh_s``, and no grab pays for a whole-screen refresh.

**Frame buffers and retention.** A frame's ``pixels`` is a read-only view of one buffer of a small
pool. A buffer is written again only when no frame (and no view of one) still refers to it, so a
consumer may keep frames as long as it likes; each pooled buffer remembers the rectangles it
missed and catches up from the newest buffer (a memory copy of the changed area) when reused. A
consumer that holds many frames at once grows the pool to ``max_buffers``, after which a held
buffer is left to its frame and a new one is made (one full-frame copy). The pool holds at most
``max_buffers`` frames' worth of memory (59 MB each at 5120x2880); a consumer that drops each frame
before the next grab uses one buffer, updated in place.

Only ``capture.frame`` and ``capture.live`` are imported from this project.
"""

from __future__ import annotations

import select
import sys
import threading
import time

import numpy as np

from capture.frame import ChangedFrame, Rect
from capture.live import CaptureError, ScreenSource, display_name, failed

# Above this many rectangles in one grab, their bounding box is copied instead (one round trip).
MAX_RECTS = 24
# Above this fraction of the frame damaged, one full grab is cheaper than many regions.
FULL_FRACTION = 0.5
# A pooled buffer that missed more rectangles than this is caught up with one full memory copy.
MAX_STALE = 64
# The refresh re-reads the screen in this many bands of rows, one every refresh_s / REFRESH_BANDS.
REFRESH_BANDS = 16


class _Buffer:
    __slots__ = ("array", "stale")

    def __init__(self, array: np.ndarray):
        self.array = array
        self.stale: list[Rect] | None = None  # rectangles missed since last written; None = all

    def free(self) -> bool:
        # Referrers: self.array, getrefcount's argument. Any more is a frame's view (or a view of it).
        return sys.getrefcount(self.array) <= 2


def _clip(x: int, y: int, w: int, h: int, box: dict) -> Rect | None:
    x0, y0 = max(x, box["left"]), max(y, box["top"])
    x1, y1 = min(x + w, box["left"] + box["width"]), min(y + h, box["top"] + box["height"])
    if x1 <= x0 or y1 <= y0:
        return None
    return x0 - box["left"], y0 - box["top"], x1 - x0, y1 - y0


def _bbox(rects: list[Rect]) -> Rect:
    x0 = min(r[0] for r in rects)
    y0 = min(r[1] for r in rects)
    x1 = max(r[0] + r[2] for r in rects)
    y1 = max(r[1] + r[3] for r in rects)
    return x0, y0, x1 - x0, y1 - y0


def coalesce(rects: list[Rect], max_rects: int = MAX_RECTS) -> list[Rect]:
    """Drop rectangles inside another, and fall back to the bounding box above ``max_rects``."""
    rects = sorted(set(rects), key=lambda r: -r[2] * r[3])
    kept: list[Rect] = []
    for r in rects:
        if not any(k[0] <= r[0] and k[1] <= r[1] and r[0] + r[2] <= k[0] + k[2] and r[1] + r[3] <= k[1] + k[3]
                   for k in kept):
            kept.append(r)
    if len(kept) > max_rects:
        return [_bbox(kept)]
    return kept


class IncrementalScreenSource(ScreenSource):
    """A :class:`ScreenSource` whose grabs copy only what changed (XDamage), returning
    :class:`ChangedFrame`. Extra keywords: ``refresh_s`` (seconds to re-read the whole screen, a band
    of rows at a time, None for
    never), ``max_buffers`` (frame buffers pooled, see the module docstring), ``damage`` (False
    forces full grabs: the fallback, for comparison), ``backend`` (mss's, as in ScreenSource:
    ``xgetimage`` copies each rectangle with a plain GetImage instead of XShm), ``idle_s`` (with no fps
    cap, a grab that finds nothing drawn waits up to this long for drawing before it returns the
    unchanged frame, and returns as soon as something is drawn: a loop on a still screen sleeps
    instead of spinning, and still sees a change at once; 0 never waits). ``incremental`` tells
    whether damage tracking is on; ``full_grabs`` and ``region_grabs`` count what the grabs did."""

    def __init__(self, monitor: int = 1, region: tuple[int, int, int, int] | None = None,
                 fps: float | None = None, scale: float | None = None, *, refresh_s: float | None = 2.0,
                 max_buffers: int = 4, damage: bool = True, backend: str | None = None, idle_s: float = 0.0):
        super().__init__(monitor, region, fps, scale, backend=backend)
        if refresh_s is not None and not refresh_s > 0:
            raise ValueError(f"refresh_s must be positive or None, got {refresh_s}")
        if not 0.0 <= idle_s <= 1.0:
            raise ValueError(f"idle_s must be within [0, 1] seconds, got {idle_s}")
        self.refresh_s = refresh_s
        self.idle_s = float(idle_s)
        self.max_buffers = max(2, int(max_buffers))
        self._grab_lock = threading.Lock()
        self._pool: list[_Buffer] = []
        self._newest: _Buffer | None = None
        self._last_band = time.monotonic()
        self._band = 0
        self.full_grabs = 0
        self.region_grabs = 0
        self.band_refreshes = 0
        self.fallback_reason = ""
        self._xd = None
        self._damage = None
        if damage:
            self._open_damage()
        else:
            self.fallback_reason = "damage tracking turned off"

    @property
    def incremental(self) -> bool:
        return self._damage is not None

    def _open_damage(self) -> None:
        if sys.platform != "linux" or not display_name():
            self.fallback_reason = "not an X11 display"
            return
        try:
            from Xlib import display
            from Xlib.ext import damage

            xd = display.Display()
            if not xd.has_extension("DAMAGE"):
                xd.close()
                self.fallback_reason = "the X server has no DAMAGE extension"
                return
            xd.damage_query_version()
            self._damage = xd.screen().root.damage_create(damage.DamageReportDeltaRectangles)
            self._notify = xd.extension_event.DamageNotify
            self._xd = xd
        except Exception as e:  # no python-xlib, or the server refused: full grabs
            self.fallback_reason = f"damage tracking unavailable: {type(e).__name__}: {e}"
            self._damage = None

    # --- the server's damage ------------------------------------------------------------------
    def _take_damage(self) -> list[Rect]:
        """Empty the server's damage region and return what it held (frame pixels, clipped)."""
        xd = self._xd
        try:
            # Read, then subtract: a DamageNotify taken here must be for damage the subtract then
            # clears. Read after the subtract, an event for drawing that came between the two would
            # be taken while its area stayed damaged, and the server reports only damage that grows
            # the region: later drawing over that area would never be reported (seen: lost pixels).
            xd.sync()  # a round trip: every DamageNotify for damage so far is now queued
            rects: list[Rect] = []
            while xd.pending_events():
                e = xd.next_event()
                if e.type == self._notify:
                    a = e.area
                    r = _clip(a.x, a.y, a.width, a.height, self._box)
                    if r is not None:
                        rects.append(r)
            xd.damage_subtract(self._damage, 0, 0)
            xd.sync()  # the region is empty before the copy; events after it stay queued for the next grab
            return rects
        except Exception as e:
            raise failed(e, "damage tracking failed") from e

    def _wait_for_drawing(self, timeout: float) -> None:
        """Return when a DamageNotify is queued or on its way (the server's region was emptied by
        the last :meth:`_take_damage`, so any drawing since sends one), or after ``timeout``."""
        xd = self._xd
        try:
            if not xd.pending_events():
                select.select([xd.fileno()], [], [], timeout)
        except Exception as e:
            raise failed(e, "damage tracking failed") from e

    def _shot(self, box: dict) -> np.ndarray:
        sct = self._mss()
        try:
            shot = sct.grab(box)
        except Exception as e:
            raise failed(e, "screen capture failed") from e
        w, h = shot.size
        return np.frombuffer(shot.raw, dtype=np.uint8).reshape(h, w, 4)

    # --- buffers ------------------------------------------------------------------------------
    def _buffer(self, whole: bool) -> _Buffer:
        """A pooled buffer nobody refers to (the newest first: it only lacks this grab's change), or a
        new one: a copy of the newest, or uninitialised when ``whole`` (a full grab will fill it)."""
        newest = self._newest
        if newest is not None and newest.free():
            return newest
        for b in self._pool:
            if b is not newest and b.free():
                return b
        if len(self._pool) >= self.max_buffers:  # leave the oldest held buffer to its frames
            drop = next(b for b in self._pool if b is not newest)
            self._pool.remove(drop)
        h, w = self.screen.height, self.screen.width
        fresh = whole or newest is None
        b = _Buffer(np.empty((h, w, 4), np.uint8) if fresh else newest.array.copy())
        b.stale = None if fresh else []
        self._pool.append(b)
        return b

    def _frame(self, buf: _Buffer, changed: tuple[Rect, ...] | None) -> ChangedFrame:
        for b in self._pool:  # every other buffer now misses this grab's change
            if b is buf or b.stale is None:
                continue
            if changed is None or len(b.stale) + len(changed) > MAX_STALE:
                b.stale = None
            else:
                b.stale.extend(changed)
        buf.stale = []
        self._newest = buf
        view = buf.array.view()
        view.flags.writeable = False
        frame = ChangedFrame(view, self.now(), self._index, self.screen, changed, id(self))
        self._index += 1
        self.captured += 1
        return frame

    # --- grabbing -----------------------------------------------------------------------------
    def grab(self) -> ChangedFrame:
        """The next frame (sleeping to the fps slot when capped); raises :class:`CaptureError`."""
        if self._damage is None:
            f = super().grab()
            return ChangedFrame(f.pixels, f.t, f.index, f.screen, None, id(self))
        with self._grab_lock:
            self._wait_slot()
            rects = self._take_damage()
            if not rects and self.idle_s and not self._period and self._newest is not None:
                self._wait_for_drawing(self.idle_s)
                rects = self._take_damage()
            frame_area = self.screen.width * self.screen.height
            rects = coalesce(rects)
            # Much damaged: one full grab is cheaper than many regions (and ``changed`` still says where).
            first = self._newest is None
            wide = sum(w * h for _, _, w, h in rects) > FULL_FRACTION * frame_area
            buf = self._buffer(whole=first or wide)
            if first or wide:
                pixels = self._shot(self._box)
                if pixels.shape != buf.array.shape:
                    raise CaptureError(f"the screen changed size to {pixels.shape[1]}x{pixels.shape[0]}; "
                                       "open a new source")
                np.copyto(buf.array, pixels)
                self.full_grabs += 1
                return self._frame(buf, None if first else tuple(rects))
            if buf is self._newest:
                pass  # up to date but for this grab's change
            elif buf.stale is None:
                np.copyto(buf.array, self._newest.array)
            else:
                src = self._newest.array
                for x, y, w, h in coalesce(buf.stale, MAX_STALE):
                    buf.array[y:y + h, x:x + w] = src[y:y + h, x:x + w]
            bx, by = self._box["left"], self._box["top"]
            for x, y, w, h in rects:
                buf.array[y:y + h, x:x + w] = self._shot({"left": bx + x, "top": by + y, "width": w, "height": h})
            now = time.monotonic()
            if self.refresh_s is not None and now - self._last_band >= self.refresh_s / REFRESH_BANDS:
                self._last_band = now
                band = self._refresh_band(buf)
                if band is not None:
                    rects.append(band)
            self.region_grabs += 1
            return self._frame(buf, tuple(rects))

    def _refresh_band(self, buf: _Buffer) -> Rect | None:
        """Re-read the next band of rows into ``buf``: the part that differed, or None."""
        h, w = self.screen.height, self.screen.width
        y0, y1 = self._band * h // REFRESH_BANDS, (self._band + 1) * h // REFRESH_BANDS
        self._band = (self._band + 1) % REFRESH_BANDS
        self.band_refreshes += 1
        if y0 == y1:
            return None
        shot = self._shot({"left": self._box["left"], "top": self._box["top"] + y0, "width": w, "height": y1 - y0})
        old = buf.array[y0:y1]
        diff = shot.view(np.uint32)[..., 0] != old.view(np.uint32)[..., 0]  # one compare a pixel
        rows = np.flatnonzero(diff.any(axis=1))
        if not len(rows):
            return None
        cols = np.flatnonzero(diff.any(axis=0))
        ya, yb, xa, xb = y0 + rows[0], y0 + rows[-1] + 1, cols[0], cols[-1] + 1
        buf.array[ya:yb, xa:xb] = shot[ya - y0:yb - y0, xa:xb]
        return int(xa), int(ya), int(xb - xa), int(yb - ya)

    def close(self) -> None:
        with self._grab_lock:
            xd, self._xd, self._damage = self._xd, None, None
            self._pool, self._newest = [], None
        if xd is not None:
            try:
                xd.close()
            except Exception:
                pass
        super().close()

    def info(self) -> dict:
        return {**super().info(), "incremental": self.incremental, "fallback_reason": self.fallback_reason,
                "full_grabs": self.full_grabs, "region_grabs": self.region_grabs, "band_refreshes": self.band_refreshes,
                "refresh_s": self.refresh_s}
