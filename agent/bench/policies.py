"""Policy latency: per pixel-model size and runtime (PyTorch; ONNX Runtime on a CPU), parameters,
preprocessing from 1920x1080 and 5120x2880 frames, the forward pass and one whole step, p50/p95
at batch 1 with threads = cores.

A size with a bundled checkpoint is measured as bundled (its own settings: a reading model reads);
the others with their size's default settings and random weights; another bundled checkpoint or a
checkpoint folder (``dw train``'s) as it is (``weights`` says which)."""

from __future__ import annotations

import os
import time

import numpy as np

from agent.errors import UserError
from agent.stats import percentiles


def _frame(w: int, h: int, scale: float):
    from capture import Frame, Screen

    rng = np.random.default_rng(0)
    px = np.empty((h, w, 4), np.uint8)
    px[:] = np.linspace(60, 140, h, dtype=np.uint8)[:, None, None]
    for _ in range(40):  # windows, buttons and text-like noise
        bw, bh = int(rng.integers(60, 300) * scale), int(rng.integers(20, 120) * scale)
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        px[y:y + bh, x:x + bw] = rng.integers(0, 255, (bh, bw, 4), dtype=np.uint8)
    return Frame(px, 0.0, 0, Screen(w, h, scale=scale))


def act_latency(pol, obs, n: int, warmup: int = 3, cuda: bool = False, cold: bool = True) -> dict:
    """p50/p95 of one policy step, ``pol.act(obs)`` (preprocessing + forward + decoding), over
    ``n`` timed steps after ``warmup`` untimed ones. ``cold``: a reading model reads every tile
    afresh each step, as on a screen that changed all over; otherwise the tiles it read on the
    last step are remembered (the screen did not change)."""
    import torch

    ts = []
    for i in range(n + warmup):
        t0 = time.perf_counter_ns()
        if cold:
            _forget(pol)
        pol.act(obs)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            ts.append(time.perf_counter_ns() - t0)
    return percentiles(ts)


def _forget(pol) -> None:
    """A reading policy forgets the tiles it has read (its next step reads them all)."""
    if getattr(pol, "reads", None) is not None:
        pol.reads.clear()


def run(policies=None, device: str = "cpu", quick: bool = False) -> dict:
    """``policies``: model sizes (``pixel-tiny``, ...; default all), bundled checkpoints by name or
    checkpoint folders (``dw train``'s)."""
    import cv2
    import torch

    from policies.checkpoints import has_checkpoint
    from policies.pixel import SIZES
    from policies.pixel.hardware import onnx_available

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    sizes = list(policies or SIZES)
    unknown = [s for s in sizes if s not in SIZES and not has_checkpoint(s)]
    if unknown:
        raise UserError(f"--policies: unknown model size {unknown[0]!r} and no checkpoint there; "
                        f"choose from {', '.join(SIZES)}, a bundled checkpoint or a folder dw train wrote")
    n = 10 if quick else 60
    frames = {"1920x1080": _frame(1920, 1080, 1.0), "5120x2880@2": _frame(5120, 2880, 2.0)}
    out = {"device": device, "threads": threads, "iterations": n, "models": {}}
    runtimes = ["torch"] if device.startswith("cuda") else ["onnx", "torch"]
    if not onnx_available():
        runtimes.remove("onnx")
    for name in sizes:
        for runtime in runtimes:
            out["models"][f"{name}/{runtime}"] = _row(name, runtime, device, frames, n)
    return out


def _row(name: str, runtime: str, device: str, frames: dict, n: int) -> dict:
    """One model size in one runtime: preprocessing per frame size, forward pass, whole step."""
    import torch

    from policies.base import Observation
    from policies.checkpoints import BUNDLED, has_checkpoint
    from policies.pixel import PixelConfig, PixelModel, PixelPolicy, load_model

    torch.manual_seed(0)
    bundled = has_checkpoint(name)
    model = load_model(name, device) if bundled else PixelModel(PixelConfig.for_size(name)).to(device).eval()
    pol = PixelPolicy(model, name=name, device=device, runtime=runtime)
    pol.reset('Click the "OK" button.')
    row = {"size": name, "runtime": runtime, "parameters": sum(p.numel() for p in model.parameters()),
           "dtype": str(pol.dtype).removeprefix("torch."), "precision": pol.precision, "weights": ("bundled" if name in BUNDLED else "checkpoint") if bundled else "random",
           "reads": model.config.grounding is not None}
    cuda = device.startswith("cuda")

    def timed(fn) -> dict:
        ts = []
        for i in range(n + 3):
            t0 = time.perf_counter_ns()
            fn()
            if cuda:
                torch.cuda.synchronize()
            if i >= 3:
                ts.append(time.perf_counter_ns() - t0)
        return percentiles(ts)

    for label, f in frames.items():
        row[f"preprocess_{label}"] = timed(lambda f=f: pol.pre(f))
    obs = Observation(frames["1920x1080"], pol.instruction, (0.5, 0.5), ())
    arrays = pol.arrays(obs)
    row["forward"] = timed(lambda: (_forget(pol), pol.run(arrays)))  # a reading model reads every tile
    row["act_1920x1080"] = act_latency(pol, obs, n, cuda=cuda)
    if model.config.grounding is not None:  # the same frame again: every window already read
        row["act_1920x1080_unchanged"] = act_latency(pol, obs, n, cuda=cuda, cold=False)
    return row


def table(result: dict):
    from rich.table import Table

    t = Table(title=f"policy latency, batch 1, {result['device']}, {result['threads']} threads (ms p50 / p95)")
    for c in ("model", "weights", "runtime", "params", "dtype", "preprocess 1920x1080", "preprocess 5120x2880@2", "forward",
              "act 1920x1080", "act, unchanged screen"):
        t.add_column(c, justify="right" if c != "model" else "left")

    def f(s: dict) -> str:
        return f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f}"

    for r in result["models"].values():
        weights = r.get("weights", "") + (", reads" if r.get("reads") else "")
        t.add_row(r["size"], weights, r["runtime"], f"{r['parameters'] / 1e6:.1f}M", r.get("dtype", ""), f(r["preprocess_1920x1080"]), f(r["preprocess_5120x2880@2"]),
                  f(r["forward"]), f(r["act_1920x1080"]),
                  f(r["act_1920x1080_unchanged"]) if "act_1920x1080_unchanged" in r else "-")
    return t
