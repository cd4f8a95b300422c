"""``dw reader``: pretrain a pixel policy's glimpse encoder to read, on synthetic UI text and the
virtual desktop's own screens."""

from __future__ import annotations

import argparse
import functools
import json

from agent.cli.util import parse_virtual_tasks, parse_window
from agent.errors import UserError


def words() -> list[str]:
    """The virtual desktop's own labels: half the synthetic words are drawn from these."""
    from agent.desktops.virtual import tasks as t

    menus = tuple(w for name, items in t.MENUS.items() for w in (name, *items))
    dialogs = tuple(w for title, _, buttons in t.DIALOGS for w in (title, *buttons))
    return sorted(set(t.BUTTON_WORDS + t.CHECK_WORDS + t.TEXT_WORDS + t.FIELD_NAMES + t.WINDOW_TITLES
                      + t.ICON_NAMES + menus + dialogs))


def run(args: argparse.Namespace) -> int:
    import torch

    from policies.pixel.config import SIZES
    from policies.pixel.reader import ReaderError, load_reader_stem, pretrain_reader

    if args.size not in SIZES:
        raise UserError(f"unknown --size {args.size!r}; choose one of {', '.join(SIZES)}")
    if args.steps < 1 or args.batch_size < 1:
        raise UserError("--steps and --batch-size must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    channels = args.channels or SIZES[args.size]["stem_channels"]
    if channels < 1 or args.head_width < 1:
        raise UserError("--channels and --head-width must be at least 1")
    if not 0.0 <= args.desktop_share < 1.0:
        raise UserError("--desktop-share must be at least 0 and below 1")
    if args.tile_pt < 8:
        raise UserError("--tile-pt must be at least 8")
    if args.bank and args.desktop_share == 0:
        raise UserError("--bank gives the --desktop-share tiles: with a share of 0 it would go unused")
    if args.desktop_tasks and (args.bank or args.desktop_share == 0):
        raise UserError("--desktop-tasks chooses the virtual desktop's tiles: give a --desktop-share above 0, "
                        "and no --bank")
    for flag, folder in (("--init", args.init), ("--teacher", args.teacher)):
        if folder is not None:
            try:
                load_reader_stem(folder)
            except ReaderError as e:
                raise UserError(f"{flag}: {e}") from None
    window = parse_window(args.window, args.window_px, args.tile_pt)
    desktop = None
    if args.bank:  # a share above 0, checked above
        from agent.desktops.miniwob.reading import bank_source

        desktop = bank_source(args.bank.split(","))
    elif args.desktop_share > 0:
        from agent.desktops.virtual.reading import desktop_tiles

        desktop = desktop_tiles
        if args.desktop_tasks:  # each part a task or all; a task named twice is drawn twice as often
            parts = [p for p in args.desktop_tasks.split(",") if p.strip()]
            if not parts:
                raise UserError("--desktop-tasks: no task given")
            try:
                tasks = [t for p in parts for t in parse_virtual_tasks(p)]
            except UserError as e:
                raise UserError(f"--desktop-tasks: {e}") from None
            desktop = functools.partial(desktop_tiles, tasks=tasks)
    try:
        summary = pretrain_reader(args.out, channels=channels, head_width=args.head_width, steps=args.steps,
                                  batch_size=args.batch_size, lr=args.lr, seed=args.seed, words=words(),
                                  time_budget_s=args.time_budget, device=args.device, init=args.init,
                                  desktop=desktop, desktop_share=args.desktop_share, tile_pt=args.tile_pt, window=window,
                                  stem=args.stem, teacher=args.teacher, log=(lambda s: None) if args.json else print)
    except ReaderError as e:  # --init or --teacher does not fit what is asked
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(summary))
    else:
        desk = summary.get("val_desktop_word_acc")
        agree = summary.get("val_agreement")
        print(f"saved a {args.size} reader stem to {args.out}: {summary['steps']} steps, "
              f"word accuracy on held-out synthetic glimpses {summary['val_word_acc']:.3f}"
              + (f", on held-out {'bank' if args.bank else 'virtual-desktop'} tiles {desk:.3f}"
                 if desk is not None else "")
              + (f", naming the teacher's word on {agree:.3f} of held-out synthetic ones" if agree is not None else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("reader", help="pretrain a pixel policy's glimpse encoder to read (synthetic UI text); "
                                      "use it with dw train --reader")
    p.add_argument("--size", default="pixel-small", help="the policy size the stem is for (its width)")
    p.add_argument("--out", required=True, help="folder to write (reader.safetensors, reader.json)")
    p.add_argument("--channels", type=int, default=None,
                   help="the stem's width (default: --size's); a reader for --match-reader costs ~channels^2")
    p.add_argument("--head-width", type=int, default=512, help="the reading head's hidden width")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="fit the schedule into this many seconds")
    p.add_argument("--init", default=None, metavar="READER_DIR",
                   help="go on training this reader (its stem and width; --channels/--head-width are ignored); "
                        "a reader of other tiles or windows gives its stem only, and the head starts afresh")
    # policies.pixel.model.READER_STEMS, spelled out: importing it here would load torch for every dw command
    p.add_argument("--stem", default=None, choices=("reader", "reader-lite", "reader-relu"),
                   help="default reader, or --init's; reader-lite: without the stride-1 layer, about a quarter less "
                        "time per read; reader-relu: ReLU for GELU, cheaper on a CPU (start either with --init and "
                        "--teacher from a reader)")
    p.add_argument("--teacher", default=None, metavar="READER_DIR",
                   help="learn this reader's per-slot distributions (distillation) instead of the words' labels; "
                        "it must read the same tiles or windows")
    p.add_argument("--desktop-share", type=float, default=0.5, metavar="F",
                   help="share of each batch cut from the virtual desktop's own screens, labelled by what it drew "
                        "(0: synthetic tiles only)")
    p.add_argument("--desktop-tasks", default=None, metavar="TASKS",
                   help="comma-separated tasks whose screens give the desktop tiles; a task named twice comes "
                        "twice as often, 'all' is every task once (e.g. all,drag-slider,drag-slider for more "
                        "numbers); default all")
    p.add_argument("--bank", default=None, metavar="FILE.npz[,...]",
                   help="take the --desktop-share tiles from these banks of labelled page tiles (python -m "
                        "agent.desktops.miniwob tiles; comma-separated) instead of the virtual desktop")
    p.add_argument("--tile-pt", type=int, default=64, metavar="POINTS",
                   help="tile size in points the reader reads (the policy's --tile-pt; a bank's must match)")
    p.add_argument("--window", default=None, metavar="WxH",
                   help="read windows of this many points (PixelConfig.match_window), each naming the word centred "
                        "in it, instead of tiles; use the reader with dw train --match-reader")
    p.add_argument("--window-px", default=None, metavar="WxH", help="the windows' size in pixels (default: --window)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)
