"""Small helpers shared by the ``dw`` subcommands: size lists, JSON output, tables, and the shared
option vocabulary (defaults in every ``--help``, deprecated spellings, human-like timing)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from agent.errors import UserError

DEFAULT_FPS = 10.0  # dw run's capture rate cap
UNCAPPED_RECORD_FPS = 30.0  # the encoder's nominal rate when capture has no cap (frames keep their real times)
NO_EFFECT = 10  # Agent's max_no_effect in dw run (--no-effect) and MCP's run_policy

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


def shows_default(action: argparse.Action) -> bool:
    """Whether ``action`` has a default worth printing: not None, not an off switch, not an empty list."""
    d = action.default
    if d is None or d is argparse.SUPPRESS or action.help is argparse.SUPPRESS:
        return False
    if isinstance(action, argparse._StoreConstAction | argparse._HelpAction | argparse._VersionAction):
        return False  # store_true/store_false/store_const (an off switch, or the const's opposite): nothing to show
    if isinstance(d, list | tuple) and not d:
        return False
    return action.option_strings != [] or action.nargs in ("?", "*")


class HelpFormatter(argparse.HelpFormatter):
    """Every ``dw`` parser's formatter: an option's help ends with its default (``(default: X)``) unless the
    help already says what the default is, or there is no meaningful one (None, an off switch, ``[]``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not shows_default(action) or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def use_help_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand parser under it :class:`HelpFormatter`."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                use_help_formatter(sub)


class _Deprecated(argparse.Action):
    """An old spelling of an option, kept for one release: hidden from ``--help``, it sets the new option's
    value and prints one line to stderr saying what to write instead."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_deprecated(p, old: str, new: str, *, dest: str, flag: bool = False, const: Any = None) -> None:
    """``old``, a hidden deprecated spelling of ``new`` that stores into ``dest``: a value (the default) or,
    with ``flag=True``, a switch that stores ``const``."""
    kw = {"nargs": 0, "const": const} if flag else {"metavar": new.lstrip("-").upper()}
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                   **kw)


HUMAN_LIKE = "--human-like"  # the one spelling of human-like timing (off: --no-human-like)


def add_human_like(p, *, default: bool, what: str) -> None:
    """``--human-like``/``--no-human-like``: whether the scripted expert moves and types with human timing and
    cursor paths (``what``: who it applies to) instead of clicking targets outright."""
    a = p.add_argument(HUMAN_LIKE, action=argparse.BooleanOptionalAction, default=default)
    a.help = (f"{what} moves and types with human timing and cursor paths; --no-human-like: the direct expert, "
              f"which clicks targets outright (default: {'on' if default else 'off'})")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def console():
    from rich.console import Console

    return Console()
