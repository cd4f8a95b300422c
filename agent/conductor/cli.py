"""``dw run --workflow`` and ``dw eval --workflow``: the commands' workflow paths.

``dw run --workflow FILE [--rows CSV]`` runs on the desktop ``dw run`` would use (this screen, or
a served desktop with ``--desktop ws://...``), or on the workflow's virtual scene with
``--desktop virtual``. ``dw eval --workflow`` runs each row on a fresh virtual scene. Both print a
table per row and per step, or with ``--json`` one document with ``rows`` and ``rows_succeeded``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agent.cli.util import DEFAULT_FPS, UNCAPPED_RECORD_FPS
from agent.errors import UserError

DEFAULT_EVAL_SIZE = "1280x720"  # dw eval --workflow without --sizes
EVAL_SIZES = "640x480,1920x1080,5120x2880@2"  # dw eval's own default, which means "not given" here


def add_workflow_arguments(p, *, run: bool) -> None:
    p.add_argument("--workflow", default=None, metavar="FILE",
                   help="run a workflow file (YAML steps with checks; docs/workflows.md) instead of one instruction")
    p.add_argument("--rows", default=None, metavar="CSV",
                   help="with --workflow: fill its {variables} from each row of this CSV, one run per row")
    p.add_argument("--conductor", default="workflow", metavar="SPEC",
                   help="with --workflow: who picks the next step: workflow (scripted, the default), "
                        "vlm:<model folder or shape> (a local VLM via hf-vlm), or openai:URL:MODEL (any "
                        "OpenAI-compatible endpoint; key from $DW_CONDUCTOR_API_KEY or $OPENAI_API_KEY)")


def _load(args):
    from agent.conductor.workflow import load_rows, load_workflow

    if args.rows and not args.workflow:
        raise UserError("--rows needs --workflow FILE")
    wf = load_workflow(args.workflow)
    rows = load_rows(args.rows, wf) if args.rows else None
    if rows is None and wf.variables():
        raise UserError(f"{wf.path}: the steps use {{{wf.variables()[0]}}}; give --rows CSV to fill it")
    return wf, rows


def _print_report(report: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from agent.cli.util import console

    t = Table(title=escape(f"workflow {report['workflow']}: {report['rows_succeeded']} of {report['rows']} rows "
                           f"({report['policy']}, conductor {report['conductor']})"))
    for col in ("row", "success", "steps confirmed", "reason"):
        t.add_column(col)
    for r in report["results"]:
        n_ok = sum(1 for s in r["steps"] if s["outcome"] == "confirmed")
        t.add_row(str(r["row"]), "yes" if r["success"] else "[red]no[/red]", f"{n_ok}/{len(r['steps'])}",
                  escape(r["reason"]))
    console().print(t)
    st = Table(title="per step")
    for col in ("step", "name", "confirmed", "attempted", "attempts"):
        st.add_column(col)
    for k, v in report["steps"].items():
        st.add_row(k, escape(v["name"]), str(v["confirmed"]), str(v["attempted"]), str(v["attempts"]))
    console().print(st)


def run_workflow(args, make_desktop) -> int:
    """``dw run --workflow``: ``make_desktop(args)`` is ``dw run``'s own desktop builder."""
    from agent.conductor.models import make_conductor
    from agent.conductor.run import run_rows, summarise_rows
    from agent.desktops.safety import stop_on_signals
    from policies import PolicyError, load_policy

    wf, rows = _load(args)
    virtual = args.desktop == "virtual"
    # --fps 0 (no capture cap) is for live screens: a scene's clock then steps at the default rate,
    # and a live recording gets a nominal rate for its encoder (frames keep their real times)
    fps = args.fps or (DEFAULT_FPS if virtual else UNCAPPED_RECORD_FPS)
    if virtual:
        from agent.conductor.scene import SceneDesktop

        desktop = None
        make_row_desktop = lambda i: SceneDesktop(wf.desktop, seed=args.seed + i, fps=fps)  # noqa: E731
    else:
        desktop = make_desktop(args)  # first: no display or no server is the first thing a user should hear
        make_row_desktop = lambda i: desktop  # noqa: E731 - one screen for every row
    current: dict[str, Any] = {}

    def stop(reason: str = "stopped") -> None:
        agent = current.get("agent")
        if agent is not None:
            agent.stop(reason)

    def on_agent(agent) -> None:
        current["agent"] = agent
        if desktop is not None and hasattr(desktop, "on_stop"):
            desktop.on_stop = agent.stop

    try:
        try:
            policy = load_policy(args.policy, seed=args.seed)
        except PolicyError as e:
            raise UserError(str(e)) from None
        conductor = make_conductor(args.conductor)
        name = getattr(policy, "name", args.policy)
        if not args.json:
            print(f"dw run: workflow {wf.name} ({len(wf.steps)} steps, {len(rows) if rows else 1} row(s)) with "
                  f"{name}, conductor {conductor.name}, on {'the virtual scene' if virtual else 'this desktop'}",
                  file=sys.stderr)
        with stop_on_signals(stop):
            results = run_rows(wf, rows, make_row_desktop, policy, conductor, record_dir=args.record, fps=fps,
                               max_seconds=args.max_seconds, close_each=virtual, on_agent=on_agent,
                               on_row=None if args.json else lambda r: print(
                                   f"  row {r['row']}: {'ok' if r['success'] else 'FAILED'}: {r['reason']}",
                                   file=sys.stderr))
    finally:
        if desktop is not None:
            desktop.close()
    report = summarise_rows(wf, results, policy=name, conductor=conductor.name)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    bad = any(r["end_reason"].startswith(("desktop-error", "recording-error")) for r in results)
    return 1 if bad else 0


def eval_workflow(args) -> int:
    """``dw eval --workflow``: each row on a fresh virtual scene (``--sizes``: one size)."""
    from tqdm import tqdm

    from agent.cli.util import VIRTUAL_MIN, check_look, parse_sizes
    from agent.conductor.models import make_conductor
    from agent.conductor.run import run_rows, summarise_rows
    from agent.conductor.scene import SceneDesktop, scene_spec
    from agent.desktops.virtual.evaluate import EVAL_SEED
    from policies import PolicyError, load_policy

    if args.suite != "virtual":
        raise UserError("--workflow runs on the virtual desktop (--suite virtual)")
    wf, rows = _load(args)
    spec = scene_spec(wf.desktop)
    sizes_text = DEFAULT_EVAL_SIZE if args.sizes == EVAL_SIZES else args.sizes
    sizes = parse_sizes(sizes_text, VIRTUAL_MIN, default_scale=1.0)
    if len(sizes) != 1:
        raise UserError("--workflow takes one size in --sizes (each row runs once)")
    (w, h, scale), = sizes
    theme, font = check_look(args)
    seed = args.seed if args.seed is not None else EVAL_SEED
    try:
        policy = load_policy(args.policy, seed=0, device=args.device)
    except PolicyError as e:
        raise UserError(str(e)) from None
    conductor = make_conductor(args.conductor, device=args.device)
    bar = tqdm(total=len(rows) if rows else 1, desc=f"workflow {wf.name}", unit="row", disable=args.json,
               file=sys.stderr)
    try:
        results = run_rows(wf, rows, lambda i: SceneDesktop(spec, seed=seed + i, size=(w, h), scale=scale or 1.0,
                                                            theme=theme, font=font),
                           policy, conductor, on_row=lambda r: bar.update(1))
    finally:
        bar.close()
    report = summarise_rows(wf, results, policy=args.policy, conductor=conductor.name,
                            size=f"{w}x{h}@{scale or 1.0:g}", seed=seed)
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
        print(f"rows: {report['rows_succeeded']} of {report['rows']} succeeded ({report['success_rate']:.1%})")
    return 0


__all__ = ["add_workflow_arguments", "eval_workflow", "run_workflow"]
