"""``dw serve``: serve one desktop over websockets — remote agents, remote policies, a browser viewer.

The wire protocol is ``docs/protocol.md``; the server is :mod:`agent.stream.server`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from agent.errors import UserError

DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a desktop over websockets (remote agents, browser viewer at /)",
                       description="Serve the live screen or a virtual-desktop task over websockets. Clients "
                                   "need a token: the controller token may act, the viewer token only watches. "
                                   "Open the printed http:// address in a browser to watch.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--token", default=None, help="controller token (default: a new random one, printed)")
    p.add_argument("--viewer-token", default=None, help="viewer token (default: a new random one, printed)")
    p.add_argument("--desktop", choices=("screen", "virtual"), default="virtual",
                   help="what to serve: the live screen or a virtual-desktop task (default virtual)")
    p.add_argument("--task", default="click-button", help="virtual-desktop task (default click-button)")
    p.add_argument("--seed", type=int, default=0, help="virtual task seed")
    p.add_argument("--size", default="1280x720", help="virtual screen WxH[@scale] (default 1280x720)")
    p.add_argument("--monitor", type=int, default=1, help="mss monitor index for --desktop screen")
    p.add_argument("--fps", type=float, default=30.0, help="capture rate (default 30)")
    p.add_argument("--policy", default=None, help="also run this policy on the served desktop (viewers watch it)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed besides same-origin, e.g. https://example.org (repeatable)")
    p.add_argument("--no-video", action="store_true", help="serve JPEG pictures only")
    p.set_defaults(func=cmd_serve)


def _desktop(args):
    from agent.cli.util import default_scale, parse_size
    from agent.desktops import DesktopError

    if args.desktop == "virtual":
        from agent.desktops.virtual import VirtualDesktop, task_names

        if args.task not in task_names():
            raise UserError(f"unknown task {args.task!r}; choose one of {', '.join(task_names())}")
        w, h, scale = parse_size(args.size)
        try:
            return VirtualDesktop(args.task, seed=args.seed, size=(w, h), scale=scale or default_scale(w, h),
                                  fps=args.fps)
        except ValueError as e:
            raise UserError(str(e)) from None
    if sys.platform == "linux" and not os.environ.get("DISPLAY"):
        raise UserError("no display: DISPLAY is not set (the live desktop needs an X11 session)")
    from agent.desktops.live import LiveDesktop

    try:
        # dead-man as everywhere: a capture that fails for 5 s is an error, and the server refuses
        # actions until a frame arrives again (idle time does not count: it only runs in observe)
        return LiveDesktop(monitor=args.monitor, fps=args.fps)
    except (DesktopError, ValueError) as e:
        raise UserError(str(e)) from None


def cmd_serve(args) -> int:
    import asyncio

    from agent.stream.server import StreamServer

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be within 0..65535, got {args.port}")
    if not 0 < args.fps <= 240:
        raise UserError(f"--fps must be within (0, 240], got {args.fps:g}")
    for o in args.allow_origin:
        if not o.startswith(("http://", "https://")) or o.count("/") != 2:
            raise UserError(f"--allow-origin {o!r}: expected scheme://host[:port], e.g. https://example.org")
    if args.token is not None and len(args.token) < 8:
        raise UserError("--token must be at least 8 characters")
    if args.viewer_token is not None and len(args.viewer_token) < 8:
        raise UserError("--viewer-token must be at least 8 characters")
    policy = None
    if args.policy:
        from policies import PolicyError, load_policy

        try:
            policy = load_policy(args.policy, seed=args.seed)
        except PolicyError as e:
            raise UserError(str(e)) from None
    desktop = _desktop(args)
    try:
        server = StreamServer(desktop, host=args.host, port=args.port, token=args.token,
                              viewer_token=args.viewer_token, fps=args.fps, allow_origins=args.allow_origin,
                              video=not args.no_video)
    except ValueError as e:
        raise UserError(str(e)) from None

    async def main() -> None:
        try:
            await server.start()
        except OSError as e:
            raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
        v = server.encoder.describe() if server.encoder is not None else None
        s = desktop.screen
        print(f"dw serve: {desktop.info().get('kind', args.desktop)} {s.width}x{s.height}@{s.scale:g} at "
              f"{args.fps:g} fps; video: {v['codec'] + ' ' + str(v['codec_string']) if v else 'JPEG only'}",
              file=sys.stderr)
        print(f"  websocket   {server.url}", file=sys.stderr)
        print(f"  controller  token {server.token}", file=sys.stderr)
        print(f"  viewer      token {server.viewer_token}", file=sys.stderr)
        print(f"  watch       {server.http_url}#token={server.viewer_token}", file=sys.stderr)
        print(f"  remote run  dw run --desktop ws://{args.host}:{server.port} --token {server.token} "
              "--policy scripted", file=sys.stderr)
        sys.stderr.flush()
        runner = None
        if policy is not None:
            runner = threading.Thread(target=_run_policy, args=(server, policy), name="dw-serve-policy", daemon=True)
            runner.start()
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    finally:
        desktop.close()
    return 0


def _run_policy(server, policy) -> None:
    from agent.loop import Agent
    from agent.stream.local import ServedDesktop

    desk = ServedDesktop(server)
    try:
        res = Agent(desk, policy).run()
        print(f"dw serve: policy {getattr(policy, 'name', '?')} stopped: {res.reason}; success={res.success}; "
              f"{res.steps} steps", file=sys.stderr)
    finally:
        desk.close()
