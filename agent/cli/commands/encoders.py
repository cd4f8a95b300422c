"""``dw encoders``: which encoder each screen size gets, proven by a round trip, and what was rejected."""

from __future__ import annotations

import json
import re

from agent.cli import util

DEFAULT_SIZES = [
    (640, 480), (800, 600), (1024, 768), (1280, 1024), (1365, 767), (1366, 768), (1920, 1080), (1921, 1081),
    (2560, 1440), (3440, 1440), (3840, 2160), (4096, 2160), (5120, 1440), (5120, 2880), (6016, 3384),
    (7680, 4320),
]


def report(sizes: list[tuple[int, int]], purpose: str, refresh: bool, fps: float = 30.0) -> dict:
    from encoders import EncoderError, choose

    out = []
    for w, h in sizes:
        try:
            _rung, _spec, decision, _i = choose(w, h, fps, purpose, refresh=refresh)
            out.append({"size": f"{w}x{h}", "ok": True, "decision": decision})
        except EncoderError as e:
            out.append({"size": f"{w}x{h}", "ok": False, "error": str(e)})
    return {"purpose": purpose, "fps": fps, "sizes": out}


def _short(r: dict) -> str:
    """One short phrase for a rejected rung: the FFmpeg log line if there is one, else the reason."""
    reason = r["reason"]
    if "last error log:" in reason:
        reason = reason.split("last error log:")[-1].split("[")[0].strip() or reason
    m = re.search(r"\[([^\[\]]+)\]\s*$", reason)
    if m and r["stage"] != "limits":
        reason = m[1].split("; ")[-1]
    reason = re.sub(r"^known limit: ", "", reason)
    reason = re.sub(r"'avcodec_open2\(.*\)'", "", reason)
    return f"{r['rung']} ({r['stage']}): {reason[:70]}"


def _table(doc: dict):
    from rich.table import Table

    t = Table(title=f"Encoders ({doc['purpose']}, proven by an encode/decode round trip)")
    for col in ("size", "encoder", "pix_fmt", "coded", "pad / scale", "PSNR dB", "rejected (why)"):
        t.add_column(col, overflow="fold")
    for row in doc["sizes"]:
        if not row["ok"]:
            t.add_row(row["size"], "[red]none[/red]", "", "", "", "", row["error"])
            continue
        d = row["decision"]
        fix = (f"scaled to {d['scale']['width']}x{d['scale']['height']}" if d["scale"] else
               (f"pad +{d['pad'][0]}x+{d['pad'][1]}" if any(d["pad"]) else "-"))
        rej = "\n".join(_short(r) for r in d["rejected"]) or "-"
        t.add_row(row["size"], d["rung"] + (" (cached)" if d["from_cache"] else ""), d["pix_fmt"],
                  f"{d['coded_width']}x{d['coded_height']}", fix, f"{d['psnr']:.1f}", rej)
    return t


def run(args) -> int:
    sizes = util.parse_sizes(args.sizes, (1, 1), scale=False) if args.sizes else DEFAULT_SIZES
    doc = report(sizes, args.purpose, args.refresh, args.fps)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        console.print(_table(doc))
    return 0 if all(r["ok"] for r in doc["sizes"]) else 1


def register(sub) -> None:
    p = sub.add_parser("encoders", help="probe the encoder ladder per screen size",
                       description="Walk the encoder ladder for each size: hardware, software, last rungs. "
                       "Each choice is proven by an encode/decode round trip and cached per FFmpeg build.")
    p.add_argument("--sizes", help="comma-separated WIDTHxHEIGHT list (default: 16 common sizes, 640x480..8K)")
    p.add_argument("--purpose", choices=("record", "stream"), default="record")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate the level is chosen for (default 30)")
    p.add_argument("--refresh", action="store_true", help="ignore the cache and probe again")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)
