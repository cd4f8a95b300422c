"""``dw reader``: pretrain the reader a reader grounding uses, on synthetic UI text and the screens
the policy will read (the virtual desktop's, or a bank of labelled page tiles); settings from a
recipe's ``[reader]`` table."""

from __future__ import annotations

import argparse
import functools
import json

from agent.errors import UserError

# a recipe's [reader] keys (policies.pixel.reader.pretrain_reader's settings, and where tiles come from)
# the faces drawn with where a recipe names none, beside Pillow's bundled one (the virtual desktop's):
# those Chromium and GTK draw with on Debian and Ubuntu, where present
DEFAULT_FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
                 "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
                 "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf")
KEYS = ("size", "stem", "channels", "head_width", "tile_pt", "glimpse_px", "steps", "batch_size", "lr",
        "time_budget_s", "init", "teacher", "desktop_share", "desktop_tasks", "desktop_looks", "bank", "window", "window_px", "fonts")


def words() -> list[str]:
    """The virtual desktop's own labels: half the synthetic words are drawn from these."""
    from agent.desktops.virtual import tasks as t

    menus = tuple(w for name, items in t.MENUS.items() for w in (name, *items))
    dialogs = tuple(w for title, _, buttons in t.DIALOGS for w in (title, *buttons))
    return sorted(set(t.BUTTON_WORDS + t.CHECK_WORDS + t.TEXT_WORDS + t.FIELD_NAMES + t.WINDOW_TITLES
                      + t.ICON_NAMES + menus + dialogs))


def _settings(args: argparse.Namespace) -> dict:
    from agent.training.recipes import load_recipe

    r = dict(load_recipe(args.recipe)[0]["reader"]) if args.recipe else {}
    unknown = sorted(set(r) - set(KEYS))
    if unknown:
        raise UserError(f"{args.recipe} [reader]: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    if args.steps is not None:
        r["steps"] = args.steps
    if getattr(args, "model_size", None) is not None:
        r["size"] = args.model_size
    return r


def run(args: argparse.Namespace) -> int:
    import torch

    from agent.cli.util import parse_virtual_tasks
    from policies.pixel.configuration import SIZES
    from policies.pixel.reader import ReaderError, load_reader_stem, pretrain_reader
    from policies.pixel.vision import READER_STEMS

    r = _settings(args)
    size = r.pop("size", "pixel-small")
    if size not in SIZES:
        raise UserError(f"{'--model-size' if args.model_size else '[reader] size'} {size!r}: "
                        f"choose one of {', '.join(SIZES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    r.setdefault("channels", SIZES[size]["stem_channels"])
    r.setdefault("steps", 3000)
    r.setdefault("batch_size", 256)
    r.setdefault("fonts", DEFAULT_FONTS)
    share = float(r.pop("desktop_share", 0.5))
    tasks, bank, looks = r.pop("desktop_tasks", None), r.pop("bank", None), r.pop("desktop_looks", None)
    if r["steps"] < 1 or r["batch_size"] < 1 or r["channels"] < 1:
        raise UserError("steps, batch_size and channels must be at least 1")
    if r.get("stem") is not None and r["stem"] not in READER_STEMS:
        raise UserError(f"[reader] stem {r['stem']!r}: choose one of {', '.join(READER_STEMS)}")
    if not 0.0 <= share < 1.0:
        raise UserError("desktop_share must be at least 0 and below 1")
    if (bank or tasks) and share == 0:
        raise UserError("bank and desktop_tasks give the desktop_share tiles: with a share of 0 they would go unused")
    if bank and (tasks or looks):
        raise UserError("desktop_tasks and desktop_looks choose the virtual desktop's tiles: give them or a bank, not both")
    window, window_px = r.pop("window", None), r.pop("window_px", None)
    tile_pt = int(r.get("tile_pt", 64))
    if tile_pt < 8:
        raise UserError("[reader] tile_pt must be at least 8")
    if window is not None:
        if len(window) != 2 or (window_px is not None and len(window_px) != 2):
            raise UserError("window and window_px are [width, height]")
        if min(window) < tile_pt / 2:
            raise UserError(f"window {window}: a window holds its middle half-tile cell, so at least {tile_pt // 2} "
                            f"points each way for {tile_pt}-point tiles")
        window = (*window, *(window_px or window))
    elif window_px is not None:
        raise UserError("window_px needs window")
    for key in ("init", "teacher"):
        if r.get(key) is not None:
            try:
                load_reader_stem(r[key])
            except ReaderError as e:
                raise UserError(f"[reader] {key}: {e}") from None
    desktop = None
    if bank:
        from agent.desktops.miniwob.reading import bank_source

        desktop = bank_source(list(bank))
    elif share > 0:
        from agent.desktops.virtual.reading import desktop_tiles, look_choices

        try:
            looks = look_choices("classic" if looks is None else looks)
        except ValueError as e:
            raise UserError(f"[reader] desktop_{e} (or a list of them)") from None
        names = None
        if tasks:  # a task named twice is drawn twice as often
            try:
                names = [t for p in tasks for t in parse_virtual_tasks(p)]
            except UserError as e:
                raise UserError(f"[reader] desktop_tasks: {e}") from None
        desktop = functools.partial(desktop_tiles, tasks=names, looks=looks)
    r["time_budget_s"] = r.get("time_budget_s")
    try:
        summary = pretrain_reader(args.out, seed=args.seed, words=words(), device=args.device, desktop=desktop,
                                  desktop_share=share, window=window, log=(lambda s: None) if args.json else print, **r)
    except ReaderError as e:  # init or teacher does not fit what is asked
        raise UserError(str(e)) from None
    if args.json:
        print(json.dumps(summary))
    else:
        desk = summary.get("val_desktop_word_acc")
        agree = summary.get("val_agreement")
        print(f"saved a reader to {args.out}: {summary['steps']} steps, "
              f"word accuracy on held-out synthetic images {summary['val_word_acc']:.3f}"
              + (f", on held-out {'bank' if bank else 'virtual-desktop'} tiles {desk:.3f}" if desk is not None else "")
              + (f", naming the teacher's word on {agree:.3f} of held-out synthetic ones" if agree is not None else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("reader", help="pretrain the reader of a reader grounding (settings: a recipe's [reader])",
                       description="Pretrain a reader on synthetic UI text and the screens the policy will read. "
                                   "Settings come from the recipe's [reader] table (" + ", ".join(KEYS) + "); "
                                   "without a recipe, a pixel-small reader of 64-point tiles.")
    p.add_argument("--recipe", default=None, metavar="FILE", help="a recipe whose [reader] table holds the settings")
    p.add_argument("--out", required=True, help="folder to write (reader.safetensors, reader.json)")
    p.add_argument("--model-size", default=None, metavar="SIZE",
                   help="the reader's model size, over the recipe's [reader] size: pixel-tiny, pixel-small, "
                        "pixel-base or pixel-large (default: the recipe's, else pixel-small)")
    p.add_argument("--steps", type=int, default=None, help="over the recipe's (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)
