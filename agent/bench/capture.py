"""``dw bench capture``: grab and act latency on a real X server, per resolution.

Each size gets its own Xvfb and its own child process (pyautogui binds to ``$DISPLAY`` at import).
``grab`` is our full-frame capture (:class:`capture.live.ScreenSource`, mss with XShm), ``peer_grab``
the whole-screen ``PIL.ImageGrab.grab()`` (XCB GetImage) screenshot-per-step runtimes use, and
``act`` one move or click sent through the :class:`agent.desktops.executor.Executor` (pyautogui, XTest).

``inc_grab`` is the incremental capture (:class:`capture.incremental.IncrementalScreenSource`:
XDamage, then only the damaged rectangles copied with XShm) with a small change before every grab:
a second X client moves a 64x64 square inside a window (the old place repainted, the new one
filled: the damage the server reports for it, ~5 k pixels), as a click's reaction does. ``inc_grab_getimage`` is
the same with each rectangle copied by a plain GetImage instead of XShm, and ``grab_changed`` the
full-frame grab under the same change (equal to ``grab``: a full grab copies everything anyway).
The drawing is the app's work and is not timed. After the timed grabs the incremental frame is
compared with a full grab (``inc_equal``); the refresh (a band of rows re-read
every ``refresh_s`` / 16, 2 s by default) is off while timing.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

from agent.stats import percentiles

DEFAULT_SIZES = [(640, 480), (1280, 720), (1920, 1080), (2560, 1440), (3840, 2160), (5120, 2880)]
COLUMNS = ("grab", "inc_grab", "inc_grab_getimage", "grab_changed", "peer_grab", "act_move", "act_click")


class _Square:
    """A second X client: a window with a 64x64 square that moves one step per call."""

    def __init__(self, width: int, height: int):
        from Xlib import display

        self.d = display.Display()
        scr = self.d.screen()
        self.ww, self.wh = min(800, width - 40), min(600, height - 40)
        self.win = scr.root.create_window(20, 20, self.ww, self.wh, 0, scr.root_depth, background_pixel=0x2a3b4c)
        self.win.map()
        self.gc = self.win.create_gc(foreground=0xff00ff)
        self.i = 0
        self.d.sync()

    def step(self) -> None:
        n = (self.ww - 64) // 16
        x, y = 16 * (self.i % n), 16 * ((self.i // n) % ((self.wh - 64) // 16))
        if self.i:
            self.win.clear_area(*self.last, 64, 64)
        self.win.fill_rectangle(self.gc, x, y, 64, 64)
        self.last = (x, y)
        self.i += 1
        self.d.sync()  # drawn before the grab: the app's work, not timed


def measure(width: int, height: int, reps: int) -> dict:
    """In the child: one Xvfb at this size."""
    from agent.desktops.xvfb import start_xvfb

    server = start_xvfb(width, height)
    os.environ["DISPLAY"] = server.display
    try:
        import numpy as np
        from PIL import ImageGrab

        from agent.desktops.executor import Executor
        from capture.incremental import IncrementalScreenSource
        from capture.live import ScreenSource
        from policies.actions import Click, Move

        src = ScreenSource(scale=1.0)
        clock = time.perf_counter_ns
        t: dict[str, list[int]] = {c: [] for c in COLUMNS}
        src.grab()  # warm: the XShm segment is made on the first grab
        for _ in range(reps):
            a = clock()
            src.grab()
            t["grab"].append(clock() - a)
        square = _Square(width, height)
        extra: dict = {}
        for col, backend in (("inc_grab", None), ("inc_grab_getimage", "xgetimage")):
            inc = IncrementalScreenSource(scale=1.0, refresh_s=None, backend=backend)
            extra["incremental"] = inc.incremental or inc.fallback_reason
            inc.grab()  # the first grab is a full one
            for _ in range(3):  # warm: the second pooled buffer is made (one full-frame copy)
                square.step()
                inc.grab()
            changed = []
            for _ in range(reps):
                square.step()
                a = clock()
                f = inc.grab()
                t[col].append(clock() - a)
                changed.append(f.changed_area())
            if backend is None:
                square.step()
                f = inc.grab()
                extra["inc_equal"] = bool(np.array_equal(f.pixels, src.grab().pixels))
                extra["changed_pixels_per_frame"] = int(sorted(changed)[len(changed) // 2])
            inc.close()
        for _ in range(max(3, reps // 3)):
            square.step()
            a = clock()
            src.grab()
            t["grab_changed"].append(clock() - a)
        for _ in range(max(3, reps // 3)):
            a = clock()
            ImageGrab.grab()
            t["peer_grab"].append(clock() - a)
        src.close()
        ex = Executor(src.screen, max_actions_per_second=None)
        rng = random.Random(0)
        ex.apply(Move(0.5, 0.5))
        for _ in range(reps):
            x, y = rng.uniform(0.05, 0.95), rng.uniform(0.05, 0.95)
            a = clock()
            ex.apply(Move(x, y))
            t["act_move"].append(clock() - a)
            a = clock()
            ex.apply(Click(x, y))
            t["act_click"].append(clock() - a)
    finally:
        server.stop()
    return {"size": f"{width}x{height}", **{c: percentiles(v) for c, v in t.items()}, **extra}


def run(sizes=None, quick: bool = False) -> dict:
    from agent.bench.live import ROOT

    reps = 10 if quick else 40
    rows = []
    for w, h in sizes or DEFAULT_SIZES:
        try:
            p = subprocess.run([sys.executable, "-m", "agent.bench.capture", str(w), str(h), str(reps)],
                               capture_output=True, text=True, cwd=ROOT, timeout=180)
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
            if p.returncode != 0 or not lines:
                rows.append({"size": f"{w}x{h}", "error": (p.stderr.strip().splitlines() or ["no output"])[-1]})
                continue
            rows.append(json.loads(lines[-1]))
        except subprocess.TimeoutExpired:
            rows.append({"size": f"{w}x{h}", "error": "timed out"})
    return {"rows": rows, "reps": reps,
            "note": "Xvfb per size; grab = mss (XShm) via ScreenSource; inc_grab = IncrementalScreenSource "
                    "(XDamage + XShm per damaged rectangle) with a 64x64 square moved before each grab; "
                    "inc_grab_getimage = the same with GetImage per rectangle; grab_changed = full grab under "
                    "the same change; peer_grab = PIL.ImageGrab.grab() (XCB GetImage); act = Executor.apply "
                    "through pyautogui (XTest)"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="capture and act on Xvfb (ms, p50 / p95)")
    t.add_column("size")
    for c in COLUMNS:
        t.add_column(c, justify="right")
    for r in result["rows"]:
        if "error" in r:
            t.add_row(r["size"], f"[red]{r['error']}", *[""] * (len(COLUMNS) - 1))
            continue
        t.add_row(r["size"], *[f"{r[c]['p50_ms']:.2f} / {r[c]['p95_ms']:.2f}" if c in r else "–" for c in COLUMNS])
    return t


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
