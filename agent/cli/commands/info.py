"""``dw info SESSION``: what a session holds, and any damage found."""

from __future__ import annotations

import argparse
from collections import Counter

from agent.cli.util import console, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a recorded session: geometry, duration, frames, events, encoder, damage")
    p.add_argument("session", metavar="SESSION")
    p.add_argument("--verify", action="store_true",
                   help="decode every frame (slower) instead of counting packets, and check each video "
                        "segment's SHA-256 against the one written at close (exit 1 if one differs)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)


def conductor_summary(events) -> dict | None:
    """A workflow run's steps from its conductor events (None when the session has none)."""
    evs = [e.raw for e in events if e.source == "conductor"]
    if not evs:
        return None
    steps = [{k: ev.get(k) for k in ("step", "name", "attempt", "outcome", "detail", "seconds")}
             | {"t": ev.get("t"), "instruction": next((s.get("instruction") for s in evs
                                                        if s.get("event") == "step_start"
                                                        and s.get("step") == ev.get("step")
                                                        and s.get("attempt") == ev.get("attempt")), None)}
             for ev in evs if ev.get("event") in ("step_end", "step_broken")]
    end = next((ev for ev in reversed(evs) if ev.get("event") == "workflow_end"), {})
    return {"events": len(evs), "decisions": sum(1 for ev in evs if ev.get("event") == "decision"),
            "conductor": next((ev.get("conductor") for ev in evs if ev.get("conductor")), None),
            "steps": steps, "success": end.get("success"), "reason": end.get("reason")}


def session_info(path: str, verify: bool = False) -> dict:
    from agent.sessions.format import open_session

    s = open_session(path)
    checksums = None
    if verify:
        checksums = s.verify_checksums()
        counted = 0
        last_t = None
        for f in s.frames():
            counted += 1
            last_t = f.t
    else:
        counted = s.count_frames()
        last_t = None
    recorded = s.meta.get("frames")
    if recorded is not None and recorded != counted:
        s.damage.append(f"session.json says {recorded} frames, the video holds {counted}")
    beyond = [e for e in s.events if e.frame >= counted]
    if beyond:
        s.damage.append(f"{len(beyond)} events refer to frames past the last readable one")
    enc = s.meta.get("encoder") or {}  # an object: checked on reading
    rejected = enc.get("rejected")
    stop = [e.raw for e in s.events if e.source == "system" and e.raw.get("event") == "stop"]
    return {
        "path": str(s.path),
        "schema": s.meta.get("schema"),
        "created": s.meta.get("created"),
        "screen": s.screen.to_json(),
        "fps": s.fps,
        "duration": s.meta.get("duration", round(last_t, 3) if last_t is not None else None),
        "frames": counted,
        "frames_recorded": recorded,
        "events": len(s.events),
        "events_by_source": dict(sorted(Counter(e.source for e in s.events).items())),
        "actions_by_type": dict(sorted(Counter(e.action.type for e in s.events if e.action).items())),
        "instruction": s.instruction,
        "policy": s.meta.get("policy"),
        "desktop": s.desktop,
        "encoder": {k: enc.get(k) for k in ("codec", "pix_fmt", "coded_width", "coded_height", "pad", "scale", "psnr")
                    if k in enc} | {"rejected": len(rejected) if isinstance(rejected, list) else 0},
        "closed": bool(s.meta.get("closed")),
        "end_reason": s.meta.get("end_reason") or (stop[-1].get("reason") if stop else None),
        "success": s.meta.get("success"),
        "damage": s.damage,
    } | ({"conductor": cs} if (cs := conductor_summary(s.events)) else {}) | ({"checksums": checksums} if checksums is not None else {})


def run(args: argparse.Namespace) -> int:
    info = session_info(args.session, args.verify)
    status = 1 if any(v in ("mismatch", "missing") for v in (info.get("checksums") or {}).values()) else 0
    if args.json:
        print_json(info)
        return status
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(info["path"]), show_header=False)
    sc = info["screen"]
    rows = [
        ("screen", f"{sc['width']}x{sc['height']} @ scale {sc['scale']} (origin {sc['left']},{sc['top']})"),
        ("fps / duration", f"{info['fps']} / {info['duration']} s"),
        ("frames", f"{info['frames']} readable (session.json: {info['frames_recorded']})"),
        ("events", f"{info['events']} {info['events_by_source']}"),
        ("actions", str(info["actions_by_type"])),
        ("instruction", info["instruction"] or "-"),
        ("policy / desktop", f"{info['policy'] or '-'} / {info['desktop'].get('kind', '-')}"),
        ("encoder", str(info["encoder"])),
        ("closed / reason", f"{info['closed']} / {info['end_reason']}"),
        ("damage", "; ".join(info["damage"]) or "none"),
    ]
    if "conductor" in info:
        c = info["conductor"]
        rows.append(("workflow", f"{c['conductor']}: {'succeeded' if c['success'] else 'failed'} ({c['reason']}); "
                                 f"{c['decisions']} decisions"))
        for st in c["steps"]:
            label = f"step {st['step']}" if st["step"] is not None else "instruction"
            rows.append((f"  {label} #{st['attempt']}",
                         f"{st['outcome']} at {st['t']} s: {st['instruction'] or '-'} ({st['detail'] or '-'})"))
    if "checksums" in info:
        rows.append(("checksums", ", ".join(f"{k} {v}" for k, v in info["checksums"].items())))
    for k, v in rows:  # escaped: an instruction or a damage line may hold [brackets]
        t.add_row(k, escape(v))
    console().print(t)
    return status
