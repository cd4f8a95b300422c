"""Labelled reading tiles from MiniWoB++ pages: a bank cut once, sampled by reader pretraining.

The virtual desktop's reader names 0-16 % of MiniWoB's words (its 11-pixel text is smaller than
anything that reader learned on), so a MiniWoB reader needs MiniWoB's own tiles. The page's DOM
names every word and its box (one ``Range`` per word of each visible text node), as the virtual
desktop's painter does (:mod:`agent.desktops.virtual.reading`); tiles are cut around those words with the
same rule (the one whole word inside, or ``""``). Opening a page takes a browser round-trip, too
slow for every training step, so tiles are cut once into a bank (``.npz``) and sampled from it.
Pages with odd seeds are held out.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from agent.desktops.virtual.reading import scene_tiles, word_of
from agent.errors import UserError

WORDS_JS = r"""
const out = [];
const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
let node;
while ((node = walk.nextNode())) {
  const el = node.parentElement;
  if (!el) continue;
  const st = getComputedStyle(el);
  if (st.visibility === 'hidden' || st.display === 'none') continue;
  const re = /\S+/g;
  let m;
  while ((m = re.exec(node.data))) {
    const r = document.createRange();
    r.setStart(node, m.index);
    r.setEnd(node, m.index + m[0].length);
    const b = r.getBoundingClientRect();
    if (b.width > 0 && b.height > 0) out.push([m[0], b.left, b.top, b.right, b.bottom]);
  }
}
return out;
"""


def page_words(driver) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The page's visible words (cut as instruction words are: ``word_of``) and their boxes in
    CSS pixels from the task area's top-left, which is the screenshot's."""
    return [(w, (x0, y0, x1, y1)) for t, x0, y0, x1, y1 in driver.execute_script(WORDS_JS) if (w := word_of(t))]


def cut_bank(tasks: list[str], pages: int, seed: int = 0, tile_pt: int = 32, glimpse_px: int = 48,
             per_page: int = 16, window: tuple[int, int, int, int] | None = None) -> dict[str, np.ndarray]:
    """Tiles from ``pages`` pages of each task (seeds ``seed``..): ``tiles`` (N, G, G, 3) uint8 BGR,
    ``words`` (N,) str, ``seeds`` (N,) the page each came from, and the tile geometry. With
    ``window`` ``(w_pt, h_pt, w_px, h_px)``, read windows ((N, h_px, w_px, 3)) instead of tiles
    (:func:`agent.desktops.virtual.reading.scene_windows`)."""
    from agent.desktops.miniwob.desktop import MiniWoBBrowser, open_miniwob
    from agent.desktops.virtual.reading import scene_windows

    rng = random.Random(seed)
    tiles, words, seeds = [], [], []
    for task in tasks:
        with MiniWoBBrowser(task, "headless") as browser:
            for s in range(seed, seed + pages):
                desk = open_miniwob(task, s, "headless", browser=browser)
                try:
                    frame = desk.observe()
                    found = page_words(browser.driver)
                finally:
                    desk.close()
                pixels = np.ascontiguousarray(frame.pixels[:, :, :3])
                scale = frame.screen.scale
                cut = (scene_windows(rng, pixels, scale, found, per_page, tile_pt, window) if window
                       else scene_tiles(rng, pixels, scale, found, per_page, tile_pt, glimpse_px))
                for tile, word in cut:
                    tiles.append(tile)
                    words.append(word)
                    seeds.append(s)
    if not tiles:
        raise UserError("no page gave a tile (no visible words?)")
    return {"tiles": np.stack(tiles), "words": np.array(words), "seeds": np.array(seeds, np.int64),
            "tile_pt": np.int64(tile_pt), "glimpse_px": np.int64(glimpse_px),
            "window": np.array(window or (), np.int64)}


def save_bank(bank: dict[str, np.ndarray], path: str | Path) -> None:
    np.savez_compressed(path, **bank)


def _geometry(tile_pt: int, glimpse_px: int, window=()) -> str:
    if window:
        return f"{window[0]}x{window[1]}-point windows in {window[2]}x{window[3]} pixels for {tile_pt}-point tiles"
    return f"tiles of {tile_pt} points in {glimpse_px} pixels"


def bank_source(paths: str | Path | list[str | Path]):
    """A reader-pretraining tile source (``policies.pixel.reader.TileSource``) drawing from one bank
    or several (of one tile geometry, the reader's): training tiles from even-seeded pages,
    held-out ones from odd."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    parts = []
    for path in paths:
        try:
            with np.load(path) as z:
                part = {k: z[k] for k in ("tiles", "words", "seeds", "tile_pt", "glimpse_px")}
                part["window"] = tuple(int(v) for v in z["window"]) if "window" in z.files else ()
                parts.append(part)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"{path}: not a tile bank ({e})") from None
    name = ", ".join(map(str, paths))
    geometries = {(int(b["tile_pt"]), int(b["glimpse_px"]), b["window"]) for b in parts}
    if len(geometries) > 1:
        raise UserError(f"{name}: the banks cut tiles of different sizes "
                        f"({', '.join(_geometry(*g) for g in sorted(geometries))})")
    (geometry,) = geometries
    bank = {k: np.concatenate([b[k] for b in parts]) for k in ("tiles", "words", "seeds")}
    split = {held: np.flatnonzero(bank["seeds"] % 2 == int(held)) for held in (False, True)}
    if not len(split[False]) or not len(split[True]):
        raise UserError(f"{name}: the bank needs pages of both even (training) and odd (held-out) seeds")

    def source(rng: random.Random, n: int, held_out: bool, tile_pt: int, glimpse_px: int, window=None):
        if (tile_pt, glimpse_px, tuple(window or ())) != geometry:
            raise UserError(f"{name}: {_geometry(*geometry)}, not the reader's {_geometry(tile_pt, glimpse_px, window)}")
        pick = [int(split[held_out][rng.randrange(len(split[held_out]))]) for _ in range(n)]
        return bank["tiles"][pick], [str(bank["words"][i]) for i in pick]

    return source
