"""``dw eval --suite miniwob`` and ``dw demos --suite miniwob`` (also ``python -m agent.desktops.miniwob``)."""

from __future__ import annotations

import argparse
import json
import sys

from agent.cli.util import HelpFormatter, parse_window, use_help_formatter
from agent.errors import UserError


def _policies(text: str) -> list[str]:
    out = [p.strip() for p in text.split(",") if p.strip()]
    if not out:
        raise UserError("--policy is empty")
    return out


def _mode_and_tasks(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The mode and tasks of an eval or demos run, once the browser and the episode count are checked."""
    from agent.desktops.miniwob.browser import check_available
    from agent.desktops.miniwob.evaluate import parse_tasks

    mode = getattr(args, "mode", None) or "headless"
    check_available(mode)
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    return mode, parse_tasks(args.tasks)


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.desktops.miniwob.evaluate import EVAL_SEED, evaluate, summarise, table
    from policies.base import PolicyError

    mode, tasks = _mode_and_tasks(args)
    if getattr(args, "backend", "local") != "local" or (getattr(args, "workers", None) or 1) > 1 \
            or getattr(args, "task_timeout", None) is not None:
        raise UserError("--backend, --workers and --task-timeout apply to --suite virtual; "
                        "MiniWoB++ episodes run one at a time in this process")
    policies = _policies(args.policy)
    seed = args.seed if args.seed is not None else EVAL_SEED
    max_steps = getattr(args, "max_steps", None) or 30
    bar = tqdm(total=len(tasks) * len(policies) * args.episodes, desc="eval miniwob", unit="ep",
               disable=args.json, file=sys.stderr)
    try:
        results = evaluate(tasks, policies, episodes=args.episodes, seed=seed, mode=mode, max_steps=max_steps,
                           device=getattr(args, "device", "cpu"), on_result=lambda r: bar.update(1))
    except PolicyError as e:
        raise UserError(str(e)) from None
    finally:
        bar.close()
    summary = summarise(results, tasks)
    if args.json:
        print(json.dumps({"suite": "miniwob", "mode": mode, "seed": seed, "policies": policies,
                          "summary": summary, "episodes": results}))
    else:
        from rich.console import Console

        Console().print(table(summary, title=f"MiniWoB++ success ({mode}, seeds {seed}..{seed + args.episodes - 1})"))
    return 0


def run_demos(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.desktops.miniwob.evaluate import DEMO_SEED, record_demos

    mode, tasks = _mode_and_tasks(args)
    dagger = None
    if getattr(args, "dagger", None):
        from policies import load_policy
        from policies.base import PolicyError

        try:
            dagger = load_policy(args.dagger)
        except PolicyError as e:
            raise UserError(str(e)) from None
    seed = args.seed if args.seed is not None else DEMO_SEED
    bar = tqdm(total=len(tasks) * args.episodes, desc="demos miniwob", unit="ep", disable=args.json, file=sys.stderr)
    results = record_demos(tasks, args.episodes, args.out, seed=seed, mode=mode, on_result=lambda r: bar.update(1),
                           dagger=dagger, beta=getattr(args, "beta", 0.0))
    bar.close()
    ok = sum(r["success"] for r in results)
    summary = {"suite": "miniwob", "mode": mode, "out": str(args.out), "episodes": len(results)}
    if dagger is not None:
        summary.update(recorded=len(results), policy_successes=ok)
        text = f"recorded {len(results)} expert-labelled sessions of {args.dagger} ({ok} successes) into {args.out}"
    else:
        summary.update(recorded=ok, expert_failures=[f"{r['task']}/s{r['seed']}: {r['reason']}"
                                                     for r in results if not r["success"]])
        text = f"recorded {ok} successful expert sessions of {len(results)} into {args.out}"
    print(json.dumps(summary) if args.json else text)
    return 0


def run_tiles(args: argparse.Namespace) -> int:
    from agent.desktops.miniwob.browser import check_available
    from agent.desktops.miniwob.evaluate import parse_tasks
    from agent.desktops.miniwob.reading import cut_bank, save_bank

    if args.pages < 2:
        raise UserError("--pages must be at least 2 (odd seeds are held out)")
    if args.tile_pt < 8 or args.glimpse_px < 8:
        raise UserError("--tile-pt and --glimpse-px must be at least 8")
    window = parse_window(args.window, args.window_px, args.tile_pt)
    check_available("headless")
    bank = cut_bank(parse_tasks(args.tasks), args.pages, args.seed, args.tile_pt, args.glimpse_px, window=window)
    save_bank(bank, args.out)
    print(f"cut {len(bank['words'])} tiles ({int((bank['words'] != '').sum())} holding a word) into {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from agent.desktops.miniwob.evaluate import MAX_STEPS

    p = argparse.ArgumentParser(prog="python -m agent.desktops.miniwob", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval", help="success table task x policy")
    d = sub.add_parser("demos", help="record scripted-expert demos (sessions)")
    for q in (e, d):
        q.add_argument("--tasks", default="all")
        q.add_argument("--episodes", type=int, default=50 if q is e else 20)
        q.add_argument("--seed", type=int, default=None)
        q.add_argument("--mode", choices=("headless", "desktop"), default="headless")
        q.add_argument("--json", action="store_true")
    e.add_argument("--policy", default="scripted")
    e.add_argument("--device", default="cpu")
    e.add_argument("--max-steps", type=int, default=MAX_STEPS)
    d.add_argument("--out", required=True)
    t = sub.add_parser("tiles", help="cut a bank of DOM-labelled reading tiles (for dw reader --bank)")
    t.add_argument("--tasks", default="all")
    t.add_argument("--pages", type=int, default=100, help="pages per task (seeds --seed..; odd ones are held out)")
    t.add_argument("--seed", type=int, default=300_000)
    t.add_argument("--tile-pt", type=int, default=32)
    t.add_argument("--glimpse-px", type=int, default=48)
    t.add_argument("--window", default=None, metavar="WxH",
                   help="cut read windows of this many points, each naming the word centred in it, instead of "
                        "tiles (a reader for a grounding's window)")
    t.add_argument("--window-px", default=None, metavar="WxH", help="the windows' size in pixels (default: --window)")
    t.add_argument("--out", required=True, help="the bank to write (.npz)")
    use_help_formatter(p)  # every --help shows the options' defaults, as dw's
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"eval": run_eval, "demos": run_demos, "tiles": run_tiles}[args.cmd](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
