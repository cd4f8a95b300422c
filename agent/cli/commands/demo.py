"""``dw demo``: the agent on the built-in virtual desktop with the best bundled policy, recorded."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agent.cli.util import (
    VIRTUAL_MIN,
    add_deprecated,
    add_human_like,
    add_look_arguments,
    check_look,
    console,
    default_scale,
    parse_sizes,
    parse_virtual_tasks,
    print_json,
)
from agent.errors import UserError

DEFAULT_SIZES = "640x480,1920x1080,5120x2880@2"
DEMO_SEED = 20_000  # demos run on seeds no training or evaluation uses


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the agent on the virtual desktop's tasks, record it, print a success table")
    p.add_argument("--tasks", default=None,
                   help="task name, comma list, 'classic' or 'all' (default: all; with a bundled checkpoint chosen "
                        "by default, the families and look it was measured on: classic)")
    add_deprecated(p, "--task", "--tasks", dest="tasks")
    p.add_argument("--policy", default=None, help="policy name or checkpoint folder (default: the best bundled)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per task and size")
    p.add_argument("--sizes", default=DEFAULT_SIZES, metavar="WxH[@scale],...", help="screen sizes, comma list")
    add_deprecated(p, "--size", "--sizes", dest="sizes")
    p.add_argument("--out", default=None, help="where sessions go (default runs/demo-TIMESTAMP)")
    p.add_argument("--max-steps", type=int, default=80, help="step limit per episode")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="first episode seed")
    p.add_argument("--no-record", action="store_true", help="do not record sessions")
    add_human_like(p, default=False, what="the scripted expert")
    add_look_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from agent.desktops.virtual import VirtualDesktop
    from agent.loop import Agent
    from agent.sessions.format import SessionRecorder
    from policies import PolicyError, load_policy
    from policies.registry import best_bundled_policy

    if args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    policy_name = args.policy or best_bundled_policy()
    if args.policy is None and policy_name != "scripted" and args.tasks is None and not (args.theme or args.font):
        # a bundled checkpoint is shown on the families and look its recorded success was measured on
        args.tasks, args.theme, args.font = "classic", "classic", "default"
    tasks = parse_virtual_tasks(args.tasks or "all")
    sizes = parse_sizes(args.sizes, VIRTUAL_MIN)
    theme, font = check_look(args)
    try:
        policy = load_policy(policy_name, seed=args.seed)
    except PolicyError as e:
        raise UserError(str(e)) from None
    out = None if args.no_record else Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    results = []
    total = len(tasks) * len(sizes) * args.episodes
    with Progress(console=console(), transient=True, disable=args.json) as progress:
        bar = progress.add_task("demo", total=total)
        for w, h, scale in sizes:
            scale = scale or default_scale(w, h)
            for task in tasks:
                row = {"task": task, "size": f"{w}x{h}", "scale": scale, "episodes": 0, "successes": 0,
                       "steps": [], "sessions": []}
                for ep in range(args.episodes):
                    seed = args.seed + ep
                    desktop = VirtualDesktop(task, seed=seed, size=(w, h), scale=scale, human_like=args.human_like,
                                             theme=theme, font=font)
                    recorder = None
                    if out is not None:
                        sdir = out / task / f"{w}x{h}@{scale:g}-seed{seed}"
                        recorder = SessionRecorder(sdir, desktop.screen, desktop.info().get("fps", 10.0),
                                                   instruction=desktop.instruction, policy=policy_name,
                                                   desktop=desktop.info())
                        row["sessions"].append(str(sdir))
                    progress.update(bar, description=f"{task} {w}x{h}")
                    res = Agent(desktop, policy, recorder=recorder, max_steps=args.max_steps).run()
                    desktop.close()
                    if res.reason.startswith("recording-error"):  # a full disk: the next episode would fail too
                        raise UserError(f"{res.reason.removeprefix('recording-error: ')}; {sdir} is closed and "
                                        f"readable up to the failure; no further episodes were run")
                    row["episodes"] += 1
                    row["successes"] += int(bool(res.success))
                    row["steps"].append(res.steps)
                    progress.advance(bar)
                row["success_rate"] = row["successes"] / row["episodes"]
                row["mean_steps"] = sum(row["steps"]) / len(row["steps"])
                del row["steps"]
                results.append(row)
    overall = sum(r["successes"] for r in results) / max(1, sum(r["episodes"] for r in results))
    doc = {"policy": policy_name, "out": str(out) if out else None, "success_rate": overall, "results": results}
    if args.json:
        print_json(doc)
        return 0
    from rich.table import Table

    table = Table(title=f"dw demo — policy {policy_name}")
    size_keys = [f"{w}x{h}" for w, h, _ in sizes]
    table.add_column("task")
    for k in size_keys:
        table.add_column(k, justify="right")
    for task in tasks:
        cells = []
        for k in size_keys:
            r = next(r for r in results if r["task"] == task and r["size"] == k)
            cells.append(f"{r['success_rate']:.0%} ({r['successes']}/{r['episodes']})")
        table.add_row(task, *cells)
    c = console()
    c.print(table)
    c.print(f"overall success {overall:.1%}" + (f"; sessions in {out}" if out else ""))
    if args.policy is None and policy_name == "scripted":
        from policies.registry import SUCCESS_BAR, bundled_success

        measured = {n: bundled_success(n) for n in ("pixel-small", "pixel-tiny")}
        measured = {n: v for n, v in measured.items() if v is not None}
        if measured:
            shown = ", ".join(f"{n} {v:.0%}" for n, v in measured.items())
            c.print(f"(the scripted expert ran: the bundled trained checkpoints measure {shown} at their worst size, "
                    f"below the {SUCCESS_BAR:.0%} bar; try them with --policy pixel-small)")
    return 0
