"""``dw demos``: record the virtual desktop's scripted expert as ordinary sessions (training data)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.cli import util
from agent.errors import UserError
from agent.sessions.demos import DAGGER_MAX_STEPS, demo_specs, record_demo, record_demo_star


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if not 0.0 <= args.beta <= 1.0:
        raise UserError("--beta must be between 0 and 1")
    if args.suite == "miniwob":
        from agent.desktops.miniwob.cli import run_demos

        util.no_look_arguments(args, "miniwob")
        return run_demos(args)
    if args.suite == "apps":
        from agent.desktops.apps.cli import run_demos as run_apps_demos

        util.no_look_arguments(args, "apps")
        return run_apps_demos(args)
    if args.suite != "virtual":
        raise UserError(f"unknown suite {args.suite!r}; available: virtual, apps, miniwob")
    tasks = util.parse_virtual_tasks(args.tasks)
    sizes = util.parse_sizes(args.sizes, util.VIRTUAL_MIN, default_scale=1.0)
    theme, font = util.check_look(args)
    if args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = demo_specs(tasks, args.episodes, sizes, args.seed, human_like=args.human_like, theme=theme, font=font)
    policy = None
    if args.dagger:
        from policies import load_policy
        from policies.base import PolicyError

        if args.workers > 1:
            raise UserError("--dagger records in this process: leave --workers at 1")
        try:
            policy = load_policy(args.dagger)
        except PolicyError as e:
            raise UserError(str(e)) from None
        specs = [{**s, "max_steps": DAGGER_MAX_STEPS, "beta": args.beta} for s in specs]
    results = []
    bar = tqdm(total=len(specs), desc="demos", unit="ep", disable=args.json)
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            for r in pool.imap_unordered(record_demo_star, [(s, str(out)) for s in specs]):
                results.append(r)
                bar.update(1)
    else:
        for s in specs:
            results.append(record_demo(s, str(out), policy=policy))
            bar.update(1)
    bar.close()
    ok = sum(1 for r in results if r.get("success"))
    done = sum(1 for r in results if not r.get("skipped"))
    who = f"{args.dagger} successes (expert-labelled)" if args.dagger else "expert successes"
    summary = {"out": str(out), "episodes": len(results), "recorded": done,
               "policy_successes" if args.dagger else "expert_successes": ok}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"recorded {done} sessions into {out} ({ok} {who}; {len(results) - done} already there)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("demos", help="record scripted-expert demos on the virtual desktop (training data)")
    p.add_argument("--suite", default="virtual", help="virtual, apps (real Tk and GTK apps on Xvfb), or miniwob "
                   "(MiniWoB++ in Chromium, DOM experts)")
    p.add_argument("--mode", choices=("headless", "desktop"), default="headless", help="miniwob only")
    p.add_argument("--tasks", default="all", help="comma-separated tasks, 'all', or 'classic' (the first 7); miniwob also "
                   "'experts' or 'pix2act59' (Pix2Act's 59 tasks)")
    p.add_argument("--episodes", type=int, default=10, help="episodes per task and size")
    p.add_argument("--sizes", default="640x480,1920x1080,5120x2880@2", metavar="WxH[@scale],...",
                   help="screen sizes, comma list")
    p.add_argument("--out", required=True, help="folder for the sessions (one sub-folder each)")
    p.add_argument("--seed", type=int, default=0,
                   help="first episode seed (training seeds; eval uses 10000+, miniwob 100000+)")
    p.add_argument("--workers", type=int, default=1, help="parallel recording processes")
    util.add_human_like(p, default=True, what="the scripted expert (virtual suite)")
    util.add_deprecated(p, "--plain", "--no-human-like", dest="human_like", flag=True, const=False)
    p.add_argument("--dagger", default=None, metavar="POLICY",
                   help="POLICY drives and the expert labels every state it reaches (DAgger data for dw train)")
    p.add_argument("--beta", type=float, default=0.0,
                   help="with --dagger: the chance that a step runs the expert's action instead (0..1)")
    util.add_look_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)
