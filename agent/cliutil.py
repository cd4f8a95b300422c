"""Small helpers shared by the ``dw`` subcommands: size lists, JSON output, tables."""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from agent.errors import UserError

_SIZE = re.compile(r"^\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*(?:@\s*(\d+(?:\.\d+)?))?\s*$")


def parse_size(text: str) -> tuple[int, int, float | None]:
    """``"1920x1080"`` or ``"5120x2880@2"`` → (width, height, scale or None)."""
    m = _SIZE.match(text)
    if not m:
        raise UserError(f"bad size {text!r}: expected WIDTHxHEIGHT or WIDTHxHEIGHT@SCALE, e.g. 1920x1080@1.25")
    w, h = int(m.group(1)), int(m.group(2))
    scale = float(m.group(3)) if m.group(3) else None
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise UserError(f"bad size {text!r}: width and height must be within 16..16384")
    if scale is not None and not 0.5 <= scale <= 4:
        raise UserError(f"bad size {text!r}: scale must be within 0.5..4")
    return w, h, scale


def parse_sizes(text: str) -> list[tuple[int, int, float | None]]:
    items = [s for s in text.split(",") if s.strip()]
    if not items:
        raise UserError("no sizes given")
    return [parse_size(s) for s in items]


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
