"""Labelled reading tiles from the virtual desktop itself: what a reader sees on this desktop, and
the word it should name.

A reader pretrained only on synthetic tiles (:mod:`policies.pixel.reader`) reads the desktop's own
labels poorly: its slider values, menu items and field names come out wrong in about half the
tiles. The desktop knows every word it draws, so its scenes are labelled for free: each scene is
painted once with a :class:`Painter` that also records where each word of every text landed (in
physical pixels) and which filled shapes were painted over it later (a dialog, an open menu).
Tiles are then cut around those words, at the policy's tile size, at a random offset, as the tile
grid falls on a real screen, and named as the synthetic ones are: the one word wholly inside, or
``""`` where none is; tiles holding two whole words are not used. Scenes come from every task,
after a random number of expert actions (menus open, text typed, boxes checked, sliders moved),
at several screen sizes and scales; their seeds never overlap the evaluation's.
"""

from __future__ import annotations

import random
import re

import cv2
import numpy as np
from PIL import Image

from agent.desktops.virtual.desktop import VirtualDesktop
from agent.desktops.virtual.render import TEXT, Canvas, Painter
from agent.desktops.virtual.tasks import CLASSIC_TASKS
from agent.desktops.virtual.themes import MIXED
from policies.pixel.words import WORD_EXTRA

SIZES = ((640, 480, 1.0), (1280, 720, 1.0), (1920, 1080, 1.0), (1600, 900, 1.25), (1920, 1080, 1.5),
         (2560, 1440, 2.0))
LOOKS = ("classic", MIXED)  # what a reader's desktop scenes look like (scene's looks)
SEED_BASE = 500_000  # scene seeds from here on: far from the demos' and the evaluation's
_WORD = re.compile("[0-9A-Za-z" + re.escape(WORD_EXTRA) + "]+")


def word_of(token: str) -> str:
    """What a reader should name for a drawn token: its first run of word characters, as an
    instruction's words are cut (``"Name:"`` -> ``"Name"``, ``"Budget.xlsx"`` -> ``"Budget"``);
    ``""`` for a token without a letter or digit."""
    m = _WORD.search(token)
    return m.group(0) if m and any(ch.isalnum() for ch in m.group(0)) else ""


class _Recorder(Painter):
    """A painter that records each drawn word's physical box and every filled shape, in paint order."""

    def __init__(self, image: Image.Image, scale: float, look=None):
        super().__init__(image, 0, 0, scale, *(() if look is None else (look,)))
        self.words: list = []  # (seq, word, (x0, y0, x1, y1))
        self.fills: list = []  # (seq, (x0, y0, x1, y1))

    def _fill(self, box) -> None:
        self.fills.append((len(self.words) + len(self.fills), box))

    def rect(self, r, fill=None, outline=None, width=1.0, radius=0.0) -> None:
        super().rect(r, fill, outline, width, radius)
        if fill:
            self._fill(self._box(r))

    def ellipse(self, r, fill=None, outline=None, width=1.0) -> None:
        super().ellipse(r, fill, outline, width)
        if fill:
            self._fill(self._box(r))

    def polygon(self, pts, fill, outline=None) -> None:
        super().polygon(pts, fill, outline)
        xs, ys = [self._x(x) for x, _ in pts], [self._y(y) for _, y in pts]
        self._fill((min(xs), min(ys), max(xs), max(ys)))

    def text(self, x, y, s, size=13.0, color=TEXT, anchor="lm", bold=False) -> None:
        super().text(x, y, s, size, color, anchor, bold)
        if not s:
            return
        f = self.font(size, bold)
        ax, ay = self._x(x), self._y(y)
        _, top, _, bottom = f.getbbox(s, anchor=anchor)
        full = f.getlength(s)
        left = ax - {"l": 0.0, "m": full / 2, "r": full}[anchor[0]]
        i = 0
        for token in s.split(" "):
            word = word_of(token)
            if word:
                x0 = left + f.getlength(s[:i])
                x1 = left + f.getlength(s[:i + len(token)])
                self.words.append((len(self.words) + len(self.fills), word, (x0, ay + top, x1, ay + bottom)))
            i += len(token) + 1


def paint_scene(desk: VirtualDesktop) -> tuple[np.ndarray, list[tuple[str, tuple[float, float, float, float]]]]:
    """The desktop's screen now (BGR, no cursor) and its visible words with their physical boxes."""
    scr = desk.screen
    canvas = Canvas(scr.width, scr.height, scr.scale, desk.wallpaper, desk.look)
    image = Image.fromarray(canvas.wallpaper(), "RGBA")  # BGRA bytes, as the desktop paints them
    p = _Recorder(image, scr.scale, desk.look)
    for w in desk.oracle.widgets:
        if w.visible:
            w.paint(p)
    words = []
    for seq, word, (x0, y0, x1, y1) in p.words:
        covered = any(s > seq and x0 < fx1 and fx0 < x1 and y0 < fy1 and fy0 < y1
                      for s, (fx0, fy0, fx1, fy1) in p.fills)
        if not covered:
            words.append((word, (x0, y0, x1, y1)))
    return np.ascontiguousarray(np.asarray(image)[:, :, :3]), words


def look_choices(looks) -> list[str]:
    """``looks`` (a look, or a list of them: a look named twice is drawn twice as often) as the
    list a scene draws from; ValueError naming the first that is not one of :data:`LOOKS`, or the
    empty list."""
    choices = [looks] if isinstance(looks, str) else list(looks) if isinstance(looks, list | tuple) else [looks]
    bad = [x for x in choices if x not in LOOKS]
    if bad or not choices:
        raise ValueError(f"looks {bad[0] if bad else looks!r}: one of {', '.join(LOOKS)}")
    return choices


def scene(rng: random.Random, held_out: bool = False, tasks: list[str] | None = None,
          looks: str | list[str] = "classic") -> tuple[np.ndarray, float, list]:
    """One random scene: (BGR pixels, scale, visible words). Training scenes have even seeds,
    ``held_out`` ones odd. ``tasks``: the tasks to draw from (a name given twice is drawn twice
    as often); default each of the 7 classic families once (what the bundled readers saw).
    ``looks``: ``classic`` (the classic theme and default face) or ``mixed`` (each scene's theme,
    face and size drawn from its task and seed, as ``--theme mixed --font mixed`` draws them), or a
    list of them to draw from as ``tasks``."""
    choices = look_choices(looks)
    w, h, scale = rng.choice(SIZES)
    task = rng.choice(tasks or sorted(CLASSIC_TASKS))
    look = choices[0] if len(choices) == 1 else rng.choice(choices)
    mixed = MIXED if look == MIXED else None
    desk = VirtualDesktop(task, seed=SEED_BASE + 2 * rng.randrange(10**6) + held_out, size=(w, h), scale=scale,
                          theme=mixed, font=mixed)
    try:
        desk.observe()
        for _ in range(rng.randint(0, 3)):  # some way into the task: menus open, text typed, ...
            acts = desk.oracle.expert_actions()
            if not acts or desk.finished:
                break
            for a in acts:
                desk.apply(a)
            desk.observe()
        pixels, words = paint_scene(desk)
    finally:
        desk.close()
    return pixels, scale, words


def scene_tiles(rng: random.Random, pixels: np.ndarray, scale: float, words: list, n: int,
                tile_pt: int = 64, glimpse_px: int = 48, max_chars: int = 12) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` tiles cut around the scene's words: (``glimpse_px`` square BGR, the word wholly
    inside or ``""``). Mostly placed so a chosen word is whole, sometimes anywhere near it."""
    h, w = pixels.shape[:2]
    side = max(1, round(tile_pt * scale))
    out = []
    if not words or side > min(w, h):
        return out
    for _ in range(4 * n):
        if len(out) >= n:
            break
        _, (x0, y0, x1, y1) = rng.choice(words)
        whole = rng.random() < 0.8
        lo_x, hi_x = (x1 + 1 - side, x0 - 1) if whole else (x0 - side, x1)
        lo_y, hi_y = (y1 + 1 - side, y0 - 1) if whole else (y0 - side, y1)
        if lo_x > hi_x or lo_y > hi_y:
            continue
        tx = int(min(max(0, round(rng.uniform(lo_x, hi_x))), w - side))
        ty = int(min(max(0, round(rng.uniform(lo_y, hi_y))), h - side))
        inside = [wd for wd, (a, b, c, d) in words if a >= tx and b >= ty and c <= tx + side and d <= ty + side]
        if len(inside) > 1:
            continue
        tile = cv2.resize(pixels[ty:ty + side, tx:tx + side], (glimpse_px, glimpse_px), interpolation=cv2.INTER_AREA)
        out.append((tile, inside[0][:max_chars] if inside else ""))
    return out


def scene_windows(rng: random.Random, pixels: np.ndarray, scale: float, words: list, n: int, tile_pt: int,
                  window: tuple[int, int, int, int], max_chars: int = 12) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` read windows (``window`` = ``(w_pt, h_pt, w_px, h_px)``, as
    a grounding's ``window``) cut around the scene's words, each with the word it names
    (:func:`~policies.pixel.processing.centred_word`: the one centred in its middle half-tile
    cell, if whole). Mostly placed so a chosen word's centre lies in that cell, as one of the
    four windows of a glimpse has it wherever the tile grid falls; sometimes anywhere near it.
    Black beyond the frame's edges, as the policy's windows are."""
    from policies.pixel.processing import centred_word, crop_padded

    w_pt, h_pt, w_px, h_px = window
    ww, wh, cell = max(1, round(w_pt * scale)), max(1, round(h_pt * scale)), tile_pt * scale / 2
    out = []
    if not words:
        return out
    for _ in range(4 * n):
        if len(out) >= n:
            break
        _, (x0, y0, x1, y1) = rng.choice(words)
        reach = cell / 2 if rng.random() < 0.8 else 2 * cell
        cx = (x0 + x1) / 2 + rng.uniform(-reach, reach)
        cy = (y0 + y1) / 2 + rng.uniform(-reach, reach)
        wx, wy = round(cx - ww / 2), round(cy - wh / 2)
        word = centred_word(words, wx, wy, ww, wh, cell)
        if word is None:
            continue
        crop = crop_padded(pixels, wx, wy, ww, wh)
        out.append((cv2.resize(crop, (w_px, h_px), interpolation=cv2.INTER_AREA), word[:max_chars]))
    return out


def desktop_tiles(rng: random.Random, n: int, held_out: bool = False, tile_pt: int = 64, glimpse_px: int = 48,
                  per_scene: int = 24, window: tuple[int, int, int, int] | None = None,
                  tasks: list[str] | None = None, looks: str | list[str] = "classic") -> tuple[np.ndarray, list[str]]:
    """``n`` labelled desktop tiles ((n, G, G, 3) uint8 BGR and their words), ``per_scene`` from each
    scene (of ``tasks``, in ``looks``: see :func:`scene`); ``held_out`` scenes never appear otherwise. With
    ``window``, read windows (:func:`scene_windows`) instead of tiles."""
    tiles, texts = [], []
    while len(tiles) < n:
        pixels, scale, words = scene(rng, held_out, tasks, looks)
        m = min(per_scene, n - len(tiles))
        cut = (scene_windows(rng, pixels, scale, words, m, tile_pt, window) if window
               else scene_tiles(rng, pixels, scale, words, m, tile_pt, glimpse_px))
        for t, word in cut:
            tiles.append(t)
            texts.append(word)
    return np.stack(tiles), texts
