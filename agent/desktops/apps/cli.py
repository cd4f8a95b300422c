"""``dw eval --suite apps`` and ``dw demos --suite apps``."""

from __future__ import annotations

import argparse
import json
import sys

from agent.errors import UserError


def _tasks(args: argparse.Namespace) -> list[str]:
    from agent.desktops.apps.evaluate import check_tasks, parse_tasks

    if getattr(args, "backend", "local") != "local" or (getattr(args, "workers", None) or 1) > 1 \
            or getattr(args, "task_timeout", None) is not None:
        raise UserError("--backend, --workers and --task-timeout apply to --suite virtual; "
                        "apps episodes run one at a time on one Xvfb")
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    tasks = parse_tasks(args.tasks)
    check_tasks(tasks)
    return tasks


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.desktops import DesktopError
    from agent.desktops.apps.evaluate import AFTER_SUCCESS_S, EVAL_SEED, evaluate, summarise, table
    from agent.desktops.virtual.evaluate import after_success_line
    from policies.base import PolicyError

    if getattr(args, "mode", None) is not None:
        raise UserError("--mode applies to --suite miniwob only")
    tasks = _tasks(args)
    seed = args.seed if args.seed is not None else EVAL_SEED
    max_steps = getattr(args, "max_steps", None) or 30
    window = getattr(args, "after_success", None)
    window = AFTER_SUCCESS_S if window is None else window
    bar = tqdm(total=len(tasks) * args.episodes, desc="eval apps", unit="ep", disable=args.json, file=sys.stderr)
    try:
        results = evaluate(tasks, args.policy, episodes=args.episodes, seed=seed, max_steps=max_steps,
                           device=getattr(args, "device", "cpu"), on_result=lambda r: bar.update(1),
                           after_success=window)
    except (PolicyError, DesktopError) as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    summary = summarise(results)
    if args.json:
        print(json.dumps({"suite": "apps", "policy": args.policy, "seed": seed, "window_manager": None,
                          "after_success_s": window, "summary": summary, "episodes": results}))
    else:
        from rich.console import Console

        Console().print(table(summary, title=f"apps: {args.policy} (seeds {seed}..{seed + args.episodes - 1})"))
        print(f"overall: {summary['overall']:.1%} of {summary['episodes']} episodes")
        print(after_success_line(summary, window))
    return 0


def run_demos(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.desktops import DesktopError
    from agent.desktops.apps.evaluate import DEMO_SEED, record_demos

    tasks = _tasks(args)
    seed = args.seed if args.seed is not None else DEMO_SEED
    policy = None
    if args.dagger:
        from policies import load_policy
        from policies.base import PolicyError

        try:
            policy = load_policy(args.dagger, seed=seed)
        except PolicyError as e:
            raise UserError(str(e)) from None
    bar = tqdm(total=len(tasks) * args.episodes, desc="demos apps", unit="ep", disable=args.json, file=sys.stderr)
    try:
        results = record_demos(tasks, args.episodes, args.out, seed=seed, on_result=lambda r: bar.update(1),
                               policy=policy, beta=args.beta)
    except DesktopError as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    ok = sum(r["success"] for r in results)
    if policy is not None:  # DAgger: every episode is kept, the expert's labels in it
        summary = {"suite": "apps", "out": str(args.out), "episodes": len(results), "recorded": len(results),
                   "policy_successes": ok}
        print(json.dumps(summary) if args.json else
              f"recorded {len(results)} sessions into {args.out} ({ok} {args.dagger} successes, expert-labelled)")
        return 0
    summary = {"suite": "apps", "out": str(args.out), "episodes": len(results), "recorded": ok,
               "expert_failures": [f"{r['task']}/s{r['seed']}: {r['reason']}" for r in results if not r["success"]]}
    print(json.dumps(summary) if args.json else
          f"recorded {ok} successful expert sessions of {len(results)} into {args.out}")
    return 0
