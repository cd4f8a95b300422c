"""Template grounding: where the instruction's own words stand on the screen, found by drawing them.

A reader names the word in each read window and the step compares that name with the
instruction (:mod:`policies.pixel.reads`). A template grounding (``GroundingConfig.kind`` =
``template``) asks the easier question directly: it draws each instruction word in a few fonts,
sizes and styles (``styles``: ``[font file, pixel size, underlined]`` each, data of the suite the
checkpoint was trained for, saved in its config) and scores each read window by the normalised
cross-correlation of the best-fitting drawing placed with its centre in the window's middle cell,
the cell a reader's word is named by (:func:`policies.pixel.processing.centred_word`). Nothing is
learned here: a random string like ``qMtj3`` is found as well as a common word. It finds text
drawn in the fonts it is given, at about the sizes it is given: the right tool where a UI's fonts
are known, not a general reader.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from policies.base import PolicyError
from policies.pixel.vision import luma
from policies.pixel.words import is_word_char

FLAT = 4.0  # a placement whose pixels vary less than this (grey levels, standard deviation) scores 0
NCC_FLOOR, NCC_FULL = 0.5, 0.9  # correlation mapped to a match of 0 and of 1 (linear between)
MAX_WORDS = 16  # distinct instruction words drawn (a task's instruction has 4-12)


def instruction_words(text_ids: np.ndarray) -> list[tuple[str, list[int]]]:
    """The instruction's distinct words (runs of word bytes, as :func:`policies.pixel.model.word_templates`
    cuts them) with every position each starts at, in order of first appearance, at most
    ``MAX_WORDS``; padding and non-ASCII bytes end a word."""

    out: dict[str, list[int]] = {}
    ids = [int(v) for v in text_ids]
    i = 0
    while i < len(ids):
        if ids[i] < 128 and is_word_char(chr(ids[i])):
            j = i
            while j < len(ids) and ids[j] < 128 and is_word_char(chr(ids[j])):
                j += 1
            word = bytes(ids[i:j]).decode("ascii")
            if word in out or len(out) < MAX_WORDS:
                out.setdefault(word, []).append(i)
            i = j
        else:
            i += 1
    return list(out.items())


@lru_cache(maxsize=64)
def _font(name: str, size: float):
    from PIL import ImageFont

    try:
        return ImageFont.truetype(name, size)
    except OSError:
        raise PolicyError(f"font {name} not found: a template grounding draws the instruction's words in it "
                          "(install the font; Liberation fonts: apt-get install fonts-liberation)") from None


@lru_cache(maxsize=4096)
def drawing(word: str, font: str, size: float, underline: bool) -> np.ndarray:
    """``word`` drawn black on white in ``font`` at ``size`` pixels, cut to its ink (and underline)
    plus one pixel: (h, w) float32 grey levels."""
    from PIL import Image, ImageDraw

    f = _font(font, size)
    x0, y0, x1, y1 = f.getbbox(word)
    ascent = f.getmetrics()[0]
    if underline:
        y1 = max(y1, ascent + 2)
    im = Image.new("L", (x1 - x0 + 2, y1 - y0 + 2), 255)
    d = ImageDraw.Draw(im)
    d.text((1 - x0, 1 - y0), word, font=f, fill=0)
    if underline:
        d.line([(1, 1 - y0 + ascent + 1), (x1 - x0, 1 - y0 + ascent + 1)], fill=0)
    return np.asarray(im, np.float32)


def grey(windows: np.ndarray) -> torch.Tensor:
    """(N, h, w, 3) uint8 BGR -> (N, h, w) float32 luma (ITU-R 601, as OpenCV's)."""
    return luma(torch.from_numpy(np.ascontiguousarray(windows)))


def drawn_scores(windows: np.ndarray, words: list[str], variants, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """How well each word, drawn each of ``variants`` ways, fits each window ((N, h, w, 3) uint8
    BGR) with its centre in the window's middle cell (``cell`` pixels square), and where.

    Returns ``scores`` (N, len(words)) float32 in [0, 1]: the best normalised cross-correlation
    over drawings and placements, mapped from [``NCC_FLOOR``, ``NCC_FULL``] onto [0, 1], 0 where
    no drawing fits; and ``at`` (N, len(words), 2) float32: that placement's centre relative to
    the middle cell's centre, in cells (each coordinate in [-0.5, 0.5))."""
    n, h, w = windows.shape[:3]
    out = np.zeros((n, len(words)), np.float32)
    at = np.zeros((n, len(words), 2), np.float32)
    if n == 0 or not words:
        return out, at
    g = grey(windows)
    live = (g.flatten(1).std(1) > 0).nonzero().flatten()  # a blank window holds no word
    if len(live) == 0:
        return out, at
    g = g[live][:, None]
    g64 = g[:, 0].double()  # integral images of the windows and their squares: box sums in O(1)
    ii1 = F.pad(g64.cumsum(1).cumsum(2), (1, 0, 1, 0))
    ii2 = F.pad((g64 * g64).cumsum(1).cumsum(2), (1, 0, 1, 0))
    cx, cy, half = w / 2, h / 2, cell / 2
    best = torch.full((len(live), len(words)), -1.0)
    where = torch.zeros((len(live), len(words), 2))
    for j, word in enumerate(words):
        for font, size, underline in variants:
            t = torch.from_numpy(drawing(word, font, float(size), bool(underline)))
            th, tw = t.shape
            # top-left corners whose drawing lies inside the window, centre in the middle cell
            x_lo, x_hi = max(0, math.ceil(cx - half - tw / 2)), min(w - tw, math.ceil(cx + half - tw / 2) - 1)
            y_lo, y_hi = max(0, math.ceil(cy - half - th / 2)), min(h - th, math.ceil(cy + half - th / 2) - 1)
            if x_hi < x_lo or y_hi < y_lo:
                continue
            tz = t - t.mean()
            tn = float(tz.norm())
            if tn == 0:
                continue
            num = F.conv2d(g[:, :, y_lo:y_hi + th, x_lo:x_hi + tw], tz[None, None])[:, 0].double()
            area = th * tw
            ys, xs = slice(y_lo, y_hi + 1), slice(x_lo, x_hi + 1)
            ye, xe = slice(y_lo + th, y_hi + th + 1), slice(x_lo + tw, x_hi + tw + 1)
            s1 = ii1[:, ye, xe] - ii1[:, ys, xe] - ii1[:, ye, xs] + ii1[:, ys, xs]
            s2 = ii2[:, ye, xe] - ii2[:, ys, xe] - ii2[:, ye, xs] + ii2[:, ys, xs]
            var = (s2 - s1 * s1 / area).clamp(min=0)
            ncc = torch.where(var > FLAT * FLAT * area, num / (var.sqrt() * tn + 1e-6), torch.zeros((), dtype=num.dtype))
            peak, idx = ncc.flatten(1).max(1)
            better = peak.float() > best[:, j]
            best[:, j] = torch.where(better, peak.float(), best[:, j])
            nx = x_hi - x_lo + 1
            px = (x_lo + idx % nx + tw / 2 - cx) / cell
            py = (y_lo + torch.div(idx, nx, rounding_mode="floor") + th / 2 - cy) / cell
            where[:, j] = torch.where(better[:, None], torch.stack([px, py], -1).float(), where[:, j])
    out[live.numpy()] = ((best - NCC_FLOOR) / (NCC_FULL - NCC_FLOOR)).clamp(0, 1).numpy()
    at[live.numpy()] = where.numpy()
    return out, at


def _by_position(scores: np.ndarray, at: np.ndarray, words, length: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(R*K, words) scores and (R*K, words, 2) placements -> a drawn-match model's ``match``
    (K, R, L) and ``match_pos`` (K, R, L, 2): each word's at every position it starts at (0 where
    no word starts), the placements in glimpse units (:func:`_in_glimpse`)."""
    n = len(scores)
    out = np.zeros((n, length), np.float32)
    pos = np.zeros((n, length, 2), np.float32)
    glimpse_at = _in_glimpse(at, n // k)
    for j, (_, positions) in enumerate(words):
        out[:, positions] = scores[:, j:j + 1]
        pos[:, positions] = glimpse_at[:, j:j + 1]
    return (out.reshape(n // k, k, -1).transpose(1, 0, 2),
            pos.reshape(n // k, k, length, 2).transpose(1, 0, 2, 3))


def _in_glimpse(at: np.ndarray, r: int) -> np.ndarray:
    """(R*K, W, 2) placements relative to their window's middle cell (in cells, window-major) ->
    where they lie in the glimpse's tile, in its units (0..1 across, as the pointer's offsets):
    window q's middle cell is the tile's quarter q (row by row), half a tile square."""
    if r != 4:
        raise ValueError(f"drawn matches read four windows a glimpse, not {r}")
    quarter = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]], np.float32)
    k = len(at) // r
    return np.repeat(quarter, k, 0)[:, None, :] + at * 0.5


def model_geometry(config) -> tuple[list, float]:
    """A template grounding's drawings at its windows' scale, and its windows' middle cell in pixels:
    a window of ``window`` points is ``window_px`` pixels, so a point is that ratio."""
    g = config.grounding
    px_per_pt = g["window_px"][0] / g["window"][0]
    variants = [(f, size * px_per_pt, u) for f, size, u in g["styles"]]
    return variants, config.tile_pt / 2 * px_per_pt


def match_of_samples(config, windows: np.ndarray, masks: np.ndarray, text_ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, R, L) drawn matches and (B, K, R, L, 2) placements, float16, for a batch of
    samples' windows ((B, R*K, h, w, 3)), glimpse masks ((B, K)) and byte ids ((B, L)): what
    training feeds a template grounding in place of a reader's. A session's frames share most
    windows: each distinct one is matched once."""
    reads = DrawnReads(config)
    both = [reads.frame(w, m, t) for w, m, t in zip(windows, masks, text_ids, strict=True)]
    return np.stack([a for a, _ in both]).astype(np.float16), np.stack([b for _, b in both]).astype(np.float16)


class DrawnReads:
    """A template-grounded policy's ``match`` input per frame. Scores are remembered per window (keyed by
    a digest of its pixels) for the current instruction, so a window seen on an earlier frame is
    not matched again; windows of padded (masked) glimpses score 0."""

    CAPACITY = 8192

    def __init__(self, config):
        self.config = config
        self.variants, self.cell = model_geometry(config)
        self._ids: np.ndarray | None = None
        self._words: list[tuple[str, list[int]]] = []
        self._seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def frame(self, read_glimpses: np.ndarray, mask: np.ndarray, text_ids: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """``match`` (K, R, L) and ``match_pos`` (K, R, L, 2) float32 for one frame's windows
        ((R*K, h, w, 3)), glimpse mask (K,) and ids (L,)."""
        import xxhash

        if self._ids is None or not np.array_equal(self._ids, text_ids):
            self._ids, self._words, self._seen = text_ids.copy(), instruction_words(text_ids), {}
        k = len(mask)
        r = len(read_glimpses) // k
        live = np.tile(np.asarray(mask, bool), r)
        keys = [xxhash.xxh3_64_intdigest(w.tobytes()) if ok else 0 for w, ok in zip(read_glimpses, live, strict=True)]
        todo = [i for i, key in enumerate(keys) if live[i] and key not in self._seen]
        if todo:
            if len(self._seen) + len(todo) > self.CAPACITY:
                self._seen = {}
            scores, at = drawn_scores(read_glimpses[todo], [w for w, _ in self._words], self.variants, self.cell)
            for i, row, row_at in zip(todo, scores, at, strict=True):
                self._seen[keys[i]] = (row, row_at)
        per_word = np.zeros((len(keys), len(self._words)), np.float32)
        per_at = np.zeros((len(keys), len(self._words), 2), np.float32)
        for i, key in enumerate(keys):
            if live[i]:
                per_word[i], per_at[i] = self._seen[key]
        return _by_position(per_word, per_at, self._words, len(text_ids), k)
