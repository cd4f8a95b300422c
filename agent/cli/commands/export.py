"""``dw export``: sessions to a Hugging Face ``datasets`` dataset or the LeRobot layout;
``dw import``: such an export back to sessions (which ``dw train`` and every other command read).

The formats are :mod:`agent.sessions.export`'s.
"""

from __future__ import annotations

import argparse
import sys

from agent.cli.util import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="sessions to a Hugging Face datasets dataset or a LeRobot dataset",
                       description="Export sessions, one row per frame: the frame, its session time, the "
                                   "instruction, the actions issued at it (JSON, normalised coordinates), "
                                   "every event, and the screen geometry and scale. --format hf writes "
                                   "datasets.save_to_disk (load with datasets.load_from_disk(DIR)); --format "
                                   "lerobot writes the LeRobot v3.0 layout (parquet + mp4 + meta/).")
    p.add_argument("sessions", nargs="+", metavar="SESSION",
                   help="session directory, or a folder searched for sessions (several allowed)")
    p.add_argument("--format", choices=("hf", "lerobot"), default="hf", help="dataset format")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the dataset")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="a `dw export` dataset (hf or lerobot) back to sessions, e.g. for dw train",
                       description="Write every episode of a `dw export` dataset (either format, found by its "
                                   "files) as an ordinary session under --out.")
    p.add_argument("dataset", metavar="DATASET", help="the exported dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the sessions")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON document")
    p.set_defaults(func=cmd_import)


def _progress(desc: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, leave=False)


def cmd_export(args) -> int:
    from agent.sessions.export import export_sessions
    from agent.sessions.format import find_sessions

    paths = find_sessions(args.sessions)
    with _progress(f"export {args.format}") as bar:
        out = export_sessions(paths, args.out, args.format, progress=bar.update)
    if args.json:
        print_json(out)
    else:
        print(f"dw export: {out['episodes']} sessions, {out['frames']} frames, {out['events']} events "
              f"-> {out['out']} ({args.format})", file=sys.stderr)
    return 0


def cmd_import(args) -> int:
    from agent.sessions.export import import_dataset

    with _progress("import") as bar:
        written = import_dataset(args.dataset, args.out, progress=bar.update)
    out = {"dataset": args.dataset, "sessions": [str(p) for p in written]}
    if args.json:
        print_json(out)
    else:
        print(f"dw import: {len(written)} sessions -> {args.out}", file=sys.stderr)
    return 0
