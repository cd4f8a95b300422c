"""``dw record``: record a human demonstration (screen + keyboard and mouse) into a session."""

from __future__ import annotations

import json
import os
import sys
import time

from agent.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("record", help="record a human demonstration from the live screen",
                              description="Record the screen and your keyboard and mouse as a session. "
                                          "Stop with Ctrl+C, SIGTERM or the stop hotkey (default ctrl+alt+shift+q).")
    p.add_argument("--out", default=None, help="session directory (default: runs/record-<time>)")
    p.add_argument("--monitor", type=int, default=1, help="mss monitor index (0 = all monitors; default 1)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--instruction", default="", help="what the demonstration does")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--stop-hotkey", default="ctrl+alt+shift+q", help="global stop hotkey ('' turns it off)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(func=cmd_record)


def cmd_record(args) -> int:
    if sys.platform == "linux" and not os.environ.get("DISPLAY"):
        raise UserError("no display: DISPLAY is not set (recording needs an X11 session; Wayland alone is not supported)")
    if not args.fps > 0:
        raise UserError(f"--fps must be positive, got {args.fps:g}")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UserError(f"--max-seconds must be positive, got {args.max_seconds:g}")
    from agent.sessions.humanrec import record_human
    from capture.live import CaptureError

    out = args.out or os.path.join("runs", time.strftime("record-%Y%m%d-%H%M%S"))

    def ready() -> None:
        if not args.json:
            print(f"dw record: recording into {out}; stop with Ctrl+C"
                  + (f" or {args.stop_hotkey}" if args.stop_hotkey else ""), file=sys.stderr, flush=True)

    try:
        res = record_human(out, monitor=args.monitor, fps=args.fps, instruction=args.instruction,
                           stop_hotkey=args.stop_hotkey or None, max_seconds=args.max_seconds, on_ready=ready)
    except CaptureError as e:
        raise UserError(str(e)) from None
    except ValueError as e:  # a bad stop hotkey
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(res.counts.items())) or "no input"
        print(f"dw record: stopped: {res.reason}; {res.frames} frames ({res.dropped} dropped), {counts}; "
              f"session in {out}", file=sys.stderr)
    return 1 if res.reason.startswith(("capture-error", "error")) else 0
