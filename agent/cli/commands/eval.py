"""``dw eval``: closed-loop success of a policy on the virtual desktop's tasks, per task and size."""

from __future__ import annotations

import argparse
import json
import sys

from agent.cli.util import add_look_arguments
from agent.conductor.cli import add_workflow_arguments
from agent.errors import UserError
from agent.scaleout.backends import add_backend_arguments

AFTER_SUCCESS_S = 5.0  # agent.desktops.virtual.evaluate.AFTER_SUCCESS_S (not imported: `dw --help` stays light)


def after_success(args: argparse.Namespace) -> float:
    """``--after-success`` checked (a finite number of seconds >= 0), its default filled in."""
    import math

    v = AFTER_SUCCESS_S if args.after_success is None else args.after_success
    if not (math.isfinite(v) and v >= 0):
        raise UserError(f"--after-success must be a number of seconds >= 0, got {v:g}")
    return float(v)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.cli.util import VIRTUAL_MIN, check_look, no_look_arguments, parse_sizes, parse_virtual_tasks
    from agent.desktops.virtual.evaluate import EVAL_SEED, after_success_line, episode_specs, summarise, table
    from agent.scaleout.backends import evaluate_episodes
    from policies.base import PolicyError

    if args.after_success is not None and (args.workflow or args.rows or args.suite == "miniwob"):
        raise UserError("--after-success applies to --suite virtual and --suite apps only")
    window = args.after_success = after_success(args)  # the apps suite reads it from args
    if args.workflow or args.rows:  # a workflow, one run per row, on its virtual scene (agent.conductor)
        from agent.conductor.cli import eval_workflow

        return eval_workflow(args)
    if args.suite == "miniwob":
        from agent.desktops.miniwob.cli import run_eval

        no_look_arguments(args, "miniwob")
        return run_eval(args)
    if args.suite == "apps":
        from agent.desktops.apps.cli import run_eval as run_apps_eval

        no_look_arguments(args, "apps")
        return run_apps_eval(args)
    if args.suite != "virtual":
        raise UserError(f"unknown suite {args.suite!r}; available: virtual, apps, miniwob")
    if args.mode is not None:
        raise UserError("--mode applies to --suite miniwob only")
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    tasks = parse_virtual_tasks(args.tasks)
    sizes = parse_sizes(args.sizes, VIRTUAL_MIN, default_scale=1.0)
    theme, font = check_look(args)
    specs = episode_specs(tasks, args.episodes, sizes, seed=args.seed if args.seed is not None else EVAL_SEED,
                          theme=theme, font=font, after_success=window)
    bar = tqdm(total=len(specs), desc=f"eval {args.policy}", unit="ep", disable=args.json, file=sys.stderr)
    try:  # episodes are tasks on a backend (agent.scaleout.backends); results come back in spec order
        report = evaluate_episodes(specs, args.policy, max_steps=args.max_steps, device=args.device,
                                   backend=args.backend, workers=args.workers, address=args.address,
                                   task_timeout=args.task_timeout,
                                   on_result=lambda r: bar.update(1))
    except PolicyError as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    results = report.results
    summary = summarise([r for r in results if "error" not in r])
    if report.failed:
        print(f"dw eval: {report.failed} of {len(results)} episodes failed (see 'error' in the episodes)",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"policy": args.policy, "after_success_s": window, "summary": summary, "episodes": results,
                          "throughput": report.throughput}))
    else:
        from rich.console import Console

        Console().print(table(summary, title=f"{args.policy}: closed-loop success (seeds {specs[0]['seed']}+)"))
        print(f"overall: {summary['overall']:.1%} of {summary['episodes']} episodes")
        print(after_success_line(summary, window))
    return 1 if report.failed else 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="closed-loop evaluation of a policy: the virtual desktop or MiniWoB++")
    p.add_argument("--suite", default="virtual", help="evaluation suite: virtual, apps (real Tk and GTK apps on Xvfb), "
                   "or miniwob (MiniWoB++ in Chromium)")
    p.add_argument("--mode", choices=("headless", "desktop"), default=None,
                   help="miniwob only: headless (MiniWoB screenshots and actions) or desktop (Chromium on the X "
                        "display, mss + pyautogui); default headless")
    p.add_argument("--tasks", default="all", help="comma-separated tasks, 'all', or 'classic' (the first 7); miniwob also "
                   "'experts' or 'pix2act59' (Pix2Act's 59 tasks)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task and size")
    p.add_argument("--sizes", default="640x480,1920x1080,5120x2880@2", help="WxH[@scale],...")
    p.add_argument("--policy", default="pixel-small",
                   help="scripted, random, pixel-<size> or a checkpoint folder (miniwob: comma-separated)")
    p.add_argument("--seed", type=int, default=None, help="first episode seed (default 10000: unseen in training)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--max-steps", type=int, default=100, help="step limit per episode (up to its first success)")
    p.add_argument("--after-success", type=float, default=None, metavar="SECONDS",
                   help="virtual and apps: after an episode's first success keep it going this long and count "
                        "the policy's actions other than wait and done (actions_after_success; its `done` ends "
                        f"the episode early); 0 ends each episode at its success (default {AFTER_SUCCESS_S:g})")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel workers (local default 1 = in this process; ray default: the cluster's CPUs)")
    add_look_arguments(p)
    add_workflow_arguments(p, run=False)
    add_backend_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=run)
