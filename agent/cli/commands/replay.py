"""``dw replay SESSION``: open-loop replay of a recorded session through a policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.util import console, print_json
from agent.errors import UserError
from agent.scaleout.backends import add_backend_arguments

TOLERANCE_PT = 8.0  # agent.sessions.replay.TOLERANCE_PT (not imported: `dw --help` stays light)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a recorded session open-loop through a policy and compare actions")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="session directory, or a folder searched for sessions (several allowed)")
    p.add_argument("--policy", default="scripted", help="policy name or checkpoint folder (default: scripted)")
    p.add_argument("--tolerance", type=float, default=TOLERANCE_PT, metavar="PT",
                   help="a pointer action agrees when its type and other fields match and its point is within "
                        f"this many logical points of the recorded one (default {TOLERANCE_PT:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_backend_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math

    from agent.scaleout.backends import replay_sessions
    from agent.sessions.format import find_sessions

    if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UserError(f"--tolerance must be a number of points >= 0, got {args.tolerance:g}")
    paths = find_sessions(args.sessions)
    report = replay_sessions(paths, args.policy, tolerance_pt=args.tolerance, seed=args.seed,
                             backend=args.backend, workers=args.workers, address=args.address,
                             task_timeout=args.task_timeout,
                             progress=f"replay {args.policy}")
    results = report.results
    arg = Path(args.sessions[0])
    single = len(args.sessions) == 1 and not (arg.is_dir() and not (arg / "session.json").exists())
    if single and "error" in results[0]:  # one session named: its failure is the command's
        raise UserError(results[0]["error"] if results[0]["error"].startswith(paths[0])
                        else f"{paths[0]}: {results[0]['error']}")
    if report.failed:
        print(f"dw replay: {report.failed} of {len(results)} sessions failed (see 'error' in the results)",
              file=sys.stderr)
    if args.json:
        print_json(results[0] if single else {"sessions": results, "throughput": report.throughput})
        return 1 if report.failed else 0
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"replay with policy {args.policy}; agreement: the same action, a pointer within "
                               f"{args.tolerance:g} pt"))
    for col in ("session", "frames", "actions", "agreement", "type acc", "click pt p50/p95", "key", "text", "damage"):
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for r in results:
        if "error" in r:
            table.add_row(escape(r["session"]), *["-"] * 7, f"[red]failed: {escape(r['error'])}[/red]")
            continue
        cd = r["click_distance_pt"]
        table.add_row(
            escape(r["session"]), str(r["frames_decoded"]), str(r["recorded_actions"]), fmt(r["agreement"]),
            fmt(r["type_accuracy"]), "-" if cd["n"] == 0 else f"{cd['p50']:.1f} / {cd['p95']:.1f}",
            fmt(r["key_exact"]), fmt(r["text_exact"]), escape("; ".join(r["damage"])) or "none",
        )
    console().print(table)
    tp = report.throughput
    if not single:
        print(f"{tp['sessions']} of {len(results)} sessions replayed, {tp['frames']} frames, in {tp['wall_seconds']:.2f} s "
              f"on {tp['workers']} {tp['backend']} worker(s): {tp['sessions_per_s']:.2f} sessions/s, "
              f"{tp['frames_per_s']:.1f} frames/s")
    return 1 if report.failed else 0
