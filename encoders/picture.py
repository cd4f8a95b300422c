"""Desktop-like test pictures: text, window edges, flat areas, a wallpaper gradient — not noise, not black.

``desktop_frame(w, h, i)`` is frame ``i`` of a scene with motion: one window moves right and its
text scrolls, another window's text scrolls up. Used by the probe (two frames) and the benchmark.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

_WORDS = ("the quick brown fox jumps over lazy dog File Edit View Insert Format Tools Help def return "
          "import numpy 0x7f3a 127.0.0.1 session.json Encoder ladder libx264 PSNR 42.0 dB OK Cancel "
          "Apply settings() {} [] <div> </div> user@host:~$ ls -la 2025-01-31 12:34:56").split()


@lru_cache(maxsize=8)
def _text_tile(width: int, height: int, seed: int, dark: bool = False) -> np.ndarray:
    """A BGRA tile of anti-aliased text lines (an editor or a web page)."""
    rng = np.random.default_rng(seed)
    bg = (30, 30, 30, 255) if dark else (255, 255, 255, 255)
    tile = np.empty((height, width, 4), np.uint8)
    tile[:] = bg
    colours = [(220, 220, 220, 255), (120, 200, 255, 255), (150, 230, 150, 255)] if dark else \
        [(20, 20, 20, 255), (160, 60, 20, 255), (30, 30, 170, 255), (90, 90, 90, 255)]
    y = 16
    while y < height:
        x = 6 + int(rng.integers(0, 4)) * 16
        line = " ".join(rng.choice(_WORDS, size=int(rng.integers(3, 16))))
        cv2.putText(tile, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    colours[int(rng.integers(0, len(colours)))], 1, cv2.LINE_AA)
        y += 17
    return tile


def _fill_window(img: np.ndarray, x: int, y: int, w: int, h: int, tile: np.ndarray, scroll: int,
                 title_colour: tuple) -> None:
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    img[y0:y1, x0:x1] = (200, 200, 200, 255)  # 1-px border colour
    tb = min(28, max(2, (y1 - y0) // 6))
    img[y0 + 1:y0 + tb, x0 + 1:x1 - 1] = title_colour
    for k, c in enumerate(((80, 80, 230, 255), (60, 190, 250, 255), (80, 200, 80, 255))):  # buttons
        cx = x1 - 14 - 20 * k
        if cx - 6 > x0 and tb > 12:
            cv2.circle(img, (cx, y0 + tb // 2), 6, c, -1, cv2.LINE_AA)
    if tb > 14:
        cv2.putText(img, "Untitled - Editor", (x0 + 10, y0 + tb - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (255, 255, 255, 255), 1, cv2.LINE_AA)
    cy0, cy1, cx0, cx1 = y0 + tb, y1 - 1, x0 + 1, x1 - 1
    ch, cw = cy1 - cy0, cx1 - cx0
    if ch <= 0 or cw <= 0:
        return
    th, tw = tile.shape[:2]
    rolled = np.roll(tile, -(scroll % th), axis=0)
    reps = (-(-ch // th), -(-cw // tw), 1)
    img[cy0:cy1, cx0:cx1] = np.tile(rolled, reps)[:ch, :cw] if reps[:2] != (1, 1) else rolled[:ch, :cw]


def desktop_frame(width: int, height: int, index: int = 0) -> np.ndarray:
    """Frame ``index`` of a desktop-like BGRA scene at ``width``x``height`` (C-contiguous uint8)."""
    img = np.empty((height, width, 4), np.uint8)
    # Wallpaper: a smooth vertical gradient (flat-ish, compresses well, shows banding bugs).
    g = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    column = np.concatenate([140 + 60 * g, 90 + 40 * g, 40 + 20 * g, np.full_like(g, 255)], axis=1)
    img[:] = column.astype(np.uint8)[:, None, :]
    # Taskbar with icons.
    bar = max(1, min(40, height // 20))
    img[height - bar:] = (45, 45, 45, 255)
    for k in range(min(12, width // 48)):
        x = 8 + k * 44
        cv2.rectangle(img, (x, height - bar + 6), (x + 28, height - 6),
                      ((k * 53) % 255, (k * 97) % 255, (k * 151) % 255, 255), -1)
    editor = _text_tile(900, 700, 1)
    terminal = _text_tile(700, 500, 2, dark=True)
    # A big editor window whose text scrolls; a terminal that moves right and scrolls too.
    _fill_window(img, width // 20, height // 20, int(width * 0.55), int(height * 0.7), editor, 3 * index,
                 (120, 70, 30, 255))
    dx = (8 * index) % max(1, width // 5)
    _fill_window(img, int(width * 0.4) + dx, int(height * 0.35), int(width * 0.35), int(height * 0.45),
                 terminal, 17 * index, (70, 70, 70, 255))
    # A dialog: flat area with a button and a line of text.
    dw, dh = width // 6, height // 8
    x, y = int(width * 0.75), int(height * 0.1)
    if dw > 20 and dh > 20:
        cv2.rectangle(img, (x, y), (x + dw, y + dh), (240, 240, 240, 255), -1)
        cv2.rectangle(img, (x, y), (x + dw, y + dh), (120, 120, 120, 255), 1)
        cv2.rectangle(img, (x + dw - 80, y + dh - 30), (x + dw - 10, y + dh - 8), (215, 120, 0, 255), -1)
        cv2.putText(img, "Save changes?", (x + 10, y + 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0, 255), 1, cv2.LINE_AA)
    return img
