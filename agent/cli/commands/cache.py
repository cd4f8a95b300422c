"""``dw cache [DIR]``: the size of a ``dw train`` sample cache, and pruning it."""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.util import print_json
from agent.errors import UserError


def run(args: argparse.Namespace) -> int:
    from agent.training.dataset import default_cache_dir, prune_cache

    d = Path(args.dir) if args.dir else default_cache_dir()
    if args.dir and not d.is_dir():
        raise UserError(f"{d}: no such folder")
    if args.max_gb is not None and args.max_gb < 0:
        raise UserError("--max-gb must be 0 or more")
    cap = float("inf") if args.max_gb is None else args.max_gb * 1e9
    r = prune_cache(d, cap, dry_run=args.dry_run)  # the default folder before any run: empty
    if args.json:
        print_json({"dir": str(d), "dry_run": args.dry_run, **r})
        return 0
    gone = "would remove" if args.dry_run else "removed"
    print(f"{d}: {r['files']} files, {r['bytes'] / 1e9:.2f} GB", end="")
    print(f"; {gone} {r['removed_files']} least recently used ({r['removed_bytes'] / 1e9:.2f} GB)"
          if args.max_gb is not None else "")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show or prune the `dw train` sample cache (least recently used first)")
    p.add_argument("dir", metavar="DIR", nargs="?", default=None,
                   help="the cache folder (default: dw train's: $DW_CACHE_DIR/samples, else "
                        "~/.cache/digital-worker/samples on Linux, under $XDG_CACHE_HOME if set)")
    p.add_argument("--max-gb", type=float, default=None, metavar="GB",
                   help="delete the least recently used files until the folder holds at most this much "
                        "(default: delete nothing)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing (default: off)")
    p.add_argument("--json", action="store_true", help="print one JSON document (default: off)")
    p.set_defaults(func=run)
