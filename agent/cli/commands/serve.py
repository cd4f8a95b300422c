"""``dw serve``: serve one desktop over websockets — remote agents, remote policies, a browser viewer.

The wire protocol is ``docs/protocol.md``; the server is :mod:`agent.stream.server`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from agent.cli.util import add_deprecated
from agent.errors import UserError

DEFAULT_PORT = 8765


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a desktop over websockets (remote agents, browser viewer at /)",
                       description="Serve the live screen or a virtual-desktop task over websockets. Clients "
                                   "need a token: the controller token may act, the viewer token only watches. "
                                   "Open the printed http:// address in a browser to watch.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--token", default=None,
                   help="controller token (visible in ps: prefer --token-file or $DW_TOKEN; default: a new random "
                        "one, printed)")
    p.add_argument("--token-file", default=None, metavar="PATH", help="read the controller token from this file")
    p.add_argument("--viewer-token", default=None,
                   help="viewer token (prefer --viewer-token-file or $DW_VIEWER_TOKEN; default: a new random one, "
                        "printed)")
    p.add_argument("--viewer-token-file", default=None, metavar="PATH", help="read the viewer token from this file")
    p.add_argument("--desktop", choices=("screen", "virtual"), default="virtual",
                   help="what to serve: the live screen or a virtual-desktop task (default virtual)")
    p.add_argument("--tasks", default="click-button", metavar="TASK",
                   help="the virtual-desktop task served (one; default click-button)")
    add_deprecated(p, "--task", "--tasks", dest="tasks")
    p.add_argument("--seed", type=int, default=0, help="virtual task seed")
    p.add_argument("--screen", default="1280x720", metavar="WxH[@scale]",
                   help="the virtual desktop's screen size (default 1280x720)")
    add_deprecated(p, "--size", "--screen", dest="screen")
    p.add_argument("--monitor", type=int, default=1, help="mss monitor index for --desktop screen")
    p.add_argument("--fps", type=float, default=30.0, help="capture rate (default 30)")
    p.add_argument("--policy", default=None,
                   help="also run this policy on the served desktop (viewers watch it; a controller may pause "
                        "it, take over and change its instruction)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed besides same-origin, e.g. https://example.org (repeatable)")
    p.add_argument("--no-video", action="store_true", help="serve JPEG pictures only")
    t = p.add_argument_group("TLS and audit")
    t.add_argument("--tls-cert", default=None, metavar="PEM", help="serve wss:// and https:// with this certificate")
    t.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's private key")
    t.add_argument("--tls-self-signed", action="store_true",
                   help="serve wss:// and https:// with a new self-signed certificate (a LAN; the browser asks "
                        "once; the fingerprint is printed); needs the openssl command")
    t.add_argument("--audit-log", default=None, metavar="PATH",
                   help="append one JSON line per connection, refused handshake, close and disconnect (with "
                        "action counts) to PATH (created owner-only)")
    from agent.stream import server as S

    g = p.add_argument_group("limits (docs/protocol.md, Limits)")
    g.add_argument("--send-timeout", type=float, default=S.SEND_TIMEOUT, metavar="S",
                   help=f"drop a client that reads nothing for S seconds (default {S.SEND_TIMEOUT:g})")
    g.add_argument("--idle-timeout", type=float, default=S.IDLE_TIMEOUT, metavar="S",
                   help=f"close a connection with no traffic either way for S seconds; 0 = never "
                        f"(default {S.IDLE_TIMEOUT:g})")
    g.add_argument("--max-connections", type=int, default=S.MAX_CONNECTIONS, metavar="N",
                   help=f"websockets at once (default {S.MAX_CONNECTIONS})")
    g.add_argument("--max-connections-per-address", type=int, default=S.MAX_CONNECTIONS_PER_ADDRESS, metavar="N",
                   help=f"websockets at once from one address (default {S.MAX_CONNECTIONS_PER_ADDRESS})")
    g.add_argument("--action-rate", type=float, default=S.ACTION_RATE, metavar="N",
                   help=f"actions per second from remote controllers together; 0 = no limit (default {S.ACTION_RATE:g})")
    g.add_argument("--max-wait", type=float, default=S.MAX_WAIT, metavar="S",
                   help=f"the longest wait action a remote controller may send (default {S.MAX_WAIT:g})")
    g.add_argument("--control-queue-bytes", type=int, default=S.CONTROL_QUEUE_BYTES, metavar="B",
                   help=f"replies waiting for one client before it is closed (default {S.CONTROL_QUEUE_BYTES})")
    g.add_argument("--frame-queue-bytes", type=int, default=S.FRAME_QUEUE_BYTES, metavar="B",
                   help=f"frames waiting for one client before it drops some (default {S.FRAME_QUEUE_BYTES})")
    p.set_defaults(func=cmd_serve)


def _secret(value: str | None, path: str | None, env: str, flag: str) -> tuple[str | None, str]:
    """A token from argv, a file or the environment (in that order); and where it came from."""
    if value is not None and path is not None:
        raise UserError(f"give {flag} or {flag}-file, not both")
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise UserError(f"{flag}-file {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise UserError(f"{flag}-file {path}: not UTF-8 text") from None
        if not token or "\n" in token:
            raise UserError(f"{flag}-file {path}: expected one line with the token")
        return token, f"from {path}"
    if value is not None:
        return value, "from the command line"
    if os.environ.get(env):
        return os.environ[env].strip(), f"from ${env}"
    return None, ""


def _tls(args):
    """(ssl context or None, a line describing it)."""
    from agent.stream.tls import TLSError, self_signed_context, server_context

    if args.tls_self_signed and (args.tls_cert or args.tls_key):
        raise UserError("give --tls-self-signed or --tls-cert/--tls-key, not both")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UserError("--tls-cert and --tls-key go together")
    try:
        if args.tls_cert:
            return server_context(args.tls_cert, args.tls_key), f"certificate {args.tls_cert}"
        if args.tls_self_signed:
            ctx, _pem, fp = self_signed_context(args.host)
            return ctx, f"self-signed certificate, SHA-256 {fp}"
    except TLSError as e:
        raise UserError(str(e)) from None
    return None, ""


def _audit(args):
    if not args.audit_log:
        return None
    from agent.stream.audit import AuditLog

    try:
        return AuditLog(args.audit_log)
    except OSError as e:
        raise UserError(f"--audit-log {args.audit_log}: {e.strerror or e}") from None


def _desktop(args):
    from agent.cli.util import default_scale, parse_size
    from agent.desktops import DesktopError

    if args.desktop == "virtual":
        from agent.desktops.virtual import VirtualDesktop, task_names

        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        if len(tasks) > 1:
            raise UserError(f"--tasks {args.tasks!r}: dw serve serves one virtual-desktop task")
        task = tasks[0] if tasks else args.tasks
        if task not in task_names():
            raise UserError(f"unknown task {task!r}; choose one of {', '.join(task_names())}")
        w, h, scale = parse_size(args.screen)
        try:
            return VirtualDesktop(task, seed=args.seed, size=(w, h), scale=scale or default_scale(w, h),
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
    token, token_from = _secret(args.token, args.token_file, "DW_TOKEN", "--token")
    viewer_token, viewer_from = _secret(args.viewer_token, args.viewer_token_file, "DW_VIEWER_TOKEN", "--viewer-token")
    if token is not None and len(token) < 8:
        raise UserError(f"the controller token ({token_from}) must be at least 8 characters")
    if viewer_token is not None and len(viewer_token) < 8:
        raise UserError(f"the viewer token ({viewer_from}) must be at least 8 characters")
    for name in ("send_timeout", "max_wait", "idle_timeout", "action_rate"):
        v = getattr(args, name)
        if not (0 <= v < float("inf")) or (name == "send_timeout" and v == 0):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number >= 0"
                            f"{' and above 0' if name == 'send_timeout' else ''}, got {v:g}")
    for name in ("max_connections", "max_connections_per_address", "control_queue_bytes", "frame_queue_bytes"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    ssl_context, tls_note = _tls(args)
    policy = None
    if args.policy:
        from policies import PolicyError, load_policy

        try:
            policy = load_policy(args.policy, seed=args.seed)
        except PolicyError as e:
            raise UserError(str(e)) from None
    desktop = _desktop(args)
    try:
        server = StreamServer(desktop, host=args.host, port=args.port, token=token,
                              viewer_token=viewer_token, fps=args.fps, allow_origins=args.allow_origin,
                              video=not args.no_video, send_timeout=args.send_timeout,
                              idle_timeout=args.idle_timeout or None, max_connections=args.max_connections,
                              max_connections_per_address=args.max_connections_per_address,
                              action_rate=args.action_rate or None, max_wait=args.max_wait,
                              control_queue_bytes=args.control_queue_bytes,
                              frame_queue_bytes=args.frame_queue_bytes, ssl_context=ssl_context,
                              audit=_audit(args))
    except ValueError as e:
        raise UserError(str(e)) from None
    control = None
    if policy is not None:
        from agent.stream.steering import PolicyControl

        control = PolicyControl(getattr(policy, "name", args.policy))
        server.attach_policy(control)

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
        if tls_note:
            print(f"  tls         {tls_note}", file=sys.stderr)
        # a token the user supplied through a file or the environment is not echoed into logs
        ctl = server.token if token_from in ("", "from the command line") else f"({token_from})"
        view = server.viewer_token if viewer_from in ("", "from the command line") else f"({viewer_from})"
        print(f"  controller  token {ctl}", file=sys.stderr)
        print(f"  viewer      token {view}", file=sys.stderr)
        print(f"  watch       {server.http_url}#token={view if view == server.viewer_token else '<viewer token>'}",
              file=sys.stderr)
        print(f"  take over   {server.http_url}#token={ctl if ctl == server.token else '<controller token>'}",
              file=sys.stderr)
        print(f"  remote run  dw run --desktop {server.url.rsplit('/ws', 1)[0]} "
              f"--token {ctl if ctl == server.token else '<controller token>'} --policy scripted", file=sys.stderr)
        sys.stderr.flush()
        runner = None
        if policy is not None:
            runner = threading.Thread(target=_run_policy, args=(server, policy, control), name="dw-serve-policy",
                                      daemon=True)
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


def _run_policy(server, policy, control=None) -> None:
    """Runs ``policy`` on the served desktop until its run ends; with a ``control``
    (:class:`agent.stream.steering.PolicyControl`) controllers may pause it and change its instruction."""
    from agent.loop import Agent
    from agent.stream.local import ServedDesktop
    from agent.stream.steering import SteeredPolicy

    desk = ServedDesktop(server)
    reason = "stopped"
    try:
        res = Agent(desk, SteeredPolicy(policy, control) if control is not None else policy).run()
        reason = res.reason
        print(f"dw serve: policy {getattr(policy, 'name', '?')} stopped: {res.reason}; success={res.success}; "
              f"{res.steps} steps", file=sys.stderr)
    finally:
        if control is not None:
            control.finish(reason)
        desk.close()
