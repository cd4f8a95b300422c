"""``dw train``: behaviour cloning of a pixel policy from recorded sessions, plain or by a recipe."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.cli.util import add_deprecated
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
    if args.model_size is not None and args.init is not None:
        raise UserError("--model-size makes a fresh model and --init starts from a checkpoint: give one")
    stages = recipes.load_recipe(args.recipe) if args.recipe else [
        {"name": "train", "model": {}, "train": {"epochs": 20}, "data": {}, "reader": {}}]
    log = (lambda s: None) if args.json else print
    sessions = sessions_from_exports(args.sessions, Path(args.out) / "imported")  # `dw export` datasets
    try:
        summary = recipes.run(stages, sessions, args.out, size=args.model_size, init=args.init, epochs=args.epochs,
                              device=args.device, seed=args.seed, resume=args.resume, cache=args.cache,
                              keep_state=args.keep_state, progress=not args.json, log=log)
    except SessionError as e:
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(summary))
    else:
        print(final_line(summary, args.out))
    return 0


def final_line(summary: dict, out: str) -> str:
    """What ``dw train`` ends with: the saved model and the figures of the epoch it kept."""
    ran = summary["history"][-1]["epoch"] if summary["history"] else 0
    kept, n = summary.get("kept_epoch"), summary.get("kept") or {}
    which = ("the best held-out" if summary.get("best_epoch") is not None else "the last") if kept else "none"
    return (f"saved {summary['size']} ({summary['parameters']:,} parameters) to {out}: "
            f"epoch {kept} of {ran} ({which}), {summary['train_samples']} samples, {summary['steps']} steps"
            + "".join(f", {k}={v:.3f}" for k, v in n.items() if isinstance(v, float)))


def register(sub) -> None:
    p = sub.add_parser("train", help="train a pixel policy from recorded sessions (behaviour cloning)",
                       description="Train a pixel policy on sessions. A recipe (TOML, see recipes/) holds the "
                                   "model's shape and the training settings; without one, a plain model of "
                                   "--model-size (default pixel-small) or the --init checkpoint is trained 20 epochs. "
                                   "OUT ends holding the kept epoch's model (config.json, model.safetensors), "
                                   "training.json, and stages/NAME for each earlier stage of a recipe; samples "
                                   "are cached outside it. Teach a bundled checkpoint your task: dw train DEMOS "
                                   "--init pixel-small --recipe recipes/teach.toml --out my-worker.")
    p.add_argument("sessions", nargs="*", metavar="SESSIONS_OR_DIRS",
                   help="session folders or folders of them, or `dw export` datasets (hf or lerobot; "
                        "imported into OUT/imported) (default: the recipe's [data] sessions)")
    p.add_argument("--model-size", default=None, metavar="SIZE",
                   help="a fresh model: pixel-tiny, pixel-small, pixel-base or pixel-large "
                        "(default: the recipe's, else pixel-small)")
    add_deprecated(p, "--size", "--model-size", dest="model_size")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint (a folder or a bundled name): fine-tune it on new sessions "
                        "(default: the recipe's [model] init, else a fresh model)")
    p.add_argument("--recipe", default=None, metavar="FILE",
                   help="a training recipe (TOML): model, settings, stages (default: none: 20 epochs, batch 64, "
                        "lr 1e-3)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (required)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per stage (default: the recipe's, else 20)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=None, help="random seed: initial weights, shuffles, split (default: the recipe's, else 0)")
    p.add_argument("--resume", action="store_true",
                   help="continue a stopped run: a recipe's finished stages are kept, the interrupted one continues "
                        "from its checkpoint (a run stops before a stage whose sessions, e.g. a DAgger set of an "
                        "earlier stage's weights, do not exist yet) (default: off: start afresh)")
    p.add_argument("--keep-state", action="store_true",
                   help="keep OUT/checkpoint (the last epoch's weights and the optimizer's state) once the run "
                        "has finished (default: off: removed, as only --resume of an interrupted run needs it)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="preprocessed-sample cache folder, shared by runs; see dw cache (default: samples in "
                        "the user's cache folder: $DW_CACHE_DIR/samples, else ~/.cache/digital-worker/samples "
                        "on Linux, under $XDG_CACHE_HOME if set)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (default: off: a line per epoch)")
    p.set_defaults(func=run)
