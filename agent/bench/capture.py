"""``dw bench capture``: grab and act latency on a real X server, per resolution.

Each size gets its own Xvfb and its own child process (pyautogui binds to ``$DISPLAY`` at import).
``grab`` is our capture (:class:`capture.live.ScreenSource`, mss with XShm), ``peer_grab`` the
whole-screen ``PIL.ImageGrab.grab()`` (XCB GetImage) screenshot-per-step runtimes use, and ``act``
one move or click sent through the :class:`agent.desktops.executor.Executor` (pyautogui, XTest).
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
COLUMNS = ("grab", "peer_grab", "act_move", "act_click")


def measure(width: int, height: int, reps: int) -> dict:
    """In the child: one Xvfb at this size."""
    from agent.desktops.xvfb import start_xvfb

    server = start_xvfb(width, height)
    os.environ["DISPLAY"] = server.display
    try:
        from PIL import ImageGrab

        from agent.desktops.executor import Executor
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
    return {"size": f"{width}x{height}", **{c: percentiles(v) for c, v in t.items()}}


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
            "note": "Xvfb per size; grab = mss (XShm) via ScreenSource; peer_grab = PIL.ImageGrab.grab() "
                    "(XCB GetImage); act = Executor.apply through pyautogui (XTest)"}


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
        t.add_row(r["size"], *[f"{r[c]['p50_ms']:.2f} / {r[c]['p95_ms']:.2f}" for c in COLUMNS])
    return t


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
