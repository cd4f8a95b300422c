"""Capture → convert → encode throughput on a real X server (``dw bench pipeline``).

One Xvfb per size shows a realistic desktop (the virtual desktop with text-dense windows, as in
the live loop benchmark) while a second thread keeps changing it (a square moving across the
screen), so every frame carries motion. Capture (mss, on its own thread, no fps cap) feeds a
bounded queue; the stream encoder (colour conversion + encode, ``encoders.open_encoder``) drains
it on another thread. Frames per second are counted at the encoder's output: what the whole
pipeline sustains when the stages overlap, not the sum of their latencies.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

DEFAULT_SIZES = [(1920, 1080), (5120, 2880)]


def measure(width: int, height: int, seconds: float) -> dict:
    """In a child process: Xvfb at this size, the target app, capture and encode overlapped."""
    from agent.bench.live import TargetApp, desktop_content
    from agent.desktops.xvfb import start_xvfb
    from agent.stats import quantile

    scale = 2.0 if width >= 5120 else 1.0
    server = start_xvfb(width, height)
    os.environ["DISPLAY"] = server.display
    app = TargetApp(width, height, desktop_content(width, height, scale), server.env)
    try:
        from capture.live import ScreenSource
        from encoders import open_encoder

        enc = open_encoder(width, height, 30, "stream")
        src = ScreenSource(monitor=1)
        stop = threading.Event()
        frames: queue.Queue = queue.Queue(maxsize=2)
        counts = {"captured": 0, "encoded": 0, "bytes": 0, "dropped": 0}
        grab_ms: list[float] = []
        enc_ms: list[float] = []

        def mover() -> None:  # motion: a square walking across the desktop
            x = 0
            while not stop.is_set():
                side = max(40, width // 24)
                app.command(f"flip {x} {height // 3} {side} {side}", "flipped")
                app.command(f"clear {x} {height // 3} {side} {side}", "cleared")
                x = (x + side // 2) % (width - side)

        def capture() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                f = src.grab()
                grab_ms.append((time.perf_counter() - t0) * 1000)
                counts["captured"] += 1
                try:
                    frames.put(f, timeout=0.5)
                except queue.Full:
                    counts["dropped"] += 1

        def encode() -> None:
            while not stop.is_set():
                try:
                    f = frames.get(timeout=0.5)
                except queue.Empty:
                    continue
                t0 = time.perf_counter()
                for pkt in enc.encode(f.pixels, int(f.t * 1000)):
                    counts["bytes"] += len(pkt[0])
                enc_ms.append((time.perf_counter() - t0) * 1000)
                counts["encoded"] += 1

        threads = [threading.Thread(target=fn, daemon=True) for fn in (mover, capture, encode)]
        for th in threads:
            th.start()
        time.sleep(min(2.0, seconds / 3))  # warm-up: the encoder's first frames and the probe
        start = dict(counts)
        t0 = time.perf_counter()
        time.sleep(seconds)
        dt = time.perf_counter() - t0
        end = dict(counts)
        stop.set()
        for th in threads:
            th.join(5)
        src.close()
        enc.close()

        def pct(xs: list[float], q: float) -> float:
            return round(quantile(xs, q), 2)

        n = end["encoded"] - start["encoded"]
        return {"size": f"{width}x{height}", "codec": enc.decision.get("codec"), "seconds": round(dt, 2),
                "fps": round(n / dt, 1), "frames": n, "capture_ms": {"p50": pct(grab_ms, .5), "p95": pct(grab_ms, .95)},
                "convert_encode_ms": {"p50": pct(enc_ms, .5), "p95": pct(enc_ms, .95)},
                "mbit_per_s": round((end["bytes"] - start["bytes"]) * 8 / dt / 1e6, 2),
                "captured_not_encoded": end["dropped"] - start["dropped"]}
    finally:
        app.close()
        server.stop()


def run(sizes=None, quick: bool = False) -> dict:
    rows = []
    for w, h in sizes or DEFAULT_SIZES:
        p = subprocess.run([sys.executable, "-m", "agent.bench.pipeline", str(w), str(h), "3" if quick else "10"],
                           capture_output=True, text=True, timeout=300)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            rows.append({"size": f"{w}x{h}", "error": (p.stderr.strip().splitlines() or ["no output"])[-1]})
        else:
            rows.append(json.loads(lines[-1]))
    return {"rows": rows, "cores": os.cpu_count(),
            "note": "capture (mss on Xvfb) and convert+encode (stream purpose) on separate threads, moving content"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="capture → convert → encode, overlapped, on Xvfb (stream purpose)")
    for col in ("size", "codec", "fps", "capture p50/p95 ms", "convert+encode p50/p95 ms", "Mbit/s", "skipped"):
        t.add_column(col, justify="right")
    for r in result["rows"]:
        if "error" in r:
            t.add_row(r["size"], "error", r["error"], "", "", "", "")
            continue
        t.add_row(r["size"], str(r["codec"]), f"{r['fps']:.1f}",
                  f"{r['capture_ms']['p50']} / {r['capture_ms']['p95']}",
                  f"{r['convert_encode_ms']['p50']} / {r['convert_encode_ms']['p95']}",
                  f"{r['mbit_per_s']:.1f}", str(r["captured_not_encoded"]))
    return t


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))))
