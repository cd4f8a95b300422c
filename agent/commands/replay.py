"""``dw replay SESSION``: open-loop replay of a recorded session through a policy."""

from __future__ import annotations

import argparse

from agent.cliutil import console, print_json
from agent.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a recorded session open-loop through a policy and compare actions")
    p.add_argument("sessions", nargs="+", metavar="SESSION", help="session directory (several allowed)")
    p.add_argument("--policy", default="scripted", help="policy name or checkpoint folder (default: scripted)")
    p.add_argument("--tolerance-px", type=float, default=10.0, help="click distance counted as agreement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.replay import replay_session
    from agent.session import open_session
    from policies import PolicyError, load_policy

    try:
        policy = load_policy(args.policy, seed=args.seed)
    except PolicyError as e:
        raise UserError(str(e)) from None
    results = []
    for path in args.sessions:
        session = open_session(path)
        try:
            results.append(replay_session(session, policy, tolerance_px=args.tolerance_px))
        except ImportError as e:
            raise UserError(f"{path}: cannot rebuild its desktop: {e}") from None
    if args.json:
        print_json(results[0] if len(results) == 1 else {"sessions": results})
        return 0
    from rich.table import Table

    table = Table(title=f"replay with policy {args.policy}")
    for col in ("session", "frames", "actions", "agreement", "type acc", "click px p50/p95", "key", "text", "damage"):
        table.add_column(col)
    fmt = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
    for r in results:
        cd = r["click_distance_px"]
        table.add_row(
            r["session"], str(r["frames_decoded"]), str(r["recorded_actions"]), fmt(r["agreement"]),
            fmt(r["type_accuracy"]), "-" if cd["n"] == 0 else f"{cd['p50']:.1f} / {cd['p95']:.1f}",
            fmt(r["key_exact"]), fmt(r["text_exact"]), "; ".join(r["damage"]) or "none",
        )
    console().print(table)
    return 0
