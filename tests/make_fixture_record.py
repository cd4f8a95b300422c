"""Record the ``xdotool-record`` fixture: ``dw record`` on a private Xvfb while xdotool plays the human.

    .venv/bin/python tests/make_fixture_record.py [OUT_DIR]   # default fixtures/sessions/xdotool-record

A 640x480 Xvfb runs the Tk target app (tests/apps/tk_target.py); ``dw record`` records at 10 fps;
xdotool moves the pointer, clicks the app's button, clicks its entry, types a word, presses Enter,
double-clicks and scrolls; SIGINT stops the recorder. ``play_and_record`` is shared with
tests/test_record.py.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import TkApp, Xvfb, start_xvfb, stop_xvfb  # noqa: E402

WORD = "hello"


def xdo(server: Xvfb, *args: str) -> None:
    subprocess.run(["xdotool", *args], env=server.env, check=True)


def play_and_record(server: Xvfb, app: TkApp, out: Path, fps: float = 10) -> dict:
    """Run ``dw record`` into ``out`` while xdotool plays a short demo; returns what was played."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "record", "--out", str(out), "--fps", str(fps), "--max-seconds", "60",
         "--instruction", f"click the button, then type {WORD!r} into the entry"],
        env={**server.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ev = out / "events.jsonl"
            if ev.exists() and '"start"' in ev.read_text():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"dw record exited early: {proc.communicate()}")
            time.sleep(0.05)
        time.sleep(0.3)
        bx, by = app.centre("button")
        ex, ey = app.centre("entry")
        dx, dy = 40, 60  # an empty spot for the double click and the scroll
        xdo(server, "mousemove", "100", "100")
        time.sleep(0.25)
        xdo(server, "mousemove", str(bx), str(by))
        time.sleep(0.25)
        xdo(server, "click", "1")
        time.sleep(0.6)
        xdo(server, "mousemove", str(ex), str(ey))
        time.sleep(0.25)
        xdo(server, "click", "1")
        time.sleep(0.6)
        xdo(server, "type", "--delay", "40", WORD)
        xdo(server, "key", "Return")
        time.sleep(0.3)
        xdo(server, "mousemove", str(dx), str(dy))
        time.sleep(0.25)
        xdo(server, "click", "--repeat", "2", "--delay", "80", "1")
        time.sleep(0.6)
        xdo(server, "click", "5")  # wheel down
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "button": (bx, by), "entry": (ex, ey),
            "double": (dx, dy), "word": WORD, "size": (server.width, server.height)}


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "fixtures" / "sessions" / "xdotool-record"
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    server = start_xvfb(640, 480)
    app = None
    try:
        log = out.parent / f".{out.name}-tk.jsonl"
        log.unlink(missing_ok=True)
        app = TkApp(server, log)
        played = play_and_record(server, app, out)
    finally:
        if app is not None:
            app.close()
            app.log.unlink(missing_ok=True)
        stop_xvfb(server.proc)
    if played["rc"] != 0:
        print(played["stderr"], file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in out.iterdir())
    print(json.dumps({"session": str(out), "bytes": size, "button": played["button"], "entry": played["entry"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
