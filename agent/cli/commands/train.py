"""``dw train``: behaviour cloning of a pixel policy from recorded sessions, plain or by a recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.errors import UserError


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers.utils import logging as hf_logging

    from agent.sessions.export import sessions_from_exports
    from agent.sessions.format import SessionError
    from agent.training import recipes

    hf_logging.disable_progress_bar()  # a CLI's stderr is for its own lines

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if args.epochs is not None and args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.size is not None and args.init is not None:
        raise UserError("--size makes a fresh model and --init starts from a checkpoint: give one")
    stages = recipes.load_recipe(args.recipe) if args.recipe else [
        {"name": "train", "model": {}, "train": {"epochs": 20}, "data": {}, "reader": {}}]
    log = (lambda s: None) if args.json else print
    sessions = sessions_from_exports(args.sessions, Path(args.out) / "imported")  # `dw export` datasets
    try:
        summary = recipes.run(stages, sessions, args.out, size=args.size, init=args.init, epochs=args.epochs,
                              device=args.device, seed=args.seed, resume=args.resume, cache=args.cache,
                              progress=not args.json, log=log)
    except SessionError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(summary))
    else:
        last = summary["history"][-1] if summary["history"] else {}
        print(f"saved {summary['size']} ({summary['parameters']:,} parameters) to {args.out}: "
              f"{summary['train_samples']} samples, {summary['steps']} steps, "
              + ", ".join(f"{k}={v:.3f}" for k, v in last.items() if isinstance(v, float)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a pixel policy from recorded sessions (behaviour cloning)",
                       description="Train a pixel policy on sessions. A recipe (TOML, see recipes/) holds the "
                                   "model's shape and the training settings; without one, a plain model of "
                                   "--size (default pixel-small) or the --init checkpoint is trained 20 epochs.")
    p.add_argument("sessions", nargs="*", metavar="SESSIONS_OR_DIRS",
                   help="session folders or folders of them, or `dw export` datasets (hf or lerobot; "
                        "imported into OUT/imported) (default: the recipe's [data] sessions)")
    p.add_argument("--size", default=None, help="a fresh model: pixel-tiny, pixel-small, pixel-base or pixel-large")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint (a folder or a bundled name): fine-tune it on new sessions")
    p.add_argument("--recipe", default=None, metavar="FILE", help="a training recipe (TOML): model, settings, stages")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--epochs", type=int, default=None, help="epochs per stage (over the recipe's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=None, help="over the recipe's (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--cache", default=None, help="preprocessed-sample cache folder (default OUT/cache)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)
