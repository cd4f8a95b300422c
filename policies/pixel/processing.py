"""Frame -> model inputs, fast: a few cv2 resizes on uint8, no full-frame float conversion.

Everything is measured in logical points (physical pixels / ``screen.scale``):

1. an area-averaging pyramid from the BGRA frame to a *cell map* of ``cell_pt``-point cells
   (240x135 for 1920x1080 at scale 1, 320x180 for 5120x2880 at scale 2);
2. the global view is resized from that cell map (cheap);
3. an edge map of the cell map scores ``tile_pt``-point tiles by how much content they hold;
   the top tiles are cropped from the *full-resolution* frame and resampled to
   ``glimpse_px`` pixels each: the glimpses that let the model read labels at any screen size.
   A tile ranks first by its cells with edges in *both* directions (text, buttons, boxes,
   glyphs), then by all its edge cells: a tile crossed only by a straight line (a window
   border, the taskbar's top) ranks below every tile with real content. Plain edge counts let
   borders and text blocks crowd out small targets (a dialog's ×, a menu item): a target's
   tile was missing from the top 32 in up to 25% of expert steps (click-menu, close-dialog).

Training can shift the tile grid by a whole number of cells (``shift``, in cells) so the model
sees targets at every phase inside a glimpse; inference always uses shift 0.

Buffers are allocated once per (screen size, scale) and reused.

**Only what changed.** A frame that says what changed since the previous frame of its source (the
``changed`` rectangles of :class:`capture.incremental.ChangedFrame`) is preprocessed from that
change: the cells under it are averaged again (where whole cells are exact blocks of pixels: a
power-of-two cell side that divides the frame), and a glimpse and its read windows are cut and
resized again only where the change touches them; the rest is the previous frame's work, kept.
The result equals the full computation bit for bit (tested). A frame that does not follow the
previous one of its source (another source, a skipped grab, ``changed`` None) is done in full.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from capture import Frame

PAD_BYTE = 256  # byte vocabulary: 0..255 and a pad
NOT_TRACKED = object()  # Preprocessor.pixels: no change tracking (nothing kept between frames)
READS = 4  # read windows per glimpse (models with a grounding): one centred on each quarter of its tile


@dataclass(slots=True)
class VisualInputs:
    """Model inputs from one frame (views into the preprocessor's buffers: copy to keep)."""

    global_view: np.ndarray  # (GH, GW, 3) uint8 BGR
    glimpses: np.ndarray  # (K, G, G, 3) uint8 BGR
    boxes: np.ndarray  # (K, 4) float32 normalised x0, y0, x1, y1 of each glimpse
    mask: np.ndarray  # (K,) bool: glimpse present
    screen: np.ndarray  # (4,) float32: logical width/2560, logical height/1440, scale/2, aspect
    # (4*K, h, w, 3): each glimpse's four read windows, window-major (models with a grounding)
    read_glimpses: np.ndarray | None = None

    def copy(self) -> VisualInputs:
        return VisualInputs(*(None if a is None else np.array(a, copy=True)
                              for a in (self.global_view, self.glimpses, self.boxes, self.mask, self.screen,
                                        self.read_glimpses)))


class RecentViews:
    """Recent video (``config.recent``): the global views of the frames a step saw, kept while the
    longest lag needs them. For each lag L, :meth:`views` gives the newest view at least L seconds
    older than time ``t``, the oldest one while none is that old (the episode's first frame), and
    the current view while none is kept. Training (:func:`agent.training.dataset.session_samples`)
    and the policy pick them alike."""

    def __init__(self, lags) -> None:
        self.lags = [float(v) for v in lags]
        self.kept: list[tuple[float, np.ndarray]] = []

    def clear(self) -> None:
        self.kept.clear()

    def _pick(self, t: float) -> list[int]:
        """Per lag, the index into ``kept`` of the view it sees (-1: the current view)."""
        out = []
        for lag in self.lags:
            i = len(self.kept) - 1
            while i > 0 and self.kept[i][0] > t - lag:
                i -= 1
            out.append(i)
        return out

    def key(self, t: float) -> tuple:
        """What :meth:`views` would show at ``t`` (the chosen views' times): equal keys, equal views."""
        return tuple(self.kept[i][0] if i >= 0 else None for i in self._pick(t))

    def views(self, t: float, current: np.ndarray) -> np.ndarray:
        """(len(lags), GH, GW, 3) uint8: the view each lag sees at time ``t``."""
        return np.stack([self.kept[i][1] if i >= 0 else current for i in self._pick(t)])

    def add(self, t: float, view: np.ndarray) -> None:
        """Keep ``view`` (copied), seen at ``t``; views no lag can reach any more are dropped. A
        time before the last one starts afresh (another episode's clock)."""
        if self.kept and t < self.kept[-1][0]:
            self.kept.clear()
        self.kept.append((t, np.array(view, copy=True)))
        horizon = t - self.lags[-1]
        while len(self.kept) > 1 and self.kept[1][0] <= horizon:
            self.kept.pop(0)


def encode_text(text: str, max_len: int) -> tuple[np.ndarray, bytes]:
    """UTF-8 bytes of ``text``, truncated to ``max_len``, padded with :data:`PAD_BYTE`."""
    raw = text.encode("utf-8")[:max_len]
    ids = np.full((max_len,), PAD_BYTE, np.int64)
    ids[: len(raw)] = np.frombuffer(raw, np.uint8)
    return ids, raw


def area_down(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average ``pixels`` down to ``width`` x ``height``.

    Exact halvings with ``INTER_LINEAR`` (which averages 2x2 blocks at factor 2, the same as
    ``INTER_AREA`` there) run 4-8x faster than one ``INTER_AREA`` by a large non-power-of-two
    factor; the remaining factor (< 2) is done with ``INTER_AREA``.
    """
    h, w = pixels.shape[:2]
    while w // 2 >= width and h // 2 >= height:
        pixels = cv2.resize(pixels, (w // 2, h // 2), interpolation=cv2.INTER_LINEAR)
        h, w = pixels.shape[:2]
    if (w, h) != (width, height):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    return pixels


class Preprocessor:
    """Turns frames into :class:`VisualInputs` for one :class:`PixelConfig`."""

    def __init__(self, config, shift: tuple[int, int] = (0, 0)) -> None:
        self.cfg = config
        self.shift = (int(shift[0]), int(shift[1]))  # tile grid offset in cells (training augmentation)
        self._key: tuple | None = None
        self._last: tuple[int, int] | None = None  # (source, index) of the last tracked frame (__call__)

    def _setup(self, width: int, height: int, scale: float) -> None:
        c = self.cfg
        lw, lh = width / scale, height / scale
        self.cells_w = max(1, math.ceil(lw / c.cell_pt))
        self.cells_h = max(1, math.ceil(lh / c.cell_pt))
        per = c.tile_pt // c.cell_pt
        self.per = per
        sx, sy = (v % per for v in self.shift)
        self.sx, self.sy = sx, sy
        self.tiles_w = math.ceil((self.cells_w + sx) / per)
        self.tiles_h = math.ceil((self.cells_h + sy) / per)
        self.edge = np.zeros((self.tiles_h * per, self.tiles_w * per), np.uint8)
        self.edge_x = np.zeros_like(self.edge)
        self.edge_y = np.zeros_like(self.edge)
        k, g = c.max_glimpses, c.glimpse_px
        self.global_view = np.zeros((c.global_h, c.global_w, 4), np.uint8)
        self.glimpses = np.zeros((k, g, g, 3), np.uint8)
        self.boxes = np.zeros((k, 4), np.float32)
        self.mask = np.zeros((k,), bool)
        self.read_glimpses = None
        if c.read_window:
            rh, rw = c.read_px
            self.read_glimpses = np.zeros((READS * k, rh, rw, 3), np.uint8)
        # physical pixel edges of every tile, and normalised boxes
        tile_phys = c.tile_pt * scale
        ox, oy = sx * c.cell_pt * scale, sy * c.cell_pt * scale
        self.tx = np.clip(np.round(np.arange(self.tiles_w + 1) * tile_phys - ox), 0, width).astype(np.int64)
        self.ty = np.clip(np.round(np.arange(self.tiles_h + 1) * tile_phys - oy), 0, height).astype(np.int64)
        self.tile_phys = tile_phys
        self.glimpse_side = -1  # tiles of this side are cut from the windows' regions (_window_setup)
        if c.read_window:
            self._window_setup(scale)
        self.screen_vec = np.array([lw / 2560.0, lh / 1440.0, scale / 2.0, lw / lh], np.float32)
        self.width, self.height = width, height
        self._key = (width, height, scale)
        # incremental state (see the module's doc): the cell map, and each placed tile's work
        cp = c.cell_pt * scale
        self.cell_px = int(cp) if cp == int(cp) and int(cp) & (int(cp) - 1) == 0 else 0
        if self.cell_px and (width != self.cells_w * self.cell_px or height != self.cells_h * self.cell_px):
            self.cell_px = 0
        self.cells = np.zeros((self.cells_h, self.cells_w, 4), np.uint8)
        self._kept: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}  # tile -> (glimpse, its 4 windows)
        self._slots: dict[int, int] = {}  # slot -> the tile whose work it holds (tracked frames)
        # each tile's footprint in pixels (x0, y0, x1, y1): its rectangle and its read windows
        fx0, fx1 = self.tx[:-1], self.tx[1:]
        fy0, fy1 = self.ty[:-1], self.ty[1:]
        if c.read_window:
            ww, wh, _, _, offsets, _ = self.window_geometry
            dx0, dy0 = min(o[0] for o in offsets), min(o[1] for o in offsets)
            dx1, dy1 = max(o[0] for o in offsets) + ww, max(o[1] for o in offsets) + wh
            fx0, fx1 = np.minimum(fx0, fx0 + dx0), np.maximum(fx1, self.tx[:-1] + dx1)
            fy0, fy1 = np.minimum(fy0, fy0 + dy0), np.maximum(fy1, self.ty[:-1] + dy1)
        gy0, gx0 = np.meshgrid(fy0, fx0, indexing="ij")
        gy1, gx1 = np.meshgrid(fy1, fx1, indexing="ij")
        self.footprints = np.stack([gx0.ravel(), gy0.ravel(), gx1.ravel(), gy1.ravel()], 1)

    def _window_setup(self, scale: float) -> None:
        """The read windows' size in pixels, their offsets from a tile's corner, and (where they
        allow it: :meth:`_windows`) the region of a tile's windows and a buffer for it resized."""
        c = self.cfg
        (pw, ph), (gw, gh) = c.read_window
        ww, wh = round(pw * scale), round(ph * scale)
        offsets = window_origins(self.tile_phys, ww, wh)
        rx, ry = min(o[0] for o in offsets), min(o[1] for o in offsets)
        rw, rh = max(o[0] for o in offsets) - rx + ww, max(o[1] for o in offsets) - ry + wh
        whole = ww >= gw and wh >= gh and all((dx - rx) * gw % ww == 0 and (dy - ry) * gh % wh == 0
                                              for dx, dy in offsets)
        region = (rx, ry, rw, rh) if whole else None
        self.window_geometry = (ww, wh, gw, gh, offsets, region)
        if whole:
            self.window_regions = np.zeros((c.max_glimpses, rh * gh // wh, rw * gw // ww, 3), np.uint8)
        # Tiles side by side in a row share most of their regions: a run of them is resized as one
        # strip where a tile's pitch also falls on whole cells of the resize.
        pitch = round(self.tile_phys)
        self.run_pitch = pitch if whole and pitch == self.tile_phys and pitch * gw % ww == 0 else 0
        # A whole tile of this side, resized at the windows' scale, is a glimpse: where the region
        # also starts on whole cells from the tile's corner, glimpses are cut from it too.
        side = c.glimpse_px * ww // gw
        if whole and side * gw == c.glimpse_px * ww and -rx * gw % ww == 0 and -ry * gh % wh == 0:
            self.glimpse_side = side
            self.glimpse_in_region = (-rx * gw // ww, -ry * gh // wh)

    def __call__(self, frame: Frame) -> VisualInputs:
        changed = getattr(frame, "changed", NOT_TRACKED)
        if changed is not NOT_TRACKED:
            changed = changed if frame.follows(self._last) else None
            self._last = (frame.source, frame.index)
        return self.pixels(frame.pixels, frame.screen.scale, changed)

    def global_only(self, pixels: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """The global view of ``pixels`` alone (a new array): what :meth:`pixels` puts in
        ``global_view``, for frames whose glimpses are not needed (recent video in training)."""
        h, w = pixels.shape[:2]
        if self._key != (w, h, scale):
            self._setup(w, h, scale)
        return self._global_of(area_down(pixels, self.cells_w, self.cells_h))[:, :, :3].copy()

    def _global_of(self, cells: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
        """The global view of a cell map (into ``dst`` when given)."""
        return cv2.resize(cells, (self.cfg.global_w, self.cfg.global_h), dst=dst, interpolation=cv2.INTER_AREA)

    def still(self, frame: Frame) -> bool:
        """Whether ``frame`` follows the last tracked frame with nothing changed: then its inputs
        are the last frame's, and it becomes the last tracked frame with nothing to redo."""
        if (getattr(frame, "changed", None) == () and frame.follows(self._last)
                and self._key == (frame.width, frame.height, frame.screen.scale)):
            self._last = (frame.source, frame.index)
            return True
        return False

    def pixels(self, pixels: np.ndarray, scale: float = 1.0, changed=NOT_TRACKED) -> VisualInputs:
        """``changed``: the rectangles ``(left, top, width, height)`` that may differ from the frame
        this preprocessor saw last (its work on the rest is reused), None for "anything may have
        changed" (done in full, the work kept for the next frame), or left out (done in full, nothing
        kept: training, recorded frames)."""
        h, w = pixels.shape[:2]
        if self._key != (w, h, scale):
            self._setup(w, h, scale)
            changed = None if changed is not NOT_TRACKED else changed
        track = changed is not NOT_TRACKED
        rects = None if not track or changed is None else np.array(changed, np.int64).reshape(-1, 4)
        c = self.cfg
        # the cell map is kept (a buffer of its own) only for tracked frames: the next one reuses it
        cells = self._cells(pixels, rects) if track else area_down(pixels, self.cells_w, self.cells_h)
        self._global_of(cells, self.global_view)
        # content: edges of the cell map (the wallpaper is a smooth vertical gradient: no edges)
        gray = cv2.cvtColor(cells, cv2.COLOR_BGRA2GRAY)
        gx = cv2.absdiff(gray[:, 1:], gray[:, :-1])
        gy = cv2.absdiff(gray[1:, :], gray[:-1, :])
        ex, ey, sx, sy, ch, cw = self.edge_x, self.edge_y, self.sx, self.sy, self.cells_h, self.cells_w
        ex.fill(0)
        ey.fill(0)
        ex[sy: sy + ch, sx: sx + cw - 1] = gx > c.content_threshold
        ey[sy: sy + ch - 1, sx: sx + cw] = gy > c.content_threshold
        e = np.bitwise_or(ex, ey, out=self.edge)
        per, th, tw = self.per, self.tiles_h, self.tiles_w

        def per_tile(m: np.ndarray) -> np.ndarray:  # sum over each tile: rows first, in whole-row adds (5x faster)
            return m.reshape(th, per, tw * per).sum(1, dtype=np.int32).reshape(th, tw, per).sum(2)

        both = np.minimum(per_tile(ex), per_tile(ey))
        scores = (both * 256 + per_tile(e)).ravel()
        k = c.max_glimpses
        order = np.argsort(-scores, kind="stable")[:k]
        order = order[scores[order] > 0]
        order.sort()  # reading order: row-major tile index
        self.mask.fill(False)
        self.boxes.fill(0.0)
        # the tiles whose work from the previous frame holds: none of their footprint changed
        kept = {}
        if rects is not None and self._kept:
            ids = np.fromiter(self._kept, np.int64, len(self._kept))
            if len(rects):
                f = self.footprints[ids]
                r = rects[None]
                hit = ((f[:, None, 0] < r[..., 0] + r[..., 2]) & (r[..., 0] < f[:, None, 2])
                       & (f[:, None, 1] < r[..., 1] + r[..., 3]) & (r[..., 1] < f[:, None, 3])).any(1)
                ids = ids[~hit]
            kept = {int(t): self._kept[int(t)] for t in ids}
        crops: list[tuple[int, np.ndarray]] = []
        origins: list[tuple[int, int]] = []  # each crop's top-left pixel
        placed: list[tuple[int, int]] = []  # (slot, tile) of every glimpse
        reused: list[tuple[int, int]] = []
        for i, t in enumerate(order.tolist()):
            ty, tx = divmod(t, self.tiles_w)
            x0, x1, y0, y1 = self.tx[tx], self.tx[tx + 1], self.ty[ty], self.ty[ty + 1]
            crop = pixels[y0:y1, x0:x1]
            if crop.shape[0] == 0 or crop.shape[1] == 0:
                continue
            self.boxes[i] = (x0 / w, y0 / h, x1 / w, y1 / h)
            self.mask[i] = True
            placed.append((i, t))
            if t in kept:
                reused.append((i, t))
                continue
            crops.append((i, crop))
            origins.append((x0, y0))
        if track and rects is not None:
            self._zero_unused(np.flatnonzero(~self.mask))
        else:
            self.glimpses.fill(0)
            if self.read_glimpses is not None:
                self.read_glimpses.fill(0)
        side = self.glimpse_side
        cut = [i for i, crop in crops if crop.shape[:2] == (side, side)]  # empty unless the windows allow it
        _resize_into(self.glimpses, [(i, crop) for i, crop in crops if crop.shape[:2] != (side, side)], c.glimpse_px)
        if self.read_glimpses is not None:
            self._windows(pixels, [(i, int(bx), int(by)) for (i, _), (bx, by) in zip(crops, origins, strict=True)])
            if cut:  # whole tiles lie in their windows' resized region at the glimpses' own scale
                gx, gy = self.glimpse_in_region
                self.glimpses[cut] = self.window_regions[cut, gy:gy + c.glimpse_px, gx:gx + c.glimpse_px]
        if track:
            self._keep(placed, reused, kept)
        else:  # the buffers and cells now hold an untracked frame's work: the next tracked frame starts afresh
            self._kept, self._slots, self._last = {}, {}, None
        return VisualInputs(self.global_view[:, :, :3], self.glimpses, self.boxes, self.mask,
                            self.screen_vec, self.read_glimpses)

    def _cells(self, pixels: np.ndarray, rects: np.ndarray | None) -> np.ndarray:
        """The cell map: in full, or (``rects`` given, cells exact blocks) again only under ``rects``."""
        if rects is None or not self.cell_px:
            self.cells[:] = area_down(pixels, self.cells_w, self.cells_h)
            return self.cells
        cp = self.cell_px
        for x, y, rw, rh in rects.tolist():
            cx0, cy0 = max(0, x) // cp, max(0, y) // cp
            cx1 = min(self.cells_w, -(-(x + rw) // cp))
            cy1 = min(self.cells_h, -(-(y + rh) // cp))
            if cx0 < cx1 and cy0 < cy1:
                block = pixels[cy0 * cp:cy1 * cp, cx0 * cp:cx1 * cp]
                self.cells[cy0:cy1, cx0:cx1] = area_down(block, cx1 - cx0, cy1 - cy0)
        return self.cells

    def _zero_unused(self, slots: np.ndarray) -> None:
        self.glimpses[slots] = 0
        if self.read_glimpses is not None:
            k = self.cfg.max_glimpses
            self.read_glimpses[(np.arange(READS)[:, None] * k + slots[None]).ravel()] = 0

    def _keep(self, placed: list[tuple[int, int]], reused: list[tuple[int, int]], kept: dict) -> None:
        """Copy the reused tiles' work into their slots (unless a slot still holds it from the last
        frame) and remember every placed tile's work."""
        k = self.cfg.max_glimpses
        rg = self.read_glimpses
        for i, t in reused:
            if self._slots.get(i) == t:
                continue
            g, win = kept[t]
            self.glimpses[i] = g
            if rg is not None:
                rg[i::k] = win
        fresh = {t: (self.glimpses[i].copy(), None if rg is None else rg[i::k].copy())
                 for i, t in placed if t not in kept}
        self._kept = {t: kept[t] if t in kept else fresh[t] for _, t in placed}
        self._slots = dict(placed)

    def _windows(self, pixels: np.ndarray, tiles: list[tuple[int, int, int]]) -> None:
        """Each glimpse's four read windows into ``read_glimpses``; ``tiles`` are the glimpses'
        ``(index, x0, y0)`` tile corners in pixels.

        The four windows of a tile overlap by half. Where they shrink and their offsets fall on
        whole area cells of the resize (every common scale: 1, 1.25, 1.5, 2), the region they span
        is resized once and the windows are cut from it: bit for bit the windows resized one by one
        (tested), from under half the pixels. Glimpse tiles cluster (about 35 of 48 sit right of
        another on the virtual desktop), and the regions of a row of them are resized as one strip,
        from about half the pixels again. Otherwise each window is resized on its own."""
        k = self.cfg.max_glimpses
        ww, wh, gw, gh, offsets, region = self.window_geometry
        if region is None:
            _resize_into(self.read_glimpses, [(p * k + i, crop_padded(pixels, x + dx, y + dy, ww, wh))
                                              for p, (dx, dy) in enumerate(offsets) for i, x, y in tiles], gw, gh)
            return
        if not tiles:
            return
        rx, ry, rw, rh = region
        scaled = self.window_regions
        pitch = self.run_pitch
        runs: list[list[tuple[int, int, int]]] = []  # tiles side by side in one row, left to right
        for t in sorted(tiles, key=lambda t: (t[2], t[1])):
            last = runs[-1][-1] if runs else None
            if pitch and last is not None and t[2] == last[2] and t[1] == last[1] + pitch:
                runs[-1].append(t)
            else:
                runs.append([t])
        step = pitch * gw // ww

        def resize(runs: list[list[tuple[int, int, int]]]) -> None:  # into the runs' tiles' regions
            by_length: dict[int, list[list[tuple[int, int, int]]]] = {}
            for run in runs:
                by_length.setdefault(len(run), []).append(run)
            for n, group in by_length.items():
                strip_w = rw + (n - 1) * pitch
                strips = np.empty((len(group), scaled.shape[1], strip_w * gw // ww, 3), np.uint8)
                _resize_into(strips, [(j, crop_padded(pixels, run[0][1] + rx, run[0][2] + ry, strip_w, rh))
                                      for j, run in enumerate(group)], strips.shape[2], strips.shape[1])
                for strip, run in zip(strips, group, strict=True):
                    for j, (i, _, _) in enumerate(run):
                        scaled[i] = strip[:, j * step:j * step + scaled.shape[2]]

        if len(tiles) >= PARALLEL_MIN:
            runs.sort(key=len)  # every other run to each half: halves of about the same lengths and work
            _in_two(resize, runs[0::2], runs[1::2])
        else:
            resize(runs)
        slots = np.array([i for i, _, _ in tiles])
        for p, (dx, dy) in enumerate(offsets):
            ox, oy = (dx - rx) * gw // ww, (dy - ry) * gh // wh
            self.read_glimpses[p * k + slots] = scaled[slots, oy:oy + gh, ox:ox + gw]


def window_origins(tile: float, ww: int, wh: int) -> list[tuple[int, int]]:
    """Where a glimpse's four read windows (``ww`` x ``wh`` pixels) start, relative to its tile's
    top-left (a ``tile``-pixel square): each is centred on one quarter of the tile, row by row.
    The word a window names is the one centred in its middle (:func:`centred_word`), so every word
    whose centre lies in the tile is named by one of the four, whole if it fits the window."""
    return [(round((0.25 + 0.5 * qx) * tile - ww / 2), round((0.25 + 0.5 * qy) * tile - wh / 2))
            for qy in (0, 1) for qx in (0, 1)]


def centred_word(words, x0: float, y0: float, ww: float, wh: float, cell: float) -> str | None:
    """The word a read window names: ``words`` are ``(word, (x0, y0, x1, y1))`` boxes in the window's
    pixels' frame; the window spans ``ww`` x ``wh`` from ``(x0, y0)``; its middle cell is ``cell``
    pixels square (half a tile). The one word whose box centre lies in the middle cell, if it is
    wholly inside the window; ``""`` if none is centred there or the centred one is cut; ``None``
    when two are centred there (such a window teaches nothing clear)."""
    cx, cy = x0 + ww / 2, y0 + wh / 2
    centred = [(w, b) for w, b in words  # the middle cell is half-open, so cells tile the plane
               if -cell <= b[0] + b[2] - 2 * cx < cell and -cell <= b[1] + b[3] - 2 * cy < cell]
    if len(centred) > 1:
        return None
    if not centred:
        return ""
    w, (a, b, c, d) = centred[0]
    return w if a >= x0 and b >= y0 and c <= x0 + ww and d <= y0 + wh else ""


PARALLEL_MIN = 16  # tiles' windows resized in two threads from this many on (fewer: the hand-off costs more)
_pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own


def _in_two(work, first, second) -> None:
    """``work(first)`` and ``work(second)`` side by side, the second in a worker thread, where OpenCV
    may use two threads or more (else one after the other): OpenCV resizes a small image in one
    thread, releasing the GIL, and most of a step's preprocessing is such resizing. The two must
    write apart."""
    global _pool
    if cv2.getNumThreads() < 2:
        work(first)
        work(second)
        return
    if _pool is None or _pool[0] != os.getpid():  # a forked child has the pool but not its thread
        _pool = (os.getpid(), concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dw-preprocess"))
    other = _pool[1].submit(work, second)
    try:
        work(first)
    finally:
        other.result()


def crop_padded(pixels: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """``pixels[y0:y0+h, x0:x0+w]``, black where that lies outside the frame (a view when it does not)."""
    fh, fw = pixels.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + w <= fw and y0 + h <= fh:
        return pixels[y0:y0 + h, x0:x0 + w]
    out = np.zeros((h, w, *pixels.shape[2:]), pixels.dtype)
    ax, ay, bx, by = max(0, x0), max(0, y0), min(fw, x0 + w), min(fh, y0 + h)
    if ax < bx and ay < by:
        out[ay - y0:by - y0, ax - x0:bx - x0] = pixels[ay:by, ax:bx]
    return out


def _resize_into(dst: np.ndarray, crops: list[tuple[int, np.ndarray]], g: int, gh: int | None = None) -> None:
    """Resample each BGRA ``(index, crop)`` into ``dst[index]`` (``dst``: N, gh, g, 3; ``gh``
    defaults to ``g``); the rest of ``dst`` is left as it is."""
    gh = g if gh is None else gh
    by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for i, crop in crops:
        by_shape.setdefault(crop.shape[:2], []).append((i, crop))
    # Area averaging treats channels alike, so alpha is dropped before resizing (a quarter less work).
    for (ch, cw), group in by_shape.items():
        if len(group) == 1 or ch < gh or cw < g:
            for i, crop in group:
                cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR), (g, gh), dst=dst[i], interpolation=cv2.INTER_AREA)
            continue
        # Same-size crops that shrink on both axes go through one resize, stacked: area
        # averaging never mixes rows across a crop boundary there (n*ch rows -> n*gh rows),
        # so the result is identical to one resize per crop, at about half the cost.
        stack = cv2.cvtColor(np.concatenate([crop for _, crop in group]), cv2.COLOR_BGRA2BGR)
        out = cv2.resize(stack, (g, gh * len(group)), interpolation=cv2.INTER_AREA)
        dst[[i for i, _ in group]] = out.reshape(len(group), gh, g, 3)
