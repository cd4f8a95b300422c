"""``dw run``: drive the live desktop with a policy, optionally recording the session.

The desktop is built by :func:`make_desktop` (the hook where ``--desktop ws://...`` will plug
in a remote desktop).
"""

from __future__ import annotations

import json
import os
import sys
import time

from agent.cli.util import DEFAULT_FPS, NO_EFFECT, UNCAPPED_RECORD_FPS
from agent.conductor.cli import add_workflow_arguments
from agent.errors import UserError


def _region(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or not (0 <= vals[0] < vals[2] <= 1 and 0 <= vals[1] < vals[3] <= 1):
        raise UserError(f"--region {text!r}: expected x0,y0,x1,y1 normalised, with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return vals  # type: ignore[return-value]


def _positive(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise UserError(f"{name} must be positive, got {value:g}")


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a policy on the live desktop (mss capture, pyautogui input)",
                              description="Run a policy on the live desktop. The run ends when the policy "
                                          "says it is done (its `done` action; see --keep-running). Stop it "
                                          "sooner with the stop hotkey (default ctrl+alt+shift+q), Ctrl+C, or "
                                          "by moving the pointer into a screen corner.")
    p.add_argument("--policy", default=None,
                   help="policy name or checkpoint folder (default: the best bundled trained policy; "
                        "'random' must be named explicitly)")
    p.add_argument("--instruction", default="", help="the task's instruction text")
    p.add_argument("--monitor", type=int, default=1, help="mss monitor index (0 = all monitors; default 1)")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS,
                   help=f"capture rate cap (default {DEFAULT_FPS:g}); 0: no cap, each frame as soon as the policy "
                        "is ready and, on a still X11 screen, the moment something is drawn (the lowest latency; "
                        "the policy's full rate on a busy screen)")
    p.add_argument("--dry-run", action="store_true", help="decide and log actions but send no input")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (frames acted on)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop this many seconds after the command started: loading the policy counts "
                        "(with --workflow: per row, from the row's start)")
    p.add_argument("--keep-running", action="store_true",
                   help="do not end the run when the policy emits `done` (it is logged, and recorded as a "
                        "'done_ignored' event); stop it with the hotkey, Ctrl+C or a limit")
    p.add_argument("--no-effect", type=int, default=NO_EFFECT, metavar="N",
                   help=f"stop (reason no-effect) once the policy has applied the same actions N times in a row "
                        f"with nothing drawn on screen in between: a stuck worker (live X11; off under --dry-run; "
                        f"0: never; default {NO_EFFECT})")
    p.add_argument("--record", metavar="DIR", default=None, help="record the session into DIR")
    p.add_argument("--rate", type=float, default=20.0, help="max actions per second (default 20)")
    p.add_argument("--region", default=None, help="allowed pointer region x0,y0,x1,y1 (normalised)")
    p.add_argument("--confirm", nargs="?", const="all", default=None, metavar="CLASSES",
                   help="ask on the terminal before these action classes, comma list such as 'key,type' "
                        "(alone: every action but moves); refused when stdin is not a TTY")
    p.add_argument("--stop-hotkey", default="ctrl+alt+shift+q", help="global stop hotkey ('' turns it off)")
    p.add_argument("--deadman", type=float, default=5.0, metavar="S",
                   help="stop when no frame arrives for S seconds (default 5)")
    p.add_argument("--no-failsafe", action="store_true", help="turn off pyautogui's corner failsafe (not advised)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.add_argument("--desktop", default=None, metavar="ws[s]://HOST:PORT",
                   help="run against a desktop served by `dw serve` instead of this screen "
                        "(with --workflow, 'virtual' opens the workflow's virtual scene)")
    p.add_argument("--token", default=os.environ.get("DW_TOKEN"),
                   help="the served desktop's controller token (default: $DW_TOKEN)")
    add_tls_ca(p)
    add_workflow_arguments(p, run=True)
    p.set_defaults(func=cmd_run)


def add_tls_ca(p) -> None:
    """``--tls-ca FILE``: the certificate (or CA bundle) a ``wss://`` desktop is trusted by."""
    p.add_argument("--tls-ca", default=None, metavar="PEM",
                   help="with --desktop wss://...: trust the server's certificate by this CA or certificate file "
                        "(PEM; e.g. a `dw serve --tls-cert` self-signed one), besides the system's CAs")


def _remote_ssl(args):
    """The ssl.SSLContext for ``--desktop wss://...`` with ``--tls-ca`` (None: the system's CAs)."""
    ca = getattr(args, "tls_ca", None)
    if ca is None:
        return None
    import ssl

    from agent.stream.tls import client_context

    try:
        return client_context(cafile=ca)
    except FileNotFoundError:
        raise UserError(f"--tls-ca {ca}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as e:
        raise UserError(f"--tls-ca {ca}: not a PEM certificate file ({e})") from None


def make_desktop(args):
    """Build the Desktop for ``dw run`` from its arguments (the live screen today).

    ``--desktop ws://...`` or ``wss://...`` selects a remote desktop (``--tls-ca``: the certificate a
    ``wss://`` one is trusted by).
    """
    from agent.desktops import DesktopError

    if getattr(args, "tls_ca", None) and not (getattr(args, "desktop", None) or "").startswith("wss://"):
        raise UserError("--tls-ca applies to a TLS desktop: --desktop wss://HOST:PORT (`dw serve --tls-cert`)")
    if getattr(args, "desktop", None) == "virtual":
        raise UserError("--desktop virtual opens a workflow's virtual scene: give --workflow FILE")
    if getattr(args, "desktop", None):
        from agent.desktops.remote import RemoteDesktop

        if not args.desktop.startswith(("ws://", "wss://")):
            raise UserError(f"--desktop {args.desktop!r}: expected ws://HOST:PORT or wss://HOST:PORT "
                            "(a `dw serve` address)")
        if not args.token:
            raise UserError("--desktop needs --token (or $DW_TOKEN): the controller token `dw serve` printed")
        context = _remote_ssl(args)
        try:
            return RemoteDesktop(args.desktop, args.token, ssl=context)
        except DesktopError as e:
            raise UserError(str(e)) from None
    from agent.desktops.executor import terminal_confirm
    from agent.desktops.live import LiveDesktop

    if sys.platform == "linux" and not os.environ.get("DISPLAY"):
        raise UserError("no display: DISPLAY is not set (the live desktop needs an X11 session; Wayland alone is not supported)")
    if not args.fps >= 0:
        raise UserError(f"--fps must be 0 (no cap) or positive, got {args.fps:g}")
    _positive("--rate", args.rate)
    _positive("--deadman", args.deadman)
    try:
        return LiveDesktop(
            monitor=args.monitor,
            fps=args.fps or None,
            dry_run=args.dry_run,
            instruction=args.instruction,
            region=_region(args.region) if args.region else None,
            max_actions_per_second=args.rate,
            confirm=terminal_confirm if args.confirm else None,
            confirm_when=_confirm_rule(args.confirm),
            failsafe=not args.no_failsafe,
            stop_hotkey=args.stop_hotkey or None,
            deadman_seconds=args.deadman,
        )
    except (DesktopError, ValueError) as e:
        raise UserError(str(e)) from None


def _confirm_rule(spec: str | None):
    """``--confirm`` classes → the executor's ``confirm_when`` rule."""
    from agent.desktops.executor import needs_confirmation_default
    from policies.actions import ACTION_TYPES

    if spec is None or spec == "all":
        return needs_confirmation_default
    classes = {c.strip() for c in spec.split(",") if c.strip()}
    unknown = sorted(classes - set(ACTION_TYPES))
    if unknown or not classes:
        raise UserError(f"--confirm: unknown action class {unknown[0] if unknown else spec!r}; "
                        f"choose from {', '.join(ACTION_TYPES)} or 'all'")
    return lambda action: action.type in classes


def cmd_run(args) -> int:
    started = time.monotonic()  # --max-seconds counts from here: loading the policy is part of the run's time
    from agent.desktops.safety import stop_on_signals
    from agent.loop import Agent
    from agent.sessions.format import SessionRecorder
    from agent.stats import percentiles
    from policies import PolicyError, load_policy

    if args.max_steps is not None and args.max_steps < 0:
        raise UserError("--max-steps must be >= 0")
    _positive("--max-seconds", args.max_seconds)
    if args.no_effect != 0 and args.no_effect < 2:
        raise UserError(f"--no-effect must be 0 (never) or at least 2, got {args.no_effect}")
    if args.policy is None:
        from policies.registry import best_bundled_policy

        try:
            args.policy = best_bundled_policy(trained_only=True)
        except PolicyError as e:
            raise UserError(str(e)) from None
    if args.workflow or args.rows:  # steps from a workflow file, one run per row (agent.conductor)
        from agent.conductor.cli import run_workflow

        return run_workflow(args, make_desktop)
    desktop = make_desktop(args)  # first: no display or no server is the first thing a user should hear
    try:
        try:
            policy = load_policy(args.policy, seed=args.seed)
        except PolicyError as e:
            raise UserError(str(e)) from None
        recorder = None
        if args.record:
            # cursor0: where the pointer starts (training's first cursor, as demos record it)
            c0 = desktop.cursor
            extra = {"cursor0": [min(1.0, max(0.0, float(v))) for v in c0]} if c0 is not None else None
            # uncapped: a nominal rate for the encoder's settings (frames keep their real times, pts in ms)
            recorder = SessionRecorder(args.record, desktop.screen, args.fps or UNCAPPED_RECORD_FPS,
                                       instruction=args.instruction,
                                       policy=getattr(policy, "name", args.policy), desktop=desktop.info(),
                                       extra=extra)
        left = None if args.max_seconds is None else max(0.0, args.max_seconds - (time.monotonic() - started))
        agent = Agent(desktop, policy, recorder=recorder, max_steps=args.max_steps, max_seconds=left,
                      stop_on_done=not args.keep_running,
                      max_no_effect=None if args.dry_run or not args.no_effect else args.no_effect)
        if hasattr(desktop, "on_stop"):
            desktop.on_stop = agent.stop
        if not args.json:
            hk = getattr(desktop, "stop_hotkey", None)
            print(f"dw run: {getattr(policy, 'name', args.policy)} on {desktop.info().get('kind')} "
                  f"{desktop.screen.width}x{desktop.screen.height}"
                  f"{' (dry run)' if args.dry_run else ''}; stop with {hk or 'Ctrl+C'}", file=sys.stderr)
        with stop_on_signals(agent.stop):
            res = agent.run()
    finally:
        desktop.close()
    out = res.to_json()
    out["timings"] = {k: percentiles(v) for k, v in res.timings_ns.items()}
    if hasattr(desktop, "stats"):
        out["desktop"] = desktop.stats()
    if args.record:
        out["session"] = str(args.record)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"dw run: stopped: {res.reason}; {res.steps} steps, {res.actions} actions, {res.refused} refused, "
              f"{res.duration:.1f} s" + (f"; {res.done_ignored} done ignored (--keep-running)" if res.done_ignored else "")
              + (f"; session in {args.record}" if args.record else ""), file=sys.stderr)
        for err in res.errors[-3:]:
            print(f"  {err}", file=sys.stderr)
    return 1 if res.reason.startswith(("desktop-error", "recording-error")) else 0
