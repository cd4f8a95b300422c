"""``dw bench [PART]``: latency per stage, p50/p95, measured on this machine.

Each part lives in ``agent.bench.<part>`` with ``run(**options) -> dict`` and ``table(result)``.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import time

from agent.cli.util import console, parse_sizes, print_json
from agent.errors import UserError

PARTS = ("capture", "encoders", "pipeline", "policies", "stream", "loop", "baseline", "vlm", "scaleout", "fleet")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark latency per stage (p50/p95): " + ", ".join(PARTS) + ", or all")
    p.add_argument("part", nargs="?", default="all", choices=("all",) + PARTS)
    p.add_argument("--sizes", default=None, help="WxH[@scale],... (each part has its own default)")
    p.add_argument("--policies", "--policy", default=None,
                   help="policy names, comma list (loop, baseline and fleet parts; model sizes, bundled checkpoints or checkpoint folders for the policies part)")
    p.add_argument("--workers", type=int, default=None,
                   help="fleet: workers in the reported run (default 32; workers_at_10hz is searched from it)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (policies, fleet)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="write a PNG of latency per model size (pixel sizes and VLM shapes)")
    p.set_defaults(func=run)


def _machine() -> dict:
    out = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        out["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import torch

        from agent.bench import reference_ms

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
        out["reference_ms"] = reference_ms()  # this machine's speed right now (a fixed product)
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def _check_plot_folder(plot: str) -> None:
    """``--plot``'s folder exists (or can be made) and is writable, or a one-line UserError."""
    from pathlib import Path

    folder = Path(plot).absolute().parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"--plot {plot}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--plot {plot}: {existing} is not writable")


def run(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.sizes) if args.sizes else None
    policies = [p.strip() for p in args.policies.split(",") if p.strip()] if args.policies else None
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: at least 1")
    options = {"sizes": sizes, "policies": policies, "device": args.device, "quick": args.quick,
               "fleet_workers": args.workers}
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UserError(f"--plot {args.plot}: the plot is a PNG; give a FILE.png")
    if args.plot:  # before the benchmarks run, not after
        _check_plot_folder(args.plot)
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise UserError(f"--device {args.device}: expected cpu or cuda")
    parts = PARTS if args.part == "all" else (args.part,)
    t_all = time.perf_counter()
    doc: dict = {"machine": _machine(), "parts": {}}
    c = console()
    for part in parts:
        try:
            mod = importlib.import_module(f"agent.bench.{part}")
        except ModuleNotFoundError:
            if args.part != "all":
                raise UserError(f"the {part} benchmark is not available in this build") from None
            doc["parts"][part] = {"skipped": "not available in this build"}
            continue
        accepted = inspect.signature(mod.run).parameters
        kwargs = {k: v for k, v in options.items() if k in accepted}
        if "sizes" in kwargs and sizes is not None and "scale" not in str(accepted["sizes"].annotation).lower():
            kwargs["sizes"] = [(w, h) for w, h, _ in sizes]
        t0 = time.perf_counter()
        result = mod.run(**kwargs)
        result["wall_seconds"] = round(time.perf_counter() - t0, 2)
        doc["parts"][part] = result
        if not args.json:
            c.print(mod.table(result))
    doc["wall_seconds"] = round(time.perf_counter() - t_all, 2)
    if args.plot:
        from agent.bench.plot import plot

        doc["plot"] = str(plot(doc, args.plot))
        if not args.json:
            c.print(f"plot: {doc['plot']}")
    if args.json:
        print_json(doc)
    return 0
