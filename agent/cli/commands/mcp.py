"""``dw mcp``: a desktop as MCP tools for any LLM agent (stdio; streamable HTTP with ``--http``).

The server is :mod:`agent.mcp_server`; the desktop is built as ``dw run`` builds it (the live
screen with the same safety controls, or a desktop served by ``dw serve``) or as ``dw serve``
builds a virtual task.
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import sys

from agent.cli.commands.run import add_tls_ca, make_desktop
from agent.cli.util import DEFAULT_FPS, add_deprecated
from agent.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mcp", help="serve a desktop as MCP tools for LLM agents (stdio, or streamable HTTP)",
        description="Serve a desktop as Model Context Protocol tools: screenshot, click, double_click, drag, "
                    "move, scroll, type, key, wait, state, run_policy (and reset on the virtual desktop). "
                    "Coordinates are normalised to [0, 1]. Over stdio by default (an MCP client starts "
                    "`dw mcp`); with --http PORT, streamable HTTP on 127.0.0.1 where the controller token may "
                    "act and the viewer token may only watch. The live screen keeps every safety control "
                    "of `dw run`.")
    p.add_argument("--desktop", default="virtual", metavar="virtual|screen|ws://HOST:PORT",
                   help="a virtual-desktop task, the live screen, or a desktop served by `dw serve`")
    p.add_argument("--tasks", default="click-button",
                   help="virtual: comma-separated tasks; the first is served, `reset` may switch among them")
    p.add_argument("--seed", type=int, default=0, help="virtual task seed (and the policy's)")
    p.add_argument("--screen", default="1280x720", metavar="WxH[@scale]", help="the virtual desktop's screen size")
    add_deprecated(p, "--sizes", "--screen", dest="screen")
    p.add_argument("--policy", default=None,
                   help="the fast policy behind run_policy (default: the best bundled one; on the live "
                        "screen, the best trained one)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="capture rate")
    p.add_argument("--http", type=int, default=None, metavar="PORT",
                   help="serve streamable HTTP at http://127.0.0.1:PORT/mcp instead of stdio (0: a free port)")
    p.add_argument("--http-token", default=os.environ.get("DW_MCP_TOKEN"),
                   help="--http controller token (default: $DW_MCP_TOKEN or a new random one, printed)")
    p.add_argument("--http-viewer-token", default=None,
                   help="--http viewer token, watch-only (default: a new random one, printed)")
    live = p.add_argument_group("live screen and served desktops (as `dw run`)")
    live.add_argument("--token", default=os.environ.get("DW_TOKEN"),
                      help="the served desktop's controller token, for --desktop ws://... (default: $DW_TOKEN)")
    add_tls_ca(live)
    live.add_argument("--monitor", type=int, default=1, help="mss monitor index")
    live.add_argument("--dry-run", action="store_true", help="decide and log actions but send no input")
    live.add_argument("--rate", type=float, default=20.0, help="max actions per second")
    live.add_argument("--region", default=None, help="allowed pointer region x0,y0,x1,y1 (normalised)")
    live.add_argument("--confirm", nargs="?", const="all", default=None, metavar="CLASSES",
                      help="ask on the terminal before these action classes (needs --http: over stdio the "
                           "terminal is the MCP pipe)")
    live.add_argument("--stop-hotkey", default="ctrl+alt+shift+q", help="global stop hotkey ('' turns it off)")
    live.add_argument("--deadman", type=float, default=5.0, metavar="S",
                      help="stop when no frame arrives for S seconds")
    live.add_argument("--no-failsafe", action="store_true", help="turn off pyautogui's corner failsafe")
    p.set_defaults(func=cmd_mcp)


def _virtual(args):
    from agent.cli.util import VIRTUAL_MIN, default_scale, parse_size
    from agent.desktops.virtual import VirtualDesktop, task_names

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if tasks == ["all"]:
        tasks = list(task_names())
    unknown = [t for t in tasks if t not in task_names()]
    if unknown or not tasks:
        raise UserError(f"unknown task {unknown[0] if unknown else args.tasks!r}; choose from "
                        f"{', '.join(task_names())}")
    w, h, scale = parse_size(args.screen, VIRTUAL_MIN)
    if not 0 < args.fps <= 240:
        raise UserError(f"--fps must be within (0, 240], got {args.fps:g}")
    current = {"task": tasks[0], "seed": args.seed}

    def make(task: str | None = None, seed: int | None = None):
        task = task or current["task"]
        if task not in tasks:
            raise ValueError(f"task {task!r} is not served; choose from {', '.join(tasks)}")
        seed = current["seed"] + 1 if seed is None and task == current["task"] else (seed if seed is not None else 0)
        desk = VirtualDesktop(task, seed=seed, size=(w, h), scale=scale or default_scale(w, h), fps=args.fps)
        current.update(task=task, seed=seed)
        return desk

    try:
        first = VirtualDesktop(tasks[0], seed=args.seed, size=(w, h), scale=scale or default_scale(w, h),
                               fps=args.fps)
    except ValueError as e:
        raise UserError(str(e)) from None
    return first, make


def cmd_mcp(args) -> int:
    import anyio

    from agent.mcp_server import DesktopTools, serve_http, serve_stdio
    from policies import PolicyError, load_policy

    try:
        import mcp  # noqa: F401
    except ImportError:
        raise UserError("the MCP server needs the `mcp` package: pip install 'digital-worker[mcp]'") from None
    if args.http is not None and not 0 <= args.http <= 65535:
        raise UserError(f"--http must be a port within 0..65535, got {args.http}")
    for name in ("http_token", "http_viewer_token"):
        value = getattr(args, name)
        if value is not None and len(value) < 8:
            raise UserError(f"--{name.replace('_', '-')} must be at least 8 characters")
    if args.confirm and args.http is None:
        raise UserError("--confirm asks on the terminal, which over stdio is the MCP pipe: use it with --http")
    virtual = args.desktop == "virtual"
    if not virtual and args.desktop != "screen" and not args.desktop.startswith(("ws://", "wss://")):
        raise UserError(f"--desktop {args.desktop!r}: expected virtual, screen, or ws://HOST:PORT")
    if args.policy is None:
        from policies.registry import best_bundled_policy

        try:
            args.policy = best_bundled_policy(trained_only=not virtual)
        except PolicyError as e:
            raise UserError(str(e)) from None
    if virtual:
        desktop, reset = _virtual(args)
    else:
        run_args = copy.copy(args)
        run_args.desktop = None if args.desktop == "screen" else args.desktop
        run_args.instruction = ""
        desktop, reset = make_desktop(run_args), None
    tools = None
    try:
        try:
            policy = load_policy(args.policy, seed=args.seed)
        except PolicyError as e:
            raise UserError(str(e)) from None
        tools = DesktopTools(desktop, load_policy=lambda: policy, reset_desktop=reset)
        s = desktop.screen
        what = f"{desktop.info().get('kind', args.desktop)} {s.width}x{s.height}@{s.scale:g}"
        if args.http is None:
            print(f"dw mcp: {what} over stdio; run_policy: {getattr(policy, 'name', args.policy)}", file=sys.stderr)
            anyio.run(serve_stdio, tools)
        else:
            token = args.http_token or secrets.token_urlsafe(18)
            viewer = args.http_viewer_token or secrets.token_urlsafe(18)
            if token == viewer:
                raise UserError("--http-token and --http-viewer-token must differ")

            def ready(url: str) -> None:
                print(f"dw mcp: {what}; run_policy: {getattr(policy, 'name', args.policy)}\n"
                      f"  streamable HTTP  {url}\n  controller       token {token}\n"
                      f"  viewer           token {viewer}  (screenshot and state only)", file=sys.stderr)
                sys.stderr.flush()

            try:
                anyio.run(serve_http, tools, args.http, token, viewer, ready)
            except OSError as e:
                raise UserError(f"cannot listen on 127.0.0.1:{args.http}: {e.strerror or e}") from None
    finally:
        (tools.desktop if tools is not None else desktop).close()
    return 0
