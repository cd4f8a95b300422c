"""Live end-to-end latency on a real X server: the harness shared by ``dw bench loop`` and ``baseline``.

One measurement runs in a child process (``python -m agent.bench.live SPEC_JSON``) that owns its
own Xvfb at the requested size (pyautogui binds to ``$DISPLAY`` once, at import, so one process per
X server keeps every number honest). In it:

- :mod:`agent.bench.xapp` shows a virtual-desktop screenshot full screen and, on command, flips a
  square to magenta at a recorded ``CLOCK_MONOTONIC`` time, and stamps every button press it gets;
- the agent — :class:`agent.loop.Agent` driving a :class:`agent.desktops.live.LiveDesktop` (mss capture on
  its thread, the :class:`agent.desktops.executor.Executor`, pyautogui) or the screenshot-per-step
  :class:`ScreenshotDesktop` peers use — runs continuously with a :class:`ChangeClickPolicy`;
- the end-to-end latency of one trial is ``press - flipped``: from the change being in the
  framebuffer to the agent's click being delivered by the X server, both on the same clock.

:class:`ChangeClickPolicy` is honest about what it is: it runs the real model (preprocessing and
forward pass of a pixel policy, or any Policy) on every real frame and discards its output —
the models here carry random or barely trained weights — then clicks the centre of the region
that differs from the first frame it saw (a cheap strided diff). The latency is therefore that of
the real model's work plus a click at the right place; the decision itself is not the model's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from agent.loop import STAGES
from agent.stats import percentiles

ROOT = Path(__file__).resolve().parents[2]
FLIP_PT = 96  # side of the flipped square, in logical points


def build_policy(name: str, device: str = "cpu"):
    """A policy by name; ``pixel-*`` sizes without a bundled checkpoint get random weights
    (latency does not depend on the weights). Returns (policy, how it was built)."""
    from policies.registry import PIXEL_SIZES, has_checkpoint, load_policy

    if name in PIXEL_SIZES and not has_checkpoint(name):
        import torch

        from policies.pixel import PixelConfig, PixelModel, PixelPolicy

        torch.manual_seed(0)
        model = PixelModel(PixelConfig.for_size(name)).eval()
        return PixelPolicy(model, name=name, device=device), "random weights from config"
    return load_policy(name, device=device), "bundled checkpoint" if name in PIXEL_SIZES else "loaded"


class ChangeClickPolicy:
    """Runs ``inner`` (the real model) on every frame, then clicks where the screen changed.

    The reference is the first frame seen. The diff is taken on every ``stride``-th pixel of every
    ``stride``-th row, and kept: a frame that says what changed since the one before it (the
    incremental capture's ``changed``) has the diff taken again only there. Once a region was
    clicked it is not clicked again until the screen returns to the reference (or a change appears
    elsewhere)."""

    def __init__(self, inner, stride: int = 8, threshold: int = 40):
        self.inner = inner
        self.name = f"change-click({getattr(inner, 'name', type(inner).__name__)})"
        self.stride = stride
        self.threshold = threshold
        self.ref: np.ndarray | None = None
        self.diff: np.ndarray | None = None
        self.index: tuple[int, int] | None = None  # (source, index) of the last frame
        self.clicked: tuple[float, float, float, float] | None = None
        self.steps = 0
        self.acted_steps: list[int] = []
        self.model_errors = 0

    def reset(self, instruction: str) -> None:
        self.inner.reset(instruction)
        self.ref, self.diff, self.index, self.clicked, self.steps, self.acted_steps = None, None, None, None, 0, []

    def _update_diff(self, frame) -> bool:
        """Bring ``self.diff`` up to ``frame``; False when this frame became the reference."""
        px, s = frame.pixels, self.stride
        changed = getattr(frame, "changed", None)
        follows = changed is not None and frame.follows(self.index)
        self.index = (getattr(frame, "source", 0), frame.index)
        shape = (-(-px.shape[0] // s), -(-px.shape[1] // s))
        if self.ref is None or self.ref.shape[:2] != shape:
            self.ref = np.ascontiguousarray(px[::s, ::s, :3])
            self.diff = np.zeros(shape, bool)
            return False
        boxes = [(0, 0, px.shape[1], px.shape[0])] if changed is None or not follows else changed
        for x, y, w, h in boxes:
            x0, y0, x1, y1 = -(-x // s), -(-y // s), -(-(x + w) // s), -(-(y + h) // s)
            if x0 < x1 and y0 < y1:
                now = px[y0 * s:y1 * s:s, x0 * s:x1 * s:s, :3].astype(np.int16)
                self.diff[y0:y1, x0:x1] = np.abs(now - self.ref[y0:y1, x0:x1]).max(axis=2) > self.threshold
        return True

    def act(self, observation) -> list:
        from policies.actions import Click

        step = self.steps
        self.steps += 1
        try:
            self.inner.act(observation)  # the real work on the real frame; its output is discarded
        except Exception:
            self.model_errors += 1  # e.g. a VLM's unparseable output: the work was done all the same
        if not self._update_diff(observation.frame):
            return []
        diff = self.diff
        if not diff.any():
            self.clicked = None
            return []
        ys, xs = np.nonzero(diff)
        h, w = diff.shape
        box = (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        c = self.clicked
        if c is not None and c[0] <= cx <= c[2] and c[1] <= cy <= c[3]:
            return []
        self.clicked = box
        self.acted_steps.append(step)
        return [Click(min(1.0, max(0.0, cx)), min(1.0, max(0.0, cy)))]


class ScreenshotDesktop:
    """The screenshot-per-step pipeline peer runtimes use, as a Desktop.

    ``observe``: ``PIL.ImageGrab.grab()`` (XCB GetImage of the whole screen), PNG encode (Pillow's
    defaults), base64 encode (what goes into the model request), base64 decode, PNG decode, RGB ->
    BGRA for the policy. ``apply``: the same :class:`Executor` (pyautogui) as ours, no settle sleep.
    Each stage's time is kept in ``timings`` (ns)."""

    kind = "screenshot"
    STAGES = ("grab", "png_encode", "base64", "decode")

    def __init__(self, scale: float = 1.0):
        from PIL import ImageGrab

        from agent.desktops.executor import Executor
        from capture import Screen

        self._grab = ImageGrab.grab
        w, h = self._grab().size
        self.screen = Screen(w, h, scale=scale)
        self.executor = Executor(self.screen, max_actions_per_second=None, failsafe=True)
        self.timings: dict[str, list[int]] = {s: [] for s in self.STAGES}
        self.png_bytes: list[int] = []
        self.t0 = time.monotonic()
        self._index = 0

    def observe(self):
        import cv2
        from PIL import Image

        from capture import Frame

        clock = time.perf_counter_ns
        t0 = clock()
        img = self._grab()
        t1 = clock()
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        png = buf.getvalue()
        t2 = clock()
        b64 = base64.b64encode(png)
        t3 = clock()
        dec = Image.open(io.BytesIO(base64.b64decode(b64)))
        rgb = np.asarray(dec.convert("RGB"))
        bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
        t4 = clock()
        for k, a, b in (("grab", t0, t1), ("png_encode", t1, t2), ("base64", t2, t3), ("decode", t3, t4)):
            self.timings[k].append(b - a)
        self.png_bytes.append(len(png))
        frame = Frame(bgra, self.now(), self._index, self.screen)
        self._index += 1
        return frame

    def apply(self, action) -> None:
        self.executor.apply(action)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def close(self) -> None:
        pass

    cursor = property(lambda self: self.executor.position())
    instruction = ""
    oracle = None
    finished = False
    success = None


class TargetApp:
    """The :mod:`agent.bench.xapp` child: flip/clear squares, read press times."""

    def __init__(self, width: int, height: int, background: np.ndarray | None, env: dict):
        self._tmp = None
        args = [sys.executable, "-m", "agent.bench.xapp", str(width), str(height)]
        if background is not None:
            self._tmp = tempfile.NamedTemporaryFile(suffix=".bgra", delete=False)
            self._tmp.write(np.ascontiguousarray(background).tobytes())
            self._tmp.close()
            args.append(self._tmp.name)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT,
                                     text=True, bufsize=1)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if self.wait_for("ready", 60) is None:
            self.proc.kill()
            raise RuntimeError("the target app (agent.bench.xapp) did not start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()

    def wait_for(self, kind: str, timeout: float, after: float = -1.0,
                 inside: tuple[int, int, int, int] | None = None) -> float | None:
        """The time of the first ``kind`` line stamped after ``after`` (and, for presses, at a point
        ``inside`` the given x, y, w, h rectangle), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    p = line.split()
                    if p and p[0] == kind and float(p[1]) > after:
                        if inside is not None:
                            x, y, w, h = inside
                            if not (x <= int(p[2]) < x + w and y <= int(p[3]) < y + h):
                                continue
                        return float(p[1])
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self._cond.wait(left)

    def command(self, cmd: str, reply: str) -> float:
        t = time.monotonic()
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        got = self.wait_for(reply, 10, after=t - 1e-3)
        if got is None:
            raise RuntimeError(f"the target app did not answer {cmd!r}")
        return got

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(3)
        except Exception:
            self.proc.kill()
        if self._tmp is not None:
            os.unlink(self._tmp.name)


def desktop_content(width: int, height: int, scale: float, seed: int = 0) -> np.ndarray:
    """A realistic desktop picture as BGRA: the virtual desktop (wallpaper, icons, a dialog) with
    three text-dense windows (an editor, a document, a list) and a photo-like panel on top, so
    captures and PNG sizes are like a working desktop's, not a near-empty wallpaper's."""
    import cv2

    from agent.desktops.virtual import VirtualDesktop

    desk = VirtualDesktop("close-dialog", seed=seed, size=(width, height), scale=scale)
    img = np.ascontiguousarray(desk.observe().pixels[:, :, :3])
    rng = np.random.default_rng(seed)
    words = ("the agent frame policy click window latency screen capture model token value return "
             "def class import self list dict width height print error file open stream encode").split()
    s = scale
    wins = [(0.03, 0.06, 0.45, 0.62), (0.50, 0.10, 0.46, 0.55), (0.20, 0.55, 0.50, 0.38)]
    for i, (fx, fy, fw, fh) in enumerate(wins):
        x0, y0, x1, y1 = int(fx * width), int(fy * height), int((fx + fw) * width), int((fy + fh) * height)
        img[y0:y1, x0:x1] = (250, 250, 250) if i != 0 else (40, 34, 30)
        img[y0:y0 + int(28 * s), x0:x1] = (225, 225, 225)
        colour = (30, 30, 30) if i != 0 else (200, 220, 210)
        line = int(18 * s)
        for y in range(y0 + int(48 * s), y1 - line, line):
            x = x0 + int(12 * s) + int(rng.integers(0, 4)) * int(16 * s)
            text = " ".join(rng.choice(words, int(rng.integers(3, 14))))
            cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42 * s, colour, max(1, int(s)), cv2.LINE_AA)
    # a photo-like panel (smooth noise at several scales)
    pw, ph = int(0.22 * width), int(0.30 * height)
    photo = np.zeros((ph, pw, 3), np.float32)
    for k in (4, 16, 64):
        n = rng.random((max(2, ph // k), max(2, pw // k), 3)).astype(np.float32)
        photo += cv2.resize(n, (pw, ph), interpolation=cv2.INTER_CUBIC) * (k / 84)
    photo += rng.random((ph, pw, 3)).astype(np.float32) * 0.08
    px0, py0 = int(0.74 * width), int(0.66 * height)
    img[py0:py0 + ph, px0:px0 + pw] = np.clip(photo * 255, 0, 255).astype(np.uint8)[: height - py0, : width - px0]
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))


def _trials(app: TargetApp, width: int, height: int, scale: float, n: int, timeout: float,
            rng: random.Random) -> tuple[list[float], int]:
    side = int(FLIP_PT * scale)
    lat, missed, prev = [], 0, None
    for _ in range(n):
        time.sleep(rng.uniform(0.12, 0.3))  # a random phase against the agent's loop
        while True:
            x, y = rng.randrange(side, width - 2 * side), rng.randrange(side, height - 2 * side)
            if prev is None or abs(x - prev[0]) > 2 * side or abs(y - prev[1]) > 2 * side:
                break
        prev = (x, y)
        t_flip = app.command(f"flip {x} {y} {side} {side}", "flipped")
        t_press = app.wait_for("press", timeout, after=t_flip, inside=(x, y, side, side))
        if t_press is None:
            missed += 1
        else:
            lat.append((t_press - t_flip) * 1e3)
        app.command(f"clear {x} {y} {side} {side}", "cleared")
    return lat, missed


def _run_pipeline(kind: str, policy, app: TargetApp, width: int, height: int, scale: float,
                  trials: int, timeout: float, seed: int) -> dict:
    from agent.desktops.live import LiveDesktop
    from agent.loop import Agent

    wrapper = ChangeClickPolicy(policy)
    if kind == "ours":
        desk = LiveDesktop(stop_hotkey=None, max_actions_per_second=None, scale=scale)
    else:
        desk = ScreenshotDesktop(scale=scale)
    agent = Agent(desk, wrapper, instruction="click the square that changed colour")
    box: dict = {}
    th = threading.Thread(target=lambda: box.setdefault("res", agent.run()), daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 120
        while wrapper.ref is None and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.01)  # the first frame is seen ...
        time.sleep(0.5)
        wrapper.ref = None  # ... and the reference retaken once the screen has surely settled
        while wrapper.ref is None and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.01)
        lat, missed = _trials(app, width, height, scale, trials, timeout, random.Random(seed))
    finally:
        agent.stop("bench done")
        th.join(60)
        desk.close()
    res = box.get("res")
    if res is None:
        raise RuntimeError(f"the {kind} agent did not stop")
    t = res.timings_ns
    acted = set(wrapper.acted_steps)
    # Stages of the steps that saw a change and clicked (on a still screen the incremental capture
    # waits for drawing and the pixel policy returns its last actions: those steps' times say little)
    stages = {s: percentiles([v for i, v in enumerate(t[s]) if i in acted]) for s in ("capture", "infer", "act")}
    if kind != "ours":
        stages = {**{s: percentiles(v) for s, v in desk.timings.items()}, **stages}
        stages.pop("capture")
    step = [sum(v) for v in zip(*(t[s] for s in STAGES), strict=True)]
    out = {"pipeline": kind, "policy": getattr(policy, "name", str(policy)),
           "end_to_end": percentiles([int(v * 1e6) for v in lat]), "missed": missed,
           "steps": res.steps, "stages": stages, "step": percentiles(step),
           "errors": res.errors[:3], "model_errors": wrapper.model_errors}
    if kind != "ours":
        out["png_bytes_p50"] = int(np.median(desk.png_bytes)) if desk.png_bytes else 0
    return out


def measure(spec: dict) -> dict:
    """In the child: one X server at ``spec['size']``, each (pipeline, policy) of ``spec['runs']``."""
    from agent.desktops.xvfb import start_xvfb

    w, h = spec["size"]
    scale = spec.get("scale") or (2.0 if w >= 5120 else 1.0)
    bg = desktop_content(w, h, scale)
    server = start_xvfb(w, h)
    os.environ["DISPLAY"] = server.display
    app = None
    rows = []
    built: dict = {}
    try:
        app = TargetApp(w, h, bg, server.env)
        for i, (kind, name) in enumerate(spec["runs"]):
            if name not in built:
                built[name] = build_policy(name, spec.get("device", "cpu"))
            policy, how = built[name]
            row = _run_pipeline(kind, policy, app, w, h, scale, spec["trials"], spec.get("timeout", 10.0), seed=i)
            row.update(size=f"{w}x{h}", scale=scale, weights=how)
            rows.append(row)
    finally:
        if app is not None:
            app.close()
        server.stop()
    return {"rows": rows}


def run_child(spec: dict, timeout: float = 400) -> dict:
    """Run :func:`measure` in a fresh process; its JSON result (or ``{"error": ...}``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        p = subprocess.run([sys.executable, "-m", "agent.bench.live", json.dumps(spec)], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


if __name__ == "__main__":
    try:
        result = measure(json.loads(sys.argv[1]))
    except Exception as e:  # one line for the parent
        import traceback

        traceback.print_exc()
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
