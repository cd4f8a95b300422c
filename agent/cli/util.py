"""Small helpers shared by the ``dw`` subcommands: size lists, JSON output, tables."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from agent.errors import UserError

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*(?:@\s*(\d+(?:\.\d+)?))?\s*$")
MAX_SIDE = 16384
VIRTUAL_MIN = (160, 120)  # the virtual desktop's smallest screen


def parse_size(text: str, minimum: tuple[int, int] = (16, 16)) -> tuple[int, int, float | None]:
    """``"1920x1080"`` or ``"5120x2880@2"`` → (width, height, scale or None)."""
    m = _SIZE.match(text)
    if not m:
        raise UserError(f"bad size {text.strip()!r}: expected WIDTHxHEIGHT or WIDTHxHEIGHT@SCALE, e.g. 1920x1080@1.25")
    w, h = int(m.group(1)), int(m.group(2))
    scale = float(m.group(3)) if m.group(3) else None
    if not (minimum[0] <= w <= MAX_SIDE and minimum[1] <= h <= MAX_SIDE):
        raise UserError(f"bad size {text.strip()!r}: must be within {minimum[0]}x{minimum[1]} .. {MAX_SIDE}x{MAX_SIDE}")
    if scale is not None and not 0.5 <= scale <= 4:
        raise UserError(f"bad size {text.strip()!r}: scale must be within 0.5..4")
    return w, h, scale


def parse_sizes(text: str, minimum: tuple[int, int] = (16, 16), *, default_scale: float | None = None,
                scale: bool = True) -> list[tuple]:
    """A comma list of sizes, ``"640x480,1920x1080,5120x2880@2"`` -> ``[(640, 480, None), ...]``.

    ``minimum``: the smallest width and height allowed. ``default_scale``: the scale of a size
    given without one (None: left to the command). ``scale=False``: ``(width, height)`` pairs, for
    commands where a scale means nothing (one given is ignored).
    """
    items = [s for s in text.split(",") if s.strip()]
    if not items:
        raise UserError("no sizes given")
    sizes = [parse_size(s, minimum) for s in items]
    if not scale:
        return [(w, h) for w, h, _ in sizes]
    return [(w, h, default_scale if s is None else s) for w, h, s in sizes]


def parse_window(points: str | None, pixels: str | None, tile_pt: int) -> tuple[int, int, int, int] | None:
    """``--window WxH`` (points) and ``--window-px WxH`` (pixels; default one per point) -> a read
    window ``(w_pt, h_pt, w_px, h_px)`` for ``tile_pt``-point tiles, or None without ``--window``."""
    if not points:
        if pixels:
            raise UserError("--window-px needs --window")
        return None
    w, h, scale = parse_size(points, (8, 8))
    pw, ph, pscale = parse_size(pixels, (8, 8)) if pixels else (w, h, None)
    if scale is not None or pscale is not None:
        raise UserError("--window and --window-px take WIDTHxHEIGHT, without a scale")
    if min(w, h) < tile_pt / 2:
        raise UserError(f"--window {w}x{h}: a window holds its middle half-tile cell, so at least "
                        f"{tile_pt // 2} points each way for {tile_pt}-point tiles")
    return w, h, pw, ph


def parse_virtual_tasks(text: str) -> list[str]:
    """``all``, ``classic`` (the first 7 families, which the bundled checkpoints learned) or a comma
    list of the virtual desktop's task names."""
    from agent.desktops.virtual import task_names
    from agent.desktops.virtual.tasks import CLASSIC_TASKS

    names = task_names()
    if text in ("all", ""):
        return names
    if text == "classic":
        return list(CLASSIC_TASKS)
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    for t in tasks:
        if t not in names:
            raise UserError(f"unknown task {t!r}; choose from {', '.join(names)}, 'all' or 'classic'")
    return tasks


def add_look_arguments(p) -> None:
    """``--theme`` and ``--font`` for the commands that run the virtual desktop."""
    from agent.desktops.virtual.themes import FACES, THEMES

    p.add_argument("--theme", default=None, metavar="NAME",
                   help=f"virtual desktop theme: {', '.join(THEMES)}, or 'mixed' (chosen per episode from the "
                        "seed; the default)")
    p.add_argument("--font", default=None, metavar="NAME[:PT]",
                   help=f"virtual desktop font: {', '.join(FACES)}, optionally with a body size in points "
                        "(dejavu-sans:14), or 'mixed' (face and size per episode from the seed; the default)")


def check_look(args) -> tuple[str, str]:
    """The ``--theme`` and ``--font`` of a virtual-desktop command, checked (unknown: one clear line)."""
    from agent.desktops.virtual.themes import MIXED, check_font, check_theme

    theme, font = args.theme or MIXED, args.font or MIXED
    check_theme(theme)
    check_font(font)
    return theme, font


def no_look_arguments(args, suite: str) -> None:
    """``--theme``/``--font`` given to a suite that has no themes: one clear line."""
    if getattr(args, "theme", None) or getattr(args, "font", None):
        raise UserError(f"--theme and --font apply to --suite virtual only, not {suite}")


def default_scale(width: int, height: int) -> float:
    """The HiDPI scale a display of this size usually runs at (5K and up: 2)."""
    return 2.0 if width >= 5120 else 1.0


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def console():
    from rich.console import Console

    return Console()
