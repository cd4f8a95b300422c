"""A tiny Xlib target app for the live latency benchmarks (run as a child process).

Usage: ``python -m agent.bench.xapp WIDTH HEIGHT [BACKGROUND.bgra]``

Shows one override-redirect window covering the screen whose background is BACKGROUND (raw
BGRA, WIDTHxHEIGHT: a virtual-desktop screenshot, so captures and PNGs have realistic content)
and answers line commands on stdin, one reply line each on stdout:

- ``flip X Y W H`` fills that rectangle with magenta, waits for the X server to have drawn it
  (``XSync``: a round trip, so the pixels are in the framebuffer) and replies ``flipped T``;
- ``clear X Y W H`` restores the background there the same way and replies ``cleared T``;
- ``quit``.

Every mouse button press it receives is reported as ``press T X Y``. ``T`` is
``time.monotonic()`` (CLOCK_MONOTONIC) in this process — the same clock as the agent's process
on the same machine, so ``press - flipped`` is the end-to-end reaction time of the agent, from
the change being on screen to its input reaching (and being delivered by) the X server.
"""

from __future__ import annotations

import os
import select
import sys
import time

from Xlib import X, display


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    w, h = int(argv[0]), int(argv[1])
    bg_path = argv[2] if len(argv) > 2 else ""
    d = display.Display()
    screen = d.screen()
    root = screen.root
    depth = screen.root_depth
    pix = root.create_pixmap(w, h, depth)
    gc = pix.create_gc(foreground=screen.black_pixel, background=screen.black_pixel)
    if bg_path:
        data = open(bg_path, "rb").read()
        row = w * 4
        rows = max(1, (d.display.info.max_request_length * 4 - 64) // row)
        for y in range(0, h, rows):
            n = min(rows, h - y)
            pix.put_image(gc, 0, y, w, n, X.ZPixmap, depth, 0, data[y * row:(y + n) * row])
    else:
        pix.fill_rectangle(gc, 0, 0, w, h)
    win = root.create_window(0, 0, w, h, 0, depth, X.InputOutput, X.CopyFromParent,
                             background_pixmap=pix, override_redirect=True,
                             event_mask=X.ButtonPressMask | X.ExposureMask)
    magenta = screen.default_colormap.alloc_color(0xFFFF, 0, 0xFFFF).pixel
    fgc = win.create_gc(foreground=magenta)
    win.map()
    d.sync()
    time.sleep(0.3)  # let the first exposure be processed
    while d.pending_events():
        d.next_event()
    _out(f"ready {time.monotonic():.6f}")
    buf = b""
    xfd, infd = d.fileno(), sys.stdin.fileno()
    while True:
        while d.pending_events():
            ev = d.next_event()
            if ev.type == X.ButtonPress:
                _out(f"press {time.monotonic():.6f} {ev.root_x} {ev.root_y}")
        r, _, _ = select.select([xfd, infd], [], [], 1.0)
        if xfd in r:
            t = time.monotonic()
            for _ in range(d.pending_events()):
                ev = d.next_event()
                if ev.type == X.ButtonPress:
                    _out(f"press {t:.6f} {ev.root_x} {ev.root_y}")
        if infd in r:
            chunk = os.read(infd, 4096)
            if not chunk:
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split()
                if not parts:
                    continue
                if parts[0] == "quit":
                    return 0
                x, y, rw, rh = (int(v) for v in parts[1:5])
                if parts[0] == "flip":
                    t_before = time.monotonic()
                    win.fill_rectangle(fgc, x, y, rw, rh)
                    d.sync()
                    t_flip = time.monotonic()
                    # presses queued while syncing reached the server before the square was drawn:
                    # stamp them before the flip so they never count as a reaction to it
                    for _ in range(d.pending_events()):
                        ev = d.next_event()
                        if ev.type == X.ButtonPress:
                            _out(f"press {t_before:.6f} {ev.root_x} {ev.root_y}")
                    _out(f"flipped {t_flip:.6f}")
                elif parts[0] == "clear":
                    win.clear_area(x, y, rw, rh)
                    d.sync()
                    _out(f"cleared {time.monotonic():.6f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
