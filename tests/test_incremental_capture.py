"""Incremental capture (XDamage) on a private Xvfb: every frame equals a full grab taken right after
it, pixel for pixel, under moving content (fills, text, scrolling copies, windows moved, mapped
and unmapped, a concurrent drawing client); ``changed`` covers every pixel that changed; frames a
consumer keeps are never written again; and the fallback without damage gives full frames."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from tests.conftest import start_xvfb

pytestmark = pytest.mark.xvfb


@pytest.fixture(scope="module")
def server():
    s = start_xvfb(640, 480)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = s.display
    try:
        yield s
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        s.stop()


class Painter:
    """A second X client that draws: windows, fills, text, scrolls, moves, maps and unmaps."""

    def __init__(self):
        from Xlib import display

        self.d = display.Display()
        scr = self.d.screen()
        self.root = scr.root
        self.depth = scr.root_depth
        self.wins = []
        for i, (x, y, w, h) in enumerate([(20, 30, 300, 200), (250, 150, 320, 240), (400, 20, 120, 90)]):
            win = self.root.create_window(x, y, w, h, 1, self.depth, background_pixel=0x203040 + 0x301010 * i,
                                          border_pixel=0xffffff)
            win.map()
            self.wins.append(win)
        self.gc = self.wins[0].create_gc(foreground=0xff0000, background=0)
        self.d.sync()

    def step(self, i: int, rng: np.random.Generator) -> None:
        win = self.wins[i % len(self.wins)]
        kind = i % 7
        self.gc.change(foreground=int(rng.integers(0, 1 << 24)))
        if kind == 0:
            win.fill_rectangle(self.gc, int(rng.integers(0, 250)), int(rng.integers(0, 180)),
                               int(rng.integers(1, 60)), int(rng.integers(1, 40)))
        elif kind == 1:
            win.draw_text(self.gc, int(rng.integers(0, 200)), int(rng.integers(10, 180)), f"step {i} text")
        elif kind == 2:  # scroll the window's content up by a few lines
            win.copy_area(self.gc, win, 0, 7, 280, 150, 0, 0)
        elif kind == 3:  # move a window (exposes what was under it)
            win.configure(x=int(rng.integers(0, 400)), y=int(rng.integers(0, 300)))
        elif kind == 4:  # unmap then map back
            win.unmap()
            self.d.sync()
            win.map()
        elif kind == 5:  # the root's own background
            self.root.change_attributes(background_pixel=int(rng.integers(0, 1 << 24)))
            self.root.clear_area(0, 0, 0, 0)
        else:  # a single pixel
            win.point(self.gc, int(rng.integers(0, 100)), int(rng.integers(0, 100)))
        self.d.sync()

    def close(self):
        self.d.close()


def covered(changed, shape):
    mask = np.zeros(shape[:2], bool)
    for x, y, w, h in changed:
        mask[y:y + h, x:x + w] = True
    return mask


def test_incremental_frames_equal_full_grabs(server):
    from capture.incremental import ChangedFrame, IncrementalScreenSource
    from capture.live import ScreenSource

    painter = Painter()
    inc = IncrementalScreenSource(scale=1.0, refresh_s=None)
    full = ScreenSource(scale=1.0)
    rng = np.random.default_rng(0)
    try:
        assert inc.incremental, inc.fallback_reason
        first = inc.grab()
        assert isinstance(first, ChangedFrame) and first.changed is None  # the first grab is full
        prev = first.pixels.copy()
        kept = []
        for i in range(70):
            painter.step(i, rng)
            f = inc.grab()
            g = full.grab()
            assert f.pixels.shape == g.pixels.shape == (480, 640, 4)
            diff = np.any(f.pixels != g.pixels, axis=2)
            assert not diff.any(), f"step {i}: {int(diff.sum())} pixels differ from a full grab"
            # every pixel that changed since the previous frame lies inside ``changed``
            moved = np.any(f.pixels != prev, axis=2)
            assert f.changed is not None
            assert not (moved & ~covered(f.changed, f.pixels.shape)).any(), f"step {i}: change outside {f.changed}"
            assert not f.pixels.flags.writeable
            prev = f.pixels.copy()
            if i % 10 == 0:
                kept.append((f, prev))
            if i % 3 == 2:  # dropped before the next grab: its buffer is updated in place
                del f
                del g
        assert inc.region_grabs + inc.full_grabs == 71 and inc.region_grabs > 50
        # frames kept by the consumer were never written again
        for f, snapshot in kept:
            assert np.array_equal(f.pixels, snapshot)
        nothing = inc.grab()
        assert nothing.changed == ()
    finally:
        inc.close()
        full.close()
        painter.close()


def test_concurrent_drawing_loses_nothing(server):
    from capture.incremental import IncrementalScreenSource
    from capture.live import ScreenSource

    painter = Painter()
    inc = IncrementalScreenSource(scale=1.0, refresh_s=None, max_buffers=2)
    full = ScreenSource(scale=1.0)
    stop = threading.Event()

    def draw():
        rng = np.random.default_rng(1)
        i = 0
        while not stop.is_set() and i < 3000:
            painter.step(i, rng)
            i += 1

    t = threading.Thread(target=draw, daemon=True)
    try:
        inc.grab()
        t.start()
        for _ in range(60):
            inc.grab()  # drawing goes on meanwhile
        stop.set()
        t.join(10)
        f, g = inc.grab(), full.grab()
        assert np.array_equal(f.pixels, g.pixels)
    finally:
        stop.set()
        inc.close()
        full.close()
        painter.close()


def test_refresh_and_fallback(server):
    from capture.incremental import IncrementalScreenSource
    from capture.live import ScreenSource

    painter = Painter()
    rng = np.random.default_rng(2)
    full = ScreenSource(scale=1.0)
    off = IncrementalScreenSource(scale=1.0, damage=False)
    always = IncrementalScreenSource(scale=1.0, refresh_s=1e-6)  # a band of rows re-read at every grab
    try:
        assert not off.incremental and off.fallback_reason
        for i in range(5):
            painter.step(i, rng)
            a, b, g = off.grab(), always.grab(), full.grab()
            assert a.changed is None and (b.changed is None) == (i == 0)
            assert np.array_equal(a.pixels, g.pixels) and np.array_equal(b.pixels, g.pixels)
        assert always.full_grabs == 1 and always.band_refreshes == 4 and always.info()["incremental"]
    finally:
        off.close()
        always.close()
        full.close()
        painter.close()


def test_the_refresh_mends_what_damage_missed(server):
    """Pixels that went wrong without damage (drift) are re-read, a band of rows a grab, reported
    in ``changed`` and mended within one round of the bands; nothing else is reported."""
    from capture.incremental import REFRESH_BANDS, IncrementalScreenSource
    from capture.live import ScreenSource

    full = ScreenSource(scale=1.0)
    src = IncrementalScreenSource(scale=1.0, refresh_s=1e-6, max_buffers=2)
    try:
        truth = full.grab().pixels.copy()
        src.grab()
        for buf in src._pool:  # what a missed damage event would leave: wrong pixels, no damage
            buf.array[300:310, 100:140] ^= 0xFF
        reported = []
        for _ in range(REFRESH_BANDS):
            f = src.grab()
            reported.extend(f.changed)
            del f
        assert np.array_equal(src.grab().pixels, truth)
        assert reported == [(100, 300, 40, 10)]
    finally:
        src.close()
        full.close()


def test_a_still_screen_waits_for_drawing(server):
    """With ``idle_s``, a grab with nothing drawn waits for drawing, and returns at the first."""
    import time

    from capture.incremental import IncrementalScreenSource

    painter = Painter()
    src = IncrementalScreenSource(scale=1.0, refresh_s=None, idle_s=1.0)
    try:
        src.grab()
        t0 = time.monotonic()
        still = src.grab()
        assert still.changed == () and time.monotonic() - t0 >= 0.9  # waited (nothing was drawn)
        timer = threading.Timer(0.2, painter.step, (0, np.random.default_rng(0)))
        timer.start()
        t0 = time.monotonic()
        moved = src.grab()
        waited = time.monotonic() - t0
        timer.join()
        assert moved.changed and waited < 0.9  # woke at the drawing, not at the timeout
        with pytest.raises(ValueError, match="idle_s"):
            IncrementalScreenSource(scale=1.0, idle_s=-1)
    finally:
        src.close()
        painter.close()


def test_coalesce():
    from capture.incremental import coalesce

    assert coalesce([(0, 0, 10, 10), (2, 2, 3, 3), (0, 0, 10, 10)]) == [(0, 0, 10, 10)]
    many = [(i * 3, 0, 2, 2) for i in range(30)]
    assert coalesce(many, max_rects=8) == [(0, 0, 89, 2)]
