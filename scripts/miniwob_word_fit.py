"""How often can a reader see a MiniWoB++ target word whole? Per task, over unseen pages.

A target is an instruction word that also appears on the page below the instruction bar (an
option, a link, a button's label). The reader reads what the policy cuts from the screen: with tile
reads (the MiniWoB tinies before read windows), each glimpse's 32-point tile and a copy shifted right by half a
tile, and it names a word only if the word lies whole inside; with read windows
(a grounding's ``window``), four windows per glimpse, one of which names each word centred in
the glimpse's tile if the word fits the window.

    python scripts/miniwob_word_fit.py --tasks click-option,click-link --pages 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.desktops.miniwob.desktop import MiniWoBBrowser, open_miniwob  # noqa: E402
from agent.desktops.miniwob.evaluate import parse_tasks  # noqa: E402
from agent.desktops.miniwob.reading import page_words  # noqa: E402
from policies.pixel.processing import centred_word, window_origins  # noqa: E402

INSTRUCTION_BAR = 50  # points: the task area's words below this are the page's own


def in_a_tile(box, tile: float, phases) -> bool:
    """Whole inside one tile of the grid, or of the grid shifted by a phase (in tiles)."""
    x0, y0, x1, y1 = box
    return any(math.floor((x0 - fx * tile) / tile) == math.floor((x1 - 1e-6 - fx * tile) / tile)
               and math.floor((y0 - fy * tile) / tile) == math.floor((y1 - 1e-6 - fy * tile) / tile)
               for fx, fy in phases)


def in_a_window(word, tile: float, ww: float, wh: float) -> bool:
    """Named by one of the four windows of the glimpse whose tile holds the word's centre."""
    _, (x0, y0, x1, y1) = word
    tx, ty = math.floor((x0 + x1) / 2 / tile) * tile, math.floor((y0 + y1) / 2 / tile) * tile
    return any(centred_word([word], tx + dx, ty + dy, ww, wh, tile / 2) == word[0]
               for dx, dy in window_origins(tile, ww, wh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="all")
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--seed", type=int, default=100_000, help="the first page (the evaluation's seeds)")
    ap.add_argument("--tile-pt", type=int, default=32)
    ap.add_argument("--window", default="64x32", help="read window in points")
    args = ap.parse_args()
    ww, wh = (int(v) for v in args.window.split("x"))
    print(f"{'task':24s} {'targets':>7s} {'median width':>12s} {'tile or copy':>12s} {'windows':>8s}")
    for task in parse_tasks(args.tasks):
        widths, tiles, windows = [], 0, 0
        with MiniWoBBrowser(task, "headless") as browser:
            for seed in range(args.seed, args.seed + args.pages):
                desk = open_miniwob(task, seed, "headless", browser=browser)
                try:
                    instruction = set(desk.instruction.replace('"', " ").replace(".", " ").split())
                    found = page_words(browser.driver)
                finally:
                    desk.close()
                for word in found:
                    w, box = word
                    if box[1] < INSTRUCTION_BAR or w not in instruction:
                        continue
                    widths.append(box[2] - box[0])
                    tiles += in_a_tile(box, args.tile_pt, [(0, 0), (0.5, 0)])
                    windows += in_a_window(word, args.tile_pt, ww, wh)
        n = len(widths)
        med = f"{statistics.median(widths):.0f} pt" if n else "-"
        print(f"{task:24s} {n:7d} {med:>12s} {f'{tiles}/{n}':>12s} {f'{windows}/{n}':>8s}")


if __name__ == "__main__":
    main()
