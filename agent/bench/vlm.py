"""``dw bench vlm``: one policy step of a vision-language computer-use model (hf-vlm), per shape.

Qwen2-VL architectures built from their configs with random weights (nothing is downloaded; see
:mod:`policies.hf_vlm`), on a realistic 1920x1080 desktop frame: ``preprocess`` (resize, patches,
prompt), ``generate`` (prefill + greedy decoding of exactly ``tokens`` new tokens — a UI-TARS
action such as ``click(start_box='(512,384)')`` is ~15-25 tokens) and the whole ``step``.

Default shapes: on CPU ``qwen2-vl-tiny`` and ``qwen2-vl-small`` (the 2B shape does not fit this
benchmark's time budget on a 2-core CPU: ask for it with ``--policies hf-vlm:qwen2-vl-2b``); on
CUDA also ``qwen2-vl-2b`` and ``qwen2-vl-7b`` (bf16).
"""

from __future__ import annotations

import time

from agent.stats import percentiles

CPU_SHAPES = ["qwen2-vl-tiny", "qwen2-vl-small"]
CUDA_SHAPES = ["qwen2-vl-tiny", "qwen2-vl-small", "qwen2-vl-2b", "qwen2-vl-7b"]
MAX_PIXELS = 1280 * 28 * 28  # a common UI-TARS / Qwen2-VL serving setting: 1920x1080 -> 1316x728
TOKENS = 20


def run(policies=None, device: str = "cpu", quick: bool = False) -> dict:
    import torch

    from agent.bench.live import desktop_content
    from capture import Frame, Screen
    from policies.base import Observation
    from policies.hf_vlm import SHAPES, HFVLMPolicy, build_random

    shapes = [p.removeprefix("hf-vlm:") for p in policies or [] if p.removeprefix("hf-vlm:") in SHAPES]
    shapes = shapes or (CUDA_SHAPES if device.startswith("cuda") else CPU_SHAPES)
    reps = 1 if quick else 3
    frame = Frame(desktop_content(1920, 1080, 1.0), 0.0, 0, Screen(1920, 1080))
    obs = Observation(frame, "Open the Reports folder")
    rows = []
    for shape in shapes:
        try:
            t0 = time.perf_counter()
            dtype = torch.bfloat16 if device.startswith("cuda") else None
            model, proc = build_random(shape, dtype=dtype)
            params = sum(p.numel() for p in model.parameters())
            build_s = time.perf_counter() - t0
            pol = HFVLMPolicy(model, proc, name=shape, max_new_tokens=TOKENS, min_new_tokens=TOKENS,
                              max_pixels=MAX_PIXELS, device=device, on_parse_error="skip")
            pol.reset(obs.instruction)
            pol.act(obs)  # warm-up
            t: dict[str, list[int]] = {"preprocess": [], "generate": [], "step": []}
            for _ in range(reps):
                a = time.perf_counter_ns()
                pol.act(obs)
                t["step"].append(time.perf_counter_ns() - a)
                t["preprocess"].append(pol.timings["preprocess"])
                t["generate"].append(pol.timings["generate"])
            w, h = pol.last_image_size
            rows.append({"shape": shape, "params": params, "device": device, "image": f"{w}x{h}",
                         "input_tokens": pol.timings["input_tokens"], "new_tokens": pol.timings["new_tokens"],
                         "build_seconds": round(build_s, 1), **{k: percentiles(v) for k, v in t.items()},
                         "parsed": not pol.last_error})
            del model, pol
        except Exception as e:  # e.g. out of memory: report and go on
            rows.append({"shape": shape, "device": device, "error": f"{type(e).__name__}: {e}"[:300]})
    return {"rows": rows, "max_pixels": MAX_PIXELS, "tokens": TOKENS,
            "note": "random weights (latency only); frame 1920x1080 resized within max_pixels"}


def table(result: dict):
    from rich.table import Table

    t = Table(title="VLM policy step on a 1920x1080 frame (ms, p50 / p95)")
    for c in ("shape", "params", "device", "image", "tokens in/out", "preprocess", "generate", "step"):
        t.add_column(c, justify="left" if c in ("shape", "device") else "right")
    for r in result["rows"]:
        if "error" in r:
            t.add_row(r["shape"], "", r["device"], f"[red]{r['error'][:80]}")
            continue
        t.add_row(r["shape"], f"{r['params'] / 1e6:.0f}M", r["device"], r["image"],
                  f"{r['input_tokens']}/{r['new_tokens']}",
                  *[f"{r[k]['p50_ms']:.0f} / {r[k]['p95_ms']:.0f}" for k in ("preprocess", "generate", "step")])
    return t
