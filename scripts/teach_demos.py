"""Record demonstrations of an apps-suite task the way a person makes them: ``dw record`` on a
private 640x480 Xvfb showing the task's app, with xdotool moving the real pointer along a path
and clicking, then pressing ``dw record``'s done hotkey. The teaching figure in docs/teach.md
comes from demos made by this script (the person's targets come from the app's own state, as the
scripted expert's do).

    python scripts/teach_demos.py --task tk-settings --seeds 0-29 --out runs/teach-demos

Each seed becomes one session folder, ``OUT/<task>-<seed>``; a seed the person did not finish
(the app reported a wrong step) is deleted and reported.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.desktops.apps.desktop import APP_SIZE, AppDesktop, AppWorld  # noqa: E402
from agent.desktops.apps.tasks import TASKS  # noqa: E402
from policies.actions import Click, Type, Wait  # noqa: E402

READY = "dw record: recording into"
DONE_HOTKEY = "ctrl+alt+shift+d"


def xdo(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True)


def pointer() -> tuple[int, int]:
    out = subprocess.run(["xdotool", "getmouselocation", "--shell"], check=True, capture_output=True, text=True)
    kv = dict(line.split("=", 1) for line in out.stdout.split())
    return int(kv["X"]), int(kv["Y"])


def glide(rng: random.Random, x: int, y: int) -> None:
    """Move the pointer to (x, y) as a hand does: 8-16 eased steps over 0.25-0.6 s, a little off-line."""
    x0, y0 = pointer()
    n = rng.randint(8, 16)
    bend = rng.uniform(-0.15, 0.15)
    dur = rng.uniform(0.25, 0.6)
    for i in range(1, n + 1):
        t = i / n
        e = t * t * (3 - 2 * t)
        px = x0 + (x - x0) * e - (y - y0) * bend * t * (1 - t)
        py = y0 + (y - y0) * e + (x - x0) * bend * t * (1 - t)
        xdo("mousemove", str(round(px)), str(round(py)))
        time.sleep(dur / n)


def person_point(rng: random.Random, desk: AppDesktop, nx: float, ny: float) -> tuple[int, int]:
    """Where a person clicks for the expert's point: somewhere inside the same target, not its centre."""
    px, py = desk.screen.to_pixels(nx, ny)
    for name, (x, y, w, h) in desk.state.get("targets", {}).items():
        if x <= px < x + w and y <= py < y + h:
            lo, hi = (0.05, 0.45) if name.startswith(("radio:", "check:")) else (0.25, 0.75)
            return round(x + w * rng.uniform(lo, hi)), round(y + h * rng.uniform(0.3, 0.7))
    return round(px), round(py)


def record_one(world: AppWorld, task: str, seed: int, out: Path, rng: random.Random) -> bool:
    desk = AppDesktop(task, seed, world)
    env = {**os.environ, "DISPLAY": world.display}
    cmd = [sys.executable, "-m", "agent.cli.main", "record", "--out", str(out), "--instruction", desk.instruction,
           "--json", "--fps", "10", "--max-seconds", "60"]
    rec = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in rec.stderr:
            if line.startswith(READY):
                break
        else:
            raise RuntimeError(f"dw record did not start: exit {rec.wait()}")
        time.sleep(rng.uniform(0.3, 0.8))  # read the instruction
        outcome = None
        for _ in range(12):
            desk.apply(Wait(0.0))  # reads the app's state
            outcome = desk.task.outcome(desk.state, desk.goal)
            if outcome is not None:
                break
            acts = desk.task.expert(desk.state, desk.goal, desk.point)
            if not acts:
                time.sleep(0.1)
                continue
            for a in acts:
                if isinstance(a, Click):
                    x, y = person_point(rng, desk, a.x, a.y)
                    glide(rng, x, y)
                    time.sleep(rng.uniform(0.08, 0.25))
                    xdo("click", "--repeat", str(a.count), "1")
                elif isinstance(a, Type):
                    xdo("type", "--delay", "40", a.text)
                else:
                    raise RuntimeError(f"the person cannot do {a!r}")
                time.sleep(rng.uniform(0.3, 0.7))
        ok = bool(outcome)
        time.sleep(rng.uniform(0.4, 0.9))  # look at the finished screen
        xdo("key", DONE_HOTKEY)
        _, err = rec.communicate(timeout=20)
        if rec.returncode != 0:
            raise RuntimeError(f"dw record exited {rec.returncode}: {err.strip()[-300:]}")
        return ok
    finally:
        if rec.poll() is None:
            rec.terminate()
            rec.wait(10)
        desk.close()


def seeds(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="tk-settings", choices=sorted(TASKS))
    ap.add_argument("--seeds", default="0-29", help="e.g. 0-29 or 0,3,5-9")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed, todo = [], seeds(args.seeds)
    with AppWorld(size=APP_SIZE) as world:
        for s in todo:
            d = out / f"{args.task}-{s}"
            if d.exists():
                shutil.rmtree(d)
            if not record_one(world, args.task, s, d, random.Random(s)):
                shutil.rmtree(d, ignore_errors=True)
                failed.append(s)
            print(f"{d}: {'ok' if s not in failed else 'not finished, deleted'}", flush=True)
    print(f"{len(todo) - len(failed)} demos in {out}" + (f"; not finished: {failed}" if failed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
