"""Rendering for the virtual desktop: logical-point geometry, a painter, the cached canvas.

Widgets are laid out in logical points and painted at physical pixels (``scale`` physical
pixels per point). The canvas keeps one BGRA buffer of the whole screen (without the mouse
cursor) and repaints only the regions whose widgets changed since the last frame; the cursor
is drawn onto the copy handed out by :meth:`Canvas.snapshot`.

Pillow draws into an ``RGBA`` image whose bytes we treat as BGRA: colours are swapped once
when they are handed to Pillow, so no per-frame channel conversion is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from agent.desktops.virtual.themes import CLASSIC, Look

if TYPE_CHECKING:
    from collections.abc import Iterable

Color = tuple[int, int, int]
Paint = Color | str  # a colour, or the name of a theme colour ("window", "accent", ...)


@dataclass(frozen=True, slots=True)
class Rect:
    """An axis-aligned rectangle in logical points: top-left corner, width, height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def center(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def contains(self, px: float, py: float) -> bool:
        return self.x <= px < self.right and self.y <= py < self.bottom

    def outset(self, d: float) -> Rect:
        return Rect(self.x - d, self.y - d, self.w + 2 * d, self.h + 2 * d)

    def inset(self, d: float) -> Rect:
        return self.outset(-d)

    def intersects(self, other: Rect) -> bool:
        return self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom

    def physical(self, scale: float, width: int, height: int) -> tuple[int, int, int, int] | None:
        """Physical pixel box ``(x0, y0, x1, y1)`` (exclusive end) covering this rect, clipped; None if empty."""
        x0 = max(0, math.floor(self.x * scale) - 1)
        y0 = max(0, math.floor(self.y * scale) - 1)
        x1 = min(width, math.ceil(self.right * scale) + 1)
        y1 = min(height, math.ceil(self.bottom * scale) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1


# A calm, conventional palette (RGB).
WHITE: Color = (255, 255, 255)
TEXT: Color = (28, 28, 30)
TEXT_DIM: Color = (96, 98, 104)
WINDOW: Color = (246, 246, 248)
TITLEBAR: Color = (226, 228, 234)
BORDER: Color = (150, 154, 162)
BUTTON: Color = (236, 237, 240)
BUTTON_HOVER: Color = (222, 232, 248)
BUTTON_PRESSED: Color = (188, 206, 236)
ACCENT: Color = (38, 110, 220)
ACCENT_LIGHT: Color = (205, 224, 252)
FOCUS: Color = (64, 140, 255)
DANGER: Color = (214, 64, 56)
TASKBAR: Color = (32, 36, 46)

WALLPAPERS: tuple[tuple[Color, Color], ...] = (
    ((38, 84, 124), (92, 148, 178)),
    ((58, 64, 110), (134, 120, 170)),
    ((36, 96, 84), (120, 170, 140)),
    ((88, 66, 60), (176, 140, 112)),
)


def bgr(c: Color) -> tuple[int, int, int, int]:
    """An RGB colour as Pillow must see it to land as BGRA bytes."""
    return c[2], c[1], c[0], 255


@lru_cache(maxsize=64)
def font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The scalable default font at ``px`` physical pixels (Pillow's bundled face; no files needed)."""
    return ImageFont.load_default(size=max(6, px))


class Painter:
    """Draws logical-point shapes into one region image whose top-left is physical ``(ox, oy)``.

    ``look`` gives the theme (``self.t``; colours may be passed by a theme field's name) and the
    face and size of text."""

    def __init__(self, image: Image.Image, ox: int, oy: int, scale: float, look: Look = CLASSIC):
        self.draw = ImageDraw.Draw(image)
        self.ox = ox
        self.oy = oy
        self.s = scale
        self.look = look
        self.t = look.theme

    def _c(self, c: Paint | None) -> tuple[int, int, int, int] | None:
        if not c:
            return None
        return bgr(getattr(self.t, c) if isinstance(c, str) else c)

    def font(self, size: float, bold: bool = False):
        """The look's face at ``size`` layout points, at this painter's scale."""
        return self.look.font(round(size * self.look.k * self.s), bold)

    def text_width(self, s: str, size: float = 13.0, bold: bool = False) -> float:
        return self.look.text_width(s, size, bold)

    def _x(self, v: float) -> int:
        return round(v * self.s) - self.ox

    def _y(self, v: float) -> int:
        return round(v * self.s) - self.oy

    def _box(self, r: Rect) -> tuple[int, int, int, int]:
        x0, y0 = self._x(r.x), self._y(r.y)
        return x0, y0, max(x0, self._x(r.right) - 1), max(y0, self._y(r.bottom) - 1)

    def width(self, pt: float) -> int:
        return max(1, round(pt * self.s))

    def rect(
        self, r: Rect, fill: Paint | None = None, outline: Paint | None = None, width: float = 1.0, radius: float = 0.0
    ) -> None:
        box = self._box(r)
        kw = {
            "fill": self._c(fill),
            "outline": self._c(outline),
            "width": self.width(width),
        }
        rad = round(radius * self.s)
        if rad > 0 and box[2] - box[0] > 2 * rad and box[3] - box[1] > 2 * rad:
            self.draw.rounded_rectangle(box, radius=rad, **kw)
        else:
            self.draw.rectangle(box, **kw)

    def ellipse(self, r: Rect, fill: Paint | None = None, outline: Paint | None = None, width: float = 1.0) -> None:
        self.draw.ellipse(self._box(r), fill=self._c(fill), outline=self._c(outline), width=self.width(width))

    def line(self, pts: Sequence[tuple[float, float]], color: Paint, width: float = 1.0) -> None:
        self.draw.line([(self._x(x), self._y(y)) for x, y in pts], fill=self._c(color), width=self.width(width))

    def polygon(self, pts: Sequence[tuple[float, float]], fill: Paint, outline: Paint | None = None) -> None:
        self.draw.polygon([(self._x(x), self._y(y)) for x, y in pts], fill=self._c(fill), outline=self._c(outline))

    def bevel(self, r: Rect, raised: bool = True, width: float = 1.5) -> None:
        """3-D edges inside ``r`` (Tk / Motif): light top-left and dark bottom-right when raised."""
        a, b = ("light", "dark_edge") if raised else ("dark_edge", "light")
        x0, y0, x1, y1 = self._box(r)
        n = self.width(width)
        for i in range(n):
            self.draw.line([(x0 + i, y1 - i), (x0 + i, y0 + i), (x1 - i, y0 + i)], fill=self._c(a))
            self.draw.line([(x0 + i + 1, y1 - i), (x1 - i, y1 - i), (x1 - i, y0 + i + 1)], fill=self._c(b))

    def text(self, x: float, y: float, s: str, size: float = 13.0, color: Paint = TEXT, anchor: str = "lm",
             bold: bool = False) -> None:
        """Text at logical ``(x, y)``; ``anchor`` as in Pillow ("lm": left-middle, "mm": centred)."""
        if s:
            self.draw.text((self._x(x), self._y(y)), s, font=self.font(size, bold), fill=self._c(color), anchor=anchor)


def text_width(s: str, size: float = 13.0) -> float:
    """Width of ``s`` in logical points at ``size`` points (measured at 4x for precision)."""
    return font(round(size * 4)).getlength(s) / 4


class Paintable(Protocol):
    """What the canvas needs from a widget."""

    visible: bool

    def bounds(self) -> Rect: ...

    def state_key(self) -> tuple: ...

    def paint(self, p: Painter) -> None: ...


class Canvas:
    """The screen's cached BGRA buffer; repaints only regions whose widgets changed.

    Damage is found automatically: each widget's ``(visible, bounds, state_key())`` is compared
    with what was painted last time, and the old and new bounds of every changed widget are
    repainted (wallpaper first, then every widget that overlaps, in z-order).
    """

    def __init__(self, width: int, height: int, scale: float, wallpaper: tuple[Color, Color], look: Look = CLASSIC):
        self.look = look
        self.width = width
        self.height = height
        self.scale = scale
        self.buffer = np.empty((height, width, 4), np.uint8)
        top, bottom = np.array(wallpaper[0], np.float32), np.array(wallpaper[1], np.float32)
        t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
        rgb = top[None, :] * (1 - t) + bottom[None, :] * t
        self._rows = np.empty((height, 4), np.uint8)  # one BGRA colour per row: the wallpaper gradient
        self._rows[:, :3] = np.round(rgb[:, ::-1]).astype(np.uint8)
        self._rows[:, 3] = 255
        self._painted: list[tuple | None] = []
        self._widgets: list[Paintable] = []
        self.regions_painted = 0
        self.pixels_painted = 0
        cur = cursor_sprite(scale)
        self._cursor_rgba = cur
        self._cursor_mask = cur[:, :, 3] > 0

    def wallpaper(self) -> np.ndarray:
        """A fresh (height, width, 4) BGRA screen holding the wallpaper only."""
        out = np.empty((self.height, self.width, 4), np.uint8)
        out.view(np.uint32)[:, :, 0] = self._rows.view(np.uint32)
        return out

    def _key(self, w: Paintable) -> tuple | None:
        return (w.bounds(), w.state_key()) if w.visible else None

    def update(self, widgets: Sequence[Paintable]) -> list[tuple[int, int, int, int]] | None:
        """Bring the buffer up to date with ``widgets`` (z-order: first is bottom-most). Returns the
        repainted boxes ``(x0, y0, x1, y1)`` in physical pixels, or None for a new scene (all of it)."""
        scene = None if list(map(id, widgets)) != list(map(id, self._widgets)) else []
        if scene is None:
            # a new scene: wallpaper everywhere (numpy, fast), then every widget counts as damage
            self._widgets = list(widgets)
            self._painted = [None] * len(widgets)
            self.buffer.view(np.uint32)[:, :, 0] = self._rows.view(np.uint32)
        damage: list[tuple[int, int, int, int]] = []
        for i, w in enumerate(widgets):
            key = self._key(w)
            old = self._painted[i]
            if key == old:
                continue
            for k in (old, key):
                if k is not None:
                    box = k[0].physical(self.scale, self.width, self.height)
                    if box is not None:
                        damage.append(box)
            self._painted[i] = key
        boxes = merge_boxes(damage)
        for box in boxes:
            self._paint_region(box)
        return None if scene is None else boxes

    def cursor_box(self, cursor_px: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
        """The box :meth:`snapshot` draws the cursor into, or None."""
        if cursor_px is None:
            return None
        cx, cy = cursor_px
        sh, sw = self._cursor_mask.shape
        x1, y1 = min(self.width, cx + sw), min(self.height, cy + sh)
        return (cx, cy, x1, y1) if x1 > cx and y1 > cy else None

    def _paint_region(self, box: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        region = np.empty((y1 - y0, x1 - x0, 4), np.uint8)
        region.view(np.uint32)[:, :, 0] = self._rows[y0:y1].view(np.uint32)
        image = Image.fromarray(region, "RGBA")
        painter = Painter(image, x0, y0, self.scale, self.look)
        s = self.scale
        area = Rect(x0 / s, y0 / s, (x1 - x0) / s, (y1 - y0) / s)
        for w in self._widgets:
            if w.visible and w.bounds().outset(2 / s).intersects(area):
                w.paint(painter)
        self.buffer[y0:y1, x0:x1] = np.asarray(image)
        self.regions_painted += 1
        self.pixels_painted += (x1 - x0) * (y1 - y0)

    def snapshot(self, cursor_px: tuple[int, int] | None) -> np.ndarray:
        """A fresh copy of the screen with the mouse cursor drawn at physical ``cursor_px`` (its tip)."""
        out = self.buffer.copy()
        if cursor_px is not None:
            cx, cy = cursor_px
            sh, sw = self._cursor_mask.shape
            x1, y1 = min(self.width, cx + sw), min(self.height, cy + sh)
            if x1 > cx and y1 > cy:
                m = self._cursor_mask[: y1 - cy, : x1 - cx]
                dst = out[cy:y1, cx:x1]
                dst[m] = self._cursor_rgba[: y1 - cy, : x1 - cx][m]
        return out


def merge_boxes(boxes: Iterable[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Merge overlapping or touching boxes so no pixel is repainted twice in one update."""
    out: list[list[int]] = []
    for b in boxes:
        cur = list(b)
        merged = True
        while merged:
            merged = False
            for o in out:
                if cur[0] <= o[2] and o[0] <= cur[2] and cur[1] <= o[3] and o[1] <= cur[3]:
                    cur = [min(cur[0], o[0]), min(cur[1], o[1]), max(cur[2], o[2]), max(cur[3], o[3])]
                    out.remove(o)
                    merged = True
                    break
        out.append(cur)
    return [tuple(b) for b in out]  # type: ignore[misc]


_ARROW = ((0, 0), (0, 17), (4.2, 13.2), (7, 19.5), (9.6, 18.4), (6.9, 12.3), (12.2, 12.3))


@lru_cache(maxsize=8)
def cursor_sprite(scale: float) -> np.ndarray:
    """The classic arrow pointer (black, white outline) as a BGRA sprite; the tip is pixel (0, 0)."""
    k = 4  # supersample, then keep pixels at least half covered: crisp, like a real cursor
    n = math.ceil(21 * scale) + 2
    big = Image.new("LA", (n * k, n * k), (0, 0))
    d = ImageDraw.Draw(big)
    pts = [(x * scale * k + k / 2, y * scale * k + k / 2) for x, y in _ARROW]
    d.polygon(pts, fill=(255, 255), outline=(255, 255), width=max(1, round(1.6 * scale * k)))
    inner = [(x * scale * k + k / 2, y * scale * k + k / 2) for x, y in _shrink(_ARROW, 1.2)]
    d.polygon(inner, fill=(0, 255))
    small = np.asarray(big.resize((n, n), Image.Resampling.BOX))
    out = np.zeros((n, n, 4), np.uint8)
    lum = small[:, :, 0]
    out[:, :, 0] = out[:, :, 1] = out[:, :, 2] = np.where(lum > 127, 255, 0).astype(np.uint8)
    out[:, :, 3] = np.where(small[:, :, 1] >= 128, 255, 0).astype(np.uint8)
    return out


def _shrink(pts: Sequence[tuple[float, float]], d: float) -> list[tuple[float, float]]:
    """Move each vertex ``d`` points toward the polygon's centroid (good enough for the arrow)."""
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    out = []
    for x, y in pts:
        vx, vy = cx - x, cy - y
        n = math.hypot(vx, vy) or 1.0
        out.append((x + vx / n * d * 1.6, y + vy / n * d * 1.6))
    return out
