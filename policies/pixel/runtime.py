"""Which engine runs the pixel policy's per-frame step, and the ONNX Runtime one.

A step is small (pixel-tiny: ~1M parameters, ~70 tokens at batch 1), so on a CPU its cost is
mostly per-operator overhead, not arithmetic. ONNX Runtime runs the same graph with far less of
it: pixel-tiny's forward pass takes ~1.8 ms there against ~3.7 ms in eager PyTorch (float32) on
this project's 2-core reference box. The graph is exported from the loaded model when the policy
is built, so a checkpoint stays a plain transformers folder; for a model loaded from a checkpoint
folder the exported (and quantized) graph is cached on disk (:func:`onnx_cache_dir`), keyed by
what went into it (:func:`export_key`), so the next start skips the export (about 2 s of
pixel-small's start on a 2-core CPU). Only the step runs here; the instruction is still encoded once per episode by
PyTorch, and its per-layer keys and values are fed to every step. A reading model's reader runs
outside the step, in a session of its own, on the tiles it has not read yet
(:mod:`policies.pixel.reads`).

``auto`` (the default; ``DW_PIXEL_RUNTIME`` overrides it) picks ONNX Runtime on a CPU for the
small sizes (hidden size up to 256: pixel-tiny, pixel-small) when it is installed and no dtype was
asked for, and PyTorch otherwise: on CUDA, for an explicit dtype, and for pixel-base and
pixel-large, whose forward pass is arithmetic-bound and runs faster in PyTorch's bfloat16.

With no dtype asked for, the ONNX step's matrix products run in int8 where the CPU multiplies
int8 natively (:func:`int8_matmuls`; the weights are quantized per channel when the session is
built, the activations per run); a reading model's reader runs its convolutions in int8 there too
(a ReLU reader: :class:`policies.pixel.reads.Int8Reads`) and its head in torch's bfloat16 where the
CPU has it natively. Closed-loop success was measured level with float32 (docs/policies.md);
``dtype="float32"`` (or ``DW_PIXEL_DTYPE=float32``) keeps every part in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import io
import itertools
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from policies.pixel.grounding import TextCache, grounding_class
from policies.pixel.hardware import dtype_setting, env_switch, onnx_available
from policies.pixel.modeling import PixelModel, PixelOutput
from policies.pixel.words import word_templates

RUNTIMES = ("auto", "torch", "onnx")
ONNX_MAX_HIDDEN = 256  # auto picks ONNX Runtime up to this hidden size (dw bench policies measures why)
STEP_INPUTS = ("global_view", "glimpses", "boxes", "glimpse_mask", "screen", "cursor", "history_types",
               "history_points")
TRAINING_OUTPUTS = ("aux", "loss", "loss_parts")  # None outside training: not outputs of the step
OUTPUTS = tuple(f.name for f in dataclasses.fields(PixelOutput) if f.name not in TRAINING_OUTPUTS)
OPSET = 17
# Part of every cache key (export_key). The key already holds the weights, the configs, the
# source of every module in the graph and of this package, and the torch, onnx and onnxruntime
# versions; bump this when an export changes in a way none of those shows.
EXPORT_VERSION = 1
CACHE_ENTRIES = 16  # exported graphs kept in the cache; the least recently used go first


def choose_runtime(device: str | torch.device = "cpu", runtime: str = "auto", dtype: str = "auto",
                   hidden_size: int = 0) -> str:
    """``torch`` or ``onnx`` for a model of ``hidden_size`` on ``device``; see the module docstring."""
    if runtime == "auto":
        runtime = os.environ.get("DW_PIXEL_RUNTIME", "auto")
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    cpu = torch.device(device).type == "cpu"
    if runtime == "auto":
        dtype_asked = dtype_setting(dtype) != "auto"
        small = hidden_size <= ONNX_MAX_HIDDEN
        return "onnx" if cpu and small and onnx_available() and not dtype_asked else "torch"
    if runtime == "onnx" and not cpu:
        raise ValueError("the onnx runtime runs on the CPU; use the torch runtime on CUDA")
    return runtime


def core_inputs(config) -> tuple[str, ...]:
    """The core's per-frame inputs: :data:`STEP_INPUTS`, and ``recent`` for a model that sees
    recent video (``config.recent``)."""
    return STEP_INPUTS + (("recent",) if config.recent else ())


def step_inputs(config) -> tuple[str, ...]:
    """The per-frame inputs of a model with ``config`` (training arrays): the core's, then its
    grounding's (a reader's or a template's read windows)."""
    return core_inputs(config) + grounding_class(config.grounding).step_inputs


def run_inputs(config) -> tuple[str, ...]:
    """The inputs of the step a policy runs: the core's, then its grounding's, made outside the
    step (a reader's probabilities, each distinct window read once: :class:`policies.pixel.reads.TileReads`;
    a template grounding's matches: :class:`policies.pixel.templates.DrawnReads`)."""
    return core_inputs(config) + grounding_class(config.grounding).run_inputs


def onnx_cache_dir() -> Path | None:
    """Where exported graphs are cached: ``onnx`` in the project's user cache folder (the one the
    encoder probes and ``dw train``'s samples use: ``$DW_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/digital-worker``, else ``~/.cache/digital-worker`` on Linux); None (no cache)
    when ``DW_ONNX_CACHE`` is ``0``, ``off`` or ``no``."""
    if not env_switch("DW_ONNX_CACHE", True):
        return None
    # encoders.ladder.cache_dir's rule (the layers keep policies from importing encoders)
    import platformdirs

    return Path(os.environ.get("DW_CACHE_DIR") or platformdirs.user_cache_dir("digital-worker")) / "onnx"


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int, size: int) -> bytes:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def _code_digest(module: nn.Module) -> bytes:
    """The source the graph is traced from: this package's modules and the file of every module
    class inside ``module`` (a wrapper defined elsewhere, such as the fleet's batch step)."""
    files = {str(f) for f in Path(__file__).parent.glob("*.py")}
    for m in module.modules():
        if type(m).__module__.split(".")[0] == "torch":  # torch's own layers: its version is in the key
            continue
        try:
            f = inspect.getsourcefile(type(m))
        except TypeError:  # a built-in class
            f = None
        if f:
            files.add(f)
    h = hashlib.sha256()
    for f in sorted(files):
        st = os.stat(f)
        h.update(f.encode() + b"\0" + _file_digest(f, st.st_mtime_ns, st.st_size))
    return h.digest()


def export_key(module: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
               dynamic_axes: dict, int8: bool) -> str:
    """The cache key of a graph: sha256 of everything its export depends on. The weights and
    buffers as loaded (so a changed checkpoint, or a model changed after loading, is a new key),
    every config in ``module`` (a ``transformers`` config's JSON, its folder left out), the module
    tree, the example inputs, the names and axes, the int8 flag, :data:`EXPORT_VERSION`, the source
    (:func:`_code_digest`) and the torch, onnx and onnxruntime versions."""
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime as ort

    try:
        onnx_version = version("onnx")  # not `import onnx`: most of a second, and a cache hit needs none of it
    except PackageNotFoundError:
        onnx_version = None
    h = hashlib.sha256()

    def put(*parts) -> None:
        for part in parts:
            b = part if isinstance(part, bytes | memoryview) else str(part).encode()
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)

    def put_tensor(name: str, t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        put(name, t.dtype, tuple(t.shape))
        put(t.reshape(-1).view(torch.uint8).numpy().data)

    put(EXPORT_VERSION, OPSET, torch.__version__, onnx_version, ort.__version__, int8, input_names,
        output_names, json.dumps(dynamic_axes, sort_keys=True, default=str), _code_digest(module),
        module, module.training)
    for m in module.modules():
        cfg = getattr(m, "config", None)
        if hasattr(cfg, "to_dict"):
            d = cfg.to_dict()
            d.pop("_name_or_path", None)
            put(type(m).__qualname__, json.dumps(d, sort_keys=True, default=str))
    for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
        put_tensor(name, t)
    for i, t in enumerate(example):
        put_tensor(f"example{i}", t)
    return h.hexdigest()


def _cache_read(path: Path) -> bytes | None:
    """The graph cached at ``path``, or None: missing, unreadable, or not what was written (each
    entry ends with the sha256 of the graph before it, so a damaged file is never served)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    graph, digest = data[:-32], data[-32:]
    if len(data) <= 32 or hashlib.sha256(graph).digest() != digest:
        return None
    try:
        os.utime(path)  # recently used: kept longest
    except OSError:  # a cache this user may read but not touch
        pass
    return graph


def _cache_write(path: Path, graph: bytes) -> None:
    """Write ``graph`` (and its sha256) atomically, a temporary file renamed into place, then drop
    the least recently used entries past :data:`CACHE_ENTRIES`. A cache that cannot be written is
    skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(graph)
                f.write(hashlib.sha256(graph).digest())
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return

    def used(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # gone: another process pruned it
            return float("inf")

    try:
        for old in sorted(path.parent.glob("*.onnx"), key=used, reverse=True)[CACHE_ENTRIES:]:
            old.unlink(missing_ok=True)
        for stale in path.parent.glob(".tmp-*.part"):  # left by a writer that was killed, an hour ago or more
            if time.time() - used(stale) > 3600:
                stale.unlink(missing_ok=True)
    except OSError:
        pass


def _export(module: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
            dynamic_axes: dict, int8: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        torch.onnx.export(module, example, buf, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    graph = buf.getvalue()
    return _int8_matmuls(graph) if int8 else graph


def onnx_session(module: nn.Module, example: tuple, input_names: list[str], output_names: list[str],
                 dynamic_axes: dict, int8: bool = False, cache: bool = False):
    """An ONNX Runtime session (CPU) of ``module``, exported in memory from a trace on ``example``,
    with torch's thread count. ``int8``: its matrix products with constant weights in int8 (weights
    quantized once, activations per run: ONNX Runtime's dynamic quantization). ``cache``: look the
    graph up in (and store it into) :func:`onnx_cache_dir` under :func:`export_key`; a cached file
    ONNX Runtime cannot load is exported afresh."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("the onnx runtime needs the onnxruntime package (pip install onnxruntime)") from None
    folder = onnx_cache_dir() if cache else None
    path = graph = None
    if folder is not None:
        path = folder / f"{export_key(module, example, input_names, output_names, dynamic_axes, int8)}.onnx"
        graph = _cache_read(path)
        if graph is not None:
            try:
                return _session(ort, graph)
            except Exception:  # a damaged file: export again, and replace it
                graph = None
    graph = _export(module, example, input_names, output_names, dynamic_axes, int8)
    if path is not None:
        _cache_write(path, graph)
    return _session(ort, graph)


def _session(ort, graph: bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No spin-waiting after a run: idle ORT threads would compete with the next frame's
    # OpenCV preprocessing threads for the same cores (measured slower per step on 2 cores).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])


def _int8_matmuls(graph: bytes) -> bytes:
    """``graph`` (ONNX bytes) with its MatMul and Gemm weights in int8, per output channel."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer's advice on preprocessing, on the root logger
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "int8.onnx")  # the quantizer writes only to a file
            quantize_dynamic(onnx.load_from_string(graph), out, per_channel=True, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"])
            with open(out, "rb") as f:
                return f.read()
    finally:
        logging.disable(quiet)


class _FlatStep(nn.Module):
    """The step as a function of flat tensors (the text cache spread into its parts), for export."""

    def __init__(self, model: PixelModel):
        super().__init__()
        self.model = model
        self.inputs = run_inputs(model.config)

    def forward(self, *args: torch.Tensor):
        n = len(self.inputs)
        inputs = dict(zip(self.inputs, args[:n], strict=True))
        cache = TextCache.from_parts(args[n:], words=bool(self.model.grounding.text_inputs))
        out = self.model(**inputs, text_cache=cache)
        return tuple(getattr(out, k) for k in OUTPUTS)


class OnnxStep:
    """One pixel model's step (batch 1) in an ONNX Runtime session: float32, or with ``int8``
    matrix products (:func:`onnx_session`; ``cache``: its graph cached on disk)."""

    def __init__(self, model: PixelModel, int8: bool = False, cache: bool = False):
        c = model.config
        n_layers = len(model.layers)
        k, g, d = c.max_glimpses, c.glimpse_px, c.hidden_size
        heads = c.num_heads
        example = (
            torch.zeros(1, c.global_h, c.global_w, 3, dtype=torch.uint8),
            torch.zeros(1, k, g, g, 3, dtype=torch.uint8),
            torch.zeros(1, k, 4),
            torch.ones(1, k, dtype=torch.bool),
            torch.zeros(1, 4),
            torch.zeros(1, 3),
            torch.zeros(1, c.history, dtype=torch.long),
            torch.zeros(1, c.history, 3),
        )
        if c.recent:
            example += (torch.zeros(1, len(c.recent), c.global_h, c.global_w, 3, dtype=torch.uint8),)
        extra, extra_axes = model.grounding.example_inputs(k)
        example += tuple(extra.values())
        words = word_templates(torch.tensor([[65, 32]])) if model.grounding.text_inputs else (None, None)
        text = TextCache([(torch.zeros(1, heads, 2, d // heads),) * 2 for _ in range(n_layers)], torch.zeros(1, 2, d),
                         torch.zeros(1, 2, d), torch.ones(1, 2, dtype=torch.bool), *words)
        example += tuple(text.parts())
        self.text_names = text.part_names()
        names = list(run_inputs(c)) + self.text_names
        text_len = {n: {axis: "text"} for n, axis in text.text_axes().items()} | extra_axes
        self.session = onnx_session(_FlatStep(model.float().eval()), example, names,
                                    [f"out_{k}" for k in OUTPUTS], text_len, int8=int8, cache=cache)
        self.used = {i.name for i in self.session.get_inputs()}  # the exporter drops unused inputs
        self._text: dict[str, np.ndarray] = {}

    def set_text(self, cache: TextCache) -> None:
        """Feed this instruction's cached keys/values to every following step."""
        self._text = {n: t.detach().float().numpy() if t.is_floating_point() else t.numpy()
                      for n, t in zip(self.text_names, cache.parts(), strict=True) if n in self.used}

    def __call__(self, arrays: dict[str, np.ndarray]) -> PixelOutput:
        feed = {n: a for n, a in arrays.items() if n in self.used}
        feed.update(self._text)
        out = self.session.run(None, feed)
        return PixelOutput(**{k: torch.from_numpy(v) for k, v in zip(OUTPUTS, out, strict=True)})
