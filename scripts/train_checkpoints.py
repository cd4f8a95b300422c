"""Regenerate the bundled pixel-tiny and pixel-small checkpoints from the project's own demos.

Runs the same code as ``dw demos`` / ``dw train`` / ``dw eval`` (each command's own parser), then
copies each model into ``fixtures/checkpoints/<size>/`` (pixel-small stored in fp16 to stay small).

    python scripts/train_checkpoints.py                       # CPU: slow (hours on 2 cores)
    python scripts/train_checkpoints.py --device cuda --workers 14
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = ("640x480,800x600,1024x768,1280x720,1366x768,1440x900@1.5,1920x1080,1920x1200@1.25,2560x1440,"
         "2880x1800@2,3840x2160@1.5,5120x2880@2")


def dw(module, argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dw")
    module.register(p.add_subparsers())
    args = p.parse_args(argv)
    return int(args.func(args) or 0)


def export(run_dir: Path, dest: Path, fp16: bool) -> None:
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "training.json"):
        shutil.copy(run_dir / name, dest / name)
    tensors = load_file(str(run_dir / "model.safetensors"))
    if fp16:
        tensors = {k: v.half() for k, v in tensors.items()}
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--episodes", type=int, default=40, help="demo episodes per task and size")
    ap.add_argument("--epochs-tiny", type=int, default=30)
    ap.add_argument("--epochs-small", type=int, default=30)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--dest", default=str(ROOT / "fixtures" / "checkpoints"))
    ap.add_argument("--models", default="pixel-tiny,pixel-small")
    ap.add_argument("--eval-episodes", type=int, default=0, help="closed-loop check after training (0: skip)")
    a = ap.parse_args()
    from agent.commands import demos, train
    from agent.commands import eval as evaluate

    runs = Path(a.runs)
    t0 = time.time()
    dw(demos, ["demos", "--tasks", "all", "--episodes", str(a.episodes), "--sizes", SIZES, "--seed", "0",
               "--out", str(runs / "demos"), "--workers", str(a.workers), "--plain"])
    print(f"[{time.time() - t0:.0f}s] demos done", flush=True)
    for size in a.models.split(","):
        epochs = a.epochs_small if size == "pixel-small" else a.epochs_tiny
        dw(train, ["train", str(runs / "demos"), "--size", size, "--out", str(runs / size), "--epochs", str(epochs),
                   "--batch-size", "256", "--lr", "1e-3", "--device", a.device, "--seed", "0",
                   "--workers", str(a.workers), "--cache", str(runs / "cache")])
        export(runs / size, Path(a.dest) / size, fp16=(size == "pixel-small"))
        print(f"[{time.time() - t0:.0f}s] {size} trained and exported", flush=True)
    if a.eval_episodes:
        for size in a.models.split(","):
            dw(evaluate, ["eval", "--policy", str(Path(a.dest) / size), "--episodes", str(a.eval_episodes),
                          "--workers", str(a.workers)])
            print(f"[{time.time() - t0:.0f}s] {size} evaluated", flush=True)
    print(json.dumps({"seconds": round(time.time() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
