"""What this machine computes natively, and the arithmetic the pixel policy runs in: read once,
used by the runtime, the policy, the grounding and the trainer alike."""

from __future__ import annotations

import importlib.util
import os
from functools import cache

import torch


def env_switch(name: str, default: bool) -> bool:
    """An on/off setting from the environment: ``1``/``on``/``yes``/``true`` or ``0``/``off``/``no``/
    ``false`` (any case); ``default`` when unset or anything else."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in ("1", "on", "yes", "true") else False if value in ("0", "off", "no", "false") else default


def dtype_setting(dtype: str = "auto") -> str:
    """The dtype asked for: ``dtype``, or ``DW_PIXEL_DTYPE`` where ``dtype`` is ``auto``."""
    return os.environ.get("DW_PIXEL_DTYPE", "auto") if dtype == "auto" else dtype


@cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (from /proc/cpuinfo; empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def int8_matmuls() -> bool:
    """Whether the CPU multiplies int8 natively (VNNI or AMX): there ONNX Runtime's int8 matrix
    products take pixel-small's step from ~13 to ~9 ms (``dw bench policies``); without, they
    measured no faster than float32."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None



DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def inference_dtype(device: str | torch.device = "cpu", dtype: str = "auto") -> torch.dtype:
    """The dtype the policy runs in: ``float32``, ``bfloat16``, or ``auto``.

    ``auto`` (the default; ``DW_PIXEL_DTYPE`` overrides it) picks bfloat16 on CUDA and on CPUs
    with native bf16 arithmetic (AVX512-BF16 or AMX), where it makes pixel-small's forward pass
    about 1.5x faster; float32 elsewhere. Training runs under bf16 autocast, so the checkpoints
    are at home in either.
    """
    dtype = dtype_setting(dtype)
    if dtype == "auto":
        dev = torch.device(device)
        native = dev.type == "cuda" or (dev.type == "cpu" and cpu_has_native_bf16())
        return torch.bfloat16 if native else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]

