"""PixelPolicy: the Policy protocol around a :class:`PixelModel` (deterministic, argmax)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from policies.actions import Action, Click, MouseDown, MouseUp, Move, Scroll
from policies.base import Observation
from policies.pixel.codec import decode, history_features
from policies.pixel.grounding import ReaderGrounding, TemplateGrounding
from policies.pixel.hardware import (
    cpu_has_native_bf16,
    dtype_setting,
    env_switch,
    inference_dtype,
    int8_matmuls,
)
from policies.pixel.modeling import PixelModel, PixelOutput
from policies.pixel.processing import Preprocessor, RecentViews, encode_text
from policies.pixel.reads import Int8Reads, TileReads
from policies.pixel.runtime import OnnxStep, choose_runtime
from policies.pixel.templates import DrawnReads


class PixelPolicy:
    """Runs the pixel transformer on each frame and returns at most one action.

    The instruction is encoded once per episode (its per-layer keys and values are cached);
    each frame costs one preprocessing pass and one forward pass, except a frame that says nothing
    changed since the previous one (the incremental capture's ``changed``, :meth:`Preprocessor.still`)
    seen with the same instruction, cursor and history: the model's inputs are then the previous
    step's and, the policy being deterministic, so are its actions, returned without a pass. A
    model that sees recent video (``config.recent``) keeps the global views of the frames it acted
    on (:class:`~policies.pixel.processing.RecentViews`, cleared by :meth:`reset`); its shortcut
    also needs the same past views. It never reads the observation's ``oracle``. ``runtime`` picks the engine of that forward pass:
    :func:`policies.pixel.runtime.choose_runtime` (ONNX Runtime on a CPU for the small sizes).

    ``second_look`` (default: the environment's ``DW_PIXEL_SECOND_LOOK=1``, else off): a step whose
    action points at one place is run again on the same frame with the glimpse tile grid shifted
    so that place sits at a tile's centre, and the point comes from that pass. The offset a token
    gives inside its tile is least precise near the tile's border (a form field whose centre lies
    on it); a pointing step costs two passes. A retried workflow step (:meth:`retry`) looks again
    differently until the next :meth:`reset`: a pass centred on its own miss tends to repeat it (the
    offset head leans to a tile's middle), so the point is the median of four passes that put the
    first point at each quarter of a tile (its lean cancels out); a pointing step costs five passes.
    """

    def __init__(self, model: PixelModel, name: str = "pixel", device: str = "cpu", dtype: str = "auto",
                 runtime: str = "auto", second_look: bool | None = None):
        self.runtime = choose_runtime(device, runtime, dtype, model.config.hidden_size)
        onnx = self.runtime == "onnx"
        self.dtype = torch.float32 if onnx else inference_dtype(device, dtype)
        self.model = model.to(device=device, dtype=self.dtype).eval()
        # In ONNX Runtime with no dtype asked for, each part runs in the fastest arithmetic this CPU
        # has natively (closed-loop success measured level with float32: docs/policies.md): the
        # step's matrix products in int8 (VNNI), the reader's convolutions in int8 there too (a
        # ReLU reader: policies.pixel.reads.Int8Reads; DW_PIXEL_INT8_READER=0 keeps them in
        # bfloat16), else in torch's bfloat16.
        fast = onnx and dtype_setting(dtype) == "auto"
        self.int8 = fast and int8_matmuls()
        read_dtype = torch.bfloat16 if fast and cpu_has_native_bf16() else self.dtype
        # A checkpoint loaded from a folder has its exported step cached on disk (keyed by its
        # weights, config and the export code: policies.pixel.runtime.export_key); a model built in
        # memory (training, tests) is exported afresh.
        cache = bool(getattr(model.config, "_name_or_path", ""))
        self._step = OnnxStep(self.model, int8=self.int8, cache=cache) if onnx else None
        self.cfg = model.config
        grounding = self.model.grounding
        self.read_dtype = read_dtype if isinstance(grounding, ReaderGrounding) else None
        self.read_int8 = (self.read_dtype is not None and self.int8 and env_switch("DW_PIXEL_INT8_READER", True)
                          and Int8Reads.usable(grounding.reader))
        read_runtime = "torch" if read_dtype != self.dtype else self.runtime
        if isinstance(grounding, TemplateGrounding):  # the instruction's words drawn and matched
            self.reads = DrawnReads(self.cfg)
        elif isinstance(grounding, ReaderGrounding):
            self.reads = TileReads(grounding.reader, self.cfg.read_px, read_runtime, dtype=read_dtype,
                                   int8=self.read_int8)
        else:
            self.reads = None
        self.name = name
        self.device = torch.device(device)
        self.pre = Preprocessor(self.cfg)
        self.second_look = env_switch("DW_PIXEL_SECOND_LOOK", False) if second_look is None else second_look
        self._retrying = False  # this episode retries a failed attempt: look twice (see retry)
        self._shifted: dict[tuple[int, int], Preprocessor] = {}  # the looks' tile grids (4-5 MB of buffers each)
        self._cache = None
        self._raw = b""
        self._ids = np.zeros(0, np.int64)
        self.instruction = ""
        self._last: tuple | None = None  # (instruction, cursor, history), actions of the last step
        self.recent = RecentViews(self.cfg.recent) if self.cfg.recent else None  # recent video

    @property
    def precision(self) -> str:
        """The arithmetic of the step and (for a reading model) the reader, e.g. ``int8 matmuls,
        bfloat16 reader``: what benchmarks record beside their figures."""
        step = "int8 matmuls" if self.int8 else str(self.dtype).removeprefix("torch.")
        return step if self.reader_precision is None else f"{step}, {self.reader_precision} reader"

    @property
    def reader_precision(self) -> str | None:
        """The arithmetic of a reading model's reader (``int8``, ``bfloat16`` or ``float32``); None
        for a model that does not read."""
        if self.read_dtype is None:
            return None
        return "int8" if self.read_int8 else str(self.read_dtype).removeprefix("torch.")

    @torch.inference_mode()
    def reset(self, instruction: str) -> None:
        self.instruction = instruction
        self._retrying = False
        ids, self._raw = encode_text(instruction, self.cfg.max_text)
        self._ids = ids
        self._last = None
        if self.recent is not None:
            self.recent.clear()
        self._cache = self.model.encode_text(torch.from_numpy(ids)[None].to(self.device))
        if self._step is not None:
            self._step.set_text(self._cache)

    def retry(self, attempt: int) -> None:
        """This episode tries again what attempt ``attempt - 1`` failed: point with a second look."""
        self._retrying = attempt > 1

    def arrays(self, observation: Observation, pre: Preprocessor | None = None) -> dict[str, np.ndarray]:
        """Model inputs (batch of one) for an observation, as contiguous arrays (``pre``: another
        tile grid than the policy's own)."""
        vis = (pre or self.pre)(observation.frame)
        cur = observation.cursor
        cursor = np.array([cur[0], cur[1], 1.0] if cur is not None else [0.0, 0.0, 0.0], np.float32)
        htypes, hpts = history_features(self.cfg, observation.history, self._raw)
        named = {"global_view": vis.global_view, "glimpses": vis.glimpses, "boxes": vis.boxes,
                 "glimpse_mask": vis.mask, "screen": vis.screen, "cursor": cursor,
                 "history_types": htypes, "history_points": hpts}
        if self.recent is not None:
            named["recent"] = self.recent.views(observation.frame.t, vis.global_view)
        if vis.read_glimpses is not None:
            named["read_glimpses"] = vis.read_glimpses
        return {k: np.ascontiguousarray(a)[None] for k, a in named.items()}

    def inputs(self, observation: Observation) -> dict[str, torch.Tensor]:
        """Model inputs (batch of one) for an observation, as tensors on the policy's device."""
        return {k: torch.from_numpy(a).to(self.device) for k, a in self.arrays(observation).items()}

    @torch.inference_mode()
    def run(self, arrays: dict[str, np.ndarray]) -> PixelOutput:
        """The step on :meth:`arrays`' inputs: a reading model's tiles are read first, each
        distinct one once (:class:`~policies.pixel.reads.TileReads`), then the step runs."""
        arrays = dict(arrays)
        if isinstance(self.reads, DrawnReads):
            match, pos = self.reads.frame(arrays.pop("read_glimpses")[0], arrays["glimpse_mask"][0], self._ids)
            arrays["match"], arrays["match_pos"] = match[None], pos[None]
        elif self.reads is not None:
            arrays["read_probs"] = self.reads.frame(arrays.pop("read_glimpses")[0], arrays["glimpse_mask"][0])[None]
        if self._step is not None:
            return self._step(arrays)
        return self.model(**{k: torch.from_numpy(a).to(self.device) for k, a in arrays.items()},
                          text_cache=self._cache)

    @torch.inference_mode()
    def act(self, observation: Observation) -> list[Action]:
        if self._cache is None or observation.instruction != self.instruction:
            self.reset(observation.instruction)
        t = observation.frame.t
        seen = (observation.instruction, observation.cursor, tuple(observation.history),
                self.recent.key(t) if self.recent is not None else None)
        if self._last is not None and self._last[0] == seen and self.pre.still(observation.frame):
            return list(self._last[1])
        arrays = self.arrays(observation)
        actions = decode(self.cfg, self.run(arrays), self._raw)
        if self.recent is not None:  # this frame is part of the next steps' recent video
            self.recent.add(t, arrays["global_view"][0])
        if (self.second_look or self._retrying) and actions and isinstance(actions[0], POINTED):
            actions = self._look_again(observation, actions[0], RETRY_PHASES if self._retrying else CENTRE)
        self._last = (seen, tuple(actions))
        return actions

    def _look_again(self, observation: Observation, first: Action, phases: tuple) -> list[Action]:
        """``first`` with its point the median of passes whose tile grids put that point at each of
        ``phases`` (fractions of a tile, x and y); ``first`` itself when no pass chooses its kind
        of action."""
        c, screen = self.cfg, observation.frame.screen
        lw, lh = screen.width / screen.scale, screen.height / screen.scale
        per = c.tile_pt // c.cell_pt
        points = []
        for phase in phases:
            shift = tuple(round((c.tile_pt * q - (v * size) % c.tile_pt) / c.cell_pt) % per
                          for v, size, q in ((first.x, lw, phase[0]), (first.y, lh, phase[1])))
            if shift == (0, 0):
                points.append((first.x, first.y))
                continue
            pre = self._shifted.get(shift)
            if pre is None:
                if len(self._shifted) >= 8:  # each grid holds megabytes: at most 8, then start afresh
                    self._shifted.clear()
                pre = self._shifted[shift] = Preprocessor(c, shift=shift)
            again = decode(c, self.run(self.arrays(observation, pre)), self._raw)
            if again and type(again[0]) is type(first):
                points.append((again[0].x, again[0].y))
        if not points:
            return [first]
        return [dataclasses.replace(first, x=float(np.median([p[0] for p in points])),
                                    y=float(np.median([p[1] for p in points])))]


POINTED = (Click, Move, MouseDown, MouseUp, Scroll)  # one point each: what a second look may move
CENTRE = ((0.5, 0.5),)  # the second look: the first point at a tile's centre
RETRY_PHASES = ((0.25, 0.25), (0.75, 0.75), (0.25, 0.75), (0.75, 0.25))  # a retry's: at each quarter
