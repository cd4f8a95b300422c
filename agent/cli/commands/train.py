"""``dw train``: behaviour cloning of a pixel policy from recorded sessions."""

from __future__ import annotations

import argparse
import json

from agent.errors import UserError


def run(args: argparse.Namespace) -> int:
    import torch

    from agent.sessions.format import SessionError
    from policies.base import PolicyError
    from policies.pixel.config import SIZES
    from policies.train import TrainConfig, TrainError, train

    if args.init is None and args.size not in SIZES:
        raise UserError(f"unknown --size {args.size!r}; choose one of {', '.join(SIZES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if args.epochs < 1:
        raise UserError("--epochs must be at least 1")
    if args.shifts < 0 or args.shifts > 8:
        raise UserError("--shifts must be between 0 and 8")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UserError("--time-budget must be positive")
    tc = TrainConfig(size=args.size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     device=args.device, val_fraction=args.val_fraction, workers=args.workers, shifts=args.shifts,
                     time_budget_s=args.time_budget, init=args.init, tile_pt=args.tile_pt,
                     max_glimpses=args.max_glimpses, reader=args.reader,
                     match_reader=args.match_reader, match_drawn=args.match_drawn, match_at=args.match_at, match_snap=args.match_snap,
                     cell_offsets=args.cell_offsets,
                     match_order=args.match_order, match_reach=args.match_reach,
                     match_where=args.match_where, match_where_near=args.match_where_near,
                     train_only=tuple(x for x in (args.train_only or "").split(",") if x))
    try:
        summary = train(args.sessions, args.out, tc, resume=args.resume, cache_dir=args.cache,
                        progress=not args.json, log=(lambda s: None) if args.json else print)
    except (TrainError, SessionError, PolicyError) as e:
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
    p = sub.add_parser("train", help="train a pixel policy from recorded sessions (behaviour cloning)")
    p.add_argument("sessions", nargs="+", metavar="SESSIONS_OR_DIRS", help="session folders or folders of them")
    p.add_argument("--size", default="pixel-small", help="pixel-tiny, pixel-small, pixel-base or pixel-large")
    p.add_argument("--out", required=True, help="checkpoint folder to write")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (a folder or a bundled name; its size wins "
                        "over --size): fine-tune a policy on new sessions")
    p.add_argument("--reader", default=None, metavar="FOLDER",
                   help="a reader stem from `dw reader`: it becomes the glimpse encoder (over --init too: "
                        "every other weight is kept)")
    p.add_argument("--match-reader", default=None, metavar="FOLDER",
                   help="a reader from `dw reader`, kept frozen: the model reads every glimpse (and a "
                        "shifted copy) with it and points where a word matches the instruction's "
                        "(over --init too: every other weight is kept)")
    p.add_argument("--match-drawn", default=None, metavar="WxH",
                   help="no reader: the model draws the instruction's words (MiniWoB++'s fonts) and points "
                        "where they match its four WxH-point read windows per glimpse (over --init too: "
                        "every weight but a reader's is kept)")
    p.add_argument("--match-at", action="store_true",
                   help="a drawn-match model's offset heads also learn where each window's drawing of their "
                        "word matched, to the pixel: the right one of several rows of options in a glimpse")
    p.add_argument("--match-snap", action="store_true",
                   help="a drawn-match model's offsets may move to where their word's drawing matched in the "
                        "glimpse (learned per axis, with a learned shift): a click on that row or word, not between")
    p.add_argument("--cell-offsets", action="store_true",
                   help="each pointer also chooses one cell of a glimpse's middle feature map (a sixth of a tile) "
                        "and a point in it, taken where the choice is sure: a target named by its kind (a radio "
                        "button, a checkbox) lands on its row, not between the rows a tile holds")
    p.add_argument("--match-order", action="store_true",
                   help="a reading model (--match-reader, or an --init that reads) also compares the numbers "
                        "it reads with the instruction's: below, equal or above (a slider's printed value)")
    p.add_argument("--match-reach", type=int, default=None, metavar="TILES",
                   help="a reading model spreads a word's match this many tiles around it (a field's middle "
                        "lies up to 4 tiles right of its label); learned kernels are kept, new offsets start at 0")
    p.add_argument("--match-where", action="store_true",
                   help="a reading model's offset heads also learn where inside a glimpse their word was read "
                        "(which of its windows): a click lands on the right one of two rows in a tile")
    p.add_argument("--match-where-near", action="store_true",
                   help="as --match-where, and each glimpse's offset head learns one correction per read window, "
                        "chosen by where the word was read in it or within the match reach: a field's row is "
                        "its label's, read a few tiles left of it (of two fields in a tile, one, not between)")
    p.add_argument("--train-only", default=None, metavar="PREFIXES",
                   help="comma-separated parameter-name prefixes: train only those and keep every other "
                        "weight (e.g. match_ to teach an --init checkpoint to use a --match-reader)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.1, help="sessions held out for validation")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--cache", default=None, help="preprocessed-sample cache folder (default OUT/cache)")
    p.add_argument("--workers", type=int, default=1, help="processes that preprocess sessions into the cache")
    p.add_argument("--shifts", type=int, default=0,
                   help="extra samples per action with the glimpse tile grid shifted (augmentation)")
    p.add_argument("--tile-pt", type=int, default=None, metavar="POINTS",
                   help="glimpse tile size in points (default 64; smaller tiles read small text at a "
                        "higher resolution: 32 suits MiniWoB's 160x210 page); applies over --init too")
    p.add_argument("--max-glimpses", type=int, default=None, metavar="N",
                   help="glimpses per frame (default: the size's; 36 covers MiniWoB's page in 32-point "
                        "tiles); applies over --init too")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="shorten the schedule after epoch 1 so training fits this many seconds")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)
