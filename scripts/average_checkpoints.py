"""Average two checkpoints of one architecture, weight by weight (WiSE-FT: Wortsman et al., 2022,
"Robust fine-tuning of zero-shot models"): a fine-tuned model averaged with the one it started
from often keeps the gains of the fine-tuning and loses less of what the start knew.

    python scripts/average_checkpoints.py BEFORE AFTER OUT [--weight 0.5] [--float16]

``OUT`` gets ``(1 - weight) * BEFORE + weight * AFTER`` for every floating-point tensor (integer
buffers must be equal) but a reader grounding's frozen reader, which is AFTER's (it learnt with it;
a reader swapped in before training), and AFTER's config.json and training.json, with the average recorded in
training.json under ``"average"``. Key combos AFTER's training appended to its keys are AFTER's rows
in the average (BEFORE had none). BEFORE and AFTER: checkpoint folders or bundled names.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from policies.pixel import checkpoint_dir
from policies.pixel.reader import READER_PREFIX
from policies.pixel.training import KEY_HEAD


def average(before: Path, after: Path, out: Path, weight: float, float16: bool) -> None:
    a, b = load_file(before / "model.safetensors"), load_file(after / "model.safetensors")
    for k in KEY_HEAD:  # AFTER's key head grown by combos its sessions pressed: those rows are AFTER's own
        if k in a and k in b and a[k].shape[0] < b[k].shape[0] and a[k].shape[1:] == b[k].shape[1:]:
            a[k] = torch.cat([a[k].to(b[k].dtype), b[k][a[k].shape[0]:]])
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in b):
        raise SystemExit(f"{before} and {after} are not the same architecture (their tensors differ)")
    mixed = {}
    for k, t in b.items():
        if k.startswith(READER_PREFIX):  # frozen in training: AFTER learnt with its own reader (a swapped one, say)
            mixed[k] = t
        elif t.is_floating_point():
            m = (1 - weight) * a[k].float() + weight * t.float()
            mixed[k] = m.half() if float16 else m
        elif torch.equal(a[k], t):
            mixed[k] = t
        else:
            raise SystemExit(f"{k}: an integer buffer differs between {before} and {after}; not averaged")
    out.mkdir(parents=True, exist_ok=True)
    save_file(mixed, out / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(after / "config.json", out / "config.json")
    info = json.loads((after / "training.json").read_text()) if (after / "training.json").is_file() else {}
    info["average"] = {"before": str(before), "after": str(after), "weight_of_after": weight, "float16": float16}
    (out / "training.json").write_text(json.dumps(info, indent=2))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("out")
    p.add_argument("--weight", type=float, default=0.5, help="AFTER's share, 0..1 (default 0.5)")
    p.add_argument("--float16", action="store_true", help="store the average in float16")
    args = p.parse_args(argv)
    if not 0.0 <= args.weight <= 1.0:
        p.error("--weight must lie in 0..1")
    average(checkpoint_dir(args.before), checkpoint_dir(args.after), Path(args.out), args.weight, args.float16)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
