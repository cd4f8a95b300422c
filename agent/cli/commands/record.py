"""``dw record``: record a human demonstration (screen + keyboard and mouse) into a session."""

from __future__ import annotations

import json
import os
import sys
import time

from agent.errors import UserError

READY_PREFIX = "dw record: recording into "  # the ready line on stderr starts with this (scripts wait for it)
DEFAULT_DONE_HOTKEY = "ctrl+alt+shift+d"  # = agent.sessions.humanrec's (not imported here: dw starts faster)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "record", help="record a human demonstration from the live screen",
        description="Record the screen and your keyboard and mouse as a session. Press the done hotkey "
                    f"(default {DEFAULT_DONE_HOTKEY}) when the task is finished: the demonstration ends with a "
                    "'done' action and the recording stops. Stop without 'done' with Ctrl+C, SIGTERM or the "
                    "stop hotkey (default ctrl+alt+shift+q). Once recording has started, a line starting "
                    f"'{READY_PREFIX}DIR' goes to stderr (also with --json).")
    p.add_argument("--out", default=None, help="session directory (default: runs/record-<time>)")
    p.add_argument("--monitor", type=int, default=1, help="mss monitor index (0 = all monitors; default 1)")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--instruction", default="", help="what the demonstration does")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--done-hotkey", default=DEFAULT_DONE_HOTKEY,
                   help=f"global hotkey that ends the demonstration with 'done' (default {DEFAULT_DONE_HOTKEY}; "
                        "'' turns it off); its keys are not recorded")
    p.add_argument("--stop-hotkey", default="ctrl+alt+shift+q",
                   help="global hotkey that stops without 'done' (default ctrl+alt+shift+q; '' turns it off)")
    p.add_argument("--move-hz", type=float, default=10.0,
                   help="most pointer moves recorded per second (default 10; 0 = none, clicks keep their points)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document on stdout")
    p.set_defaults(func=cmd_record)


def cmd_record(args) -> int:
    if sys.platform == "linux" and not os.environ.get("DISPLAY"):
        raise UserError("no display: DISPLAY is not set (recording needs an X11 session; Wayland alone is not supported)")
    if not args.fps > 0:
        raise UserError(f"--fps must be positive, got {args.fps:g}")
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UserError(f"--max-seconds must be positive, got {args.max_seconds:g}")
    if not args.move_hz >= 0:
        raise UserError(f"--move-hz must be 0 or more, got {args.move_hz:g}")
    from agent.sessions.humanrec import check_hotkeys, record_human
    from capture.live import CaptureError

    try:
        check_hotkeys(args.stop_hotkey or None, args.done_hotkey or None)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = args.out or os.path.join("runs", time.strftime("record-%Y%m%d-%H%M%S"))

    def ready() -> None:
        # Printed once the frames and the input listeners run: a script may start its input now.
        how = [f"done with {args.done_hotkey}"] if args.done_hotkey else []
        how.append("stop with Ctrl+C" + (f" or {args.stop_hotkey}" if args.stop_hotkey else ""))
        print(f"{READY_PREFIX}{out}; {'; '.join(how)}", file=sys.stderr, flush=True)

    try:
        res = record_human(out, monitor=args.monitor, fps=args.fps, instruction=args.instruction,
                           stop_hotkey=args.stop_hotkey or None, done_hotkey=args.done_hotkey or None,
                           max_seconds=args.max_seconds, move_hz=args.move_hz, on_ready=ready)
    except CaptureError as e:
        raise UserError(str(e)) from None
    except ValueError as e:  # a bad hotkey
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(res.counts.items())) or "no input"
        print(f"dw record: stopped: {res.reason}; {res.frames} frames ({res.dropped} dropped), {counts}; "
              f"session in {out}", file=sys.stderr)
    return 1 if res.reason.startswith(("capture-error", "error")) else 0
