"""What a reader grounding's reader says about each frame's read windows, remembered per window.

At video rate most of a screen does not change from one frame to the next, and a reader's output
depends on a tile's pixels only (the instruction enters afterwards, as a product with its word
templates). So each tile's reading is kept, keyed by a digest of its pixels, and only tiles not
seen before are read: a static screen costs no reading at all, a click that changes one widget
costs one tile. Tiles of padded (masked) glimpses are not read: no output of the step depends on
them. The step takes the remembered probabilities as its ``read_probs`` input and matches them
with the instruction's words itself, as
:meth:`policies.pixel.grounding.ReaderGrounding.scores` does from the windows (tested).
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import torch
import xxhash
from torch.nn.utils.fusion import fuse_conv_bn_eval

from policies.pixel.runtime import onnx_session
from policies.pixel.vision import Reader, dark_ground
from policies.pixel.words import READ_WIDTH

CAPACITY = 4096  # tiles remembered (~5 KB each): a few dozen full screens


class _Probs(torch.nn.Module):
    """(N, G, G, 3) uint8 tiles -> (N, slots * classes): the reader's per-slot probabilities.

    ``fuse``: the reader's (folded) stem runs as :class:`_FusedStem`; the same function."""

    def __init__(self, reader: Reader, fuse: bool = False):
        super().__init__()
        if fuse:
            reader.stem = _FusedStem(reader.stem)
        self.reader = reader

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.reader.probs(tiles, next(self.reader.parameters()).dtype)


class _FusedStem(torch.nn.Module):
    """A folded stem whose convolutions each run with the activation after them (GELU or ReLU) as
    one oneDNN call on the CPU (:func:`conv_act_fusable`): the activation is applied as the output
    is written rather than in a pass of its own over it. About a fifth off a bfloat16 read of a
    desktop frame's windows on 2 cores (``docs/policies.md``, "Latency")."""

    def __init__(self, stem: torch.nn.Sequential):
        super().__init__()
        pairs = _conv_act_pairs(stem)
        self.convs = torch.nn.ModuleList(c for c, _ in pairs)
        self.acts = [a for _, a in pairs]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for c, act in zip(self.convs, self.acts, strict=True):
            h = torch.ops.mkldnn._convolution_pointwise(h, c.weight, c.bias, list(c.padding), list(c.stride),
                                                        list(c.dilation), c.groups, act, [], _ALGORITHM[act])
        return h


# the fused call's algorithm argument per activation: "none" is GELU's exact (erf) form; ReLU has none
_ALGORITHM = {"gelu": "none", "relu": ""}


def conv_act_fusable(device: torch.device) -> bool:
    """Whether this torch runs a convolution with its activation as one oneDNN call here (the CPU
    op TorchInductor fuses them into)."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise"))


def _conv_act_pairs(stem: torch.nn.Sequential) -> list[tuple[torch.nn.Conv2d, str]]:
    """The convolutions of a folded stem that alternates convolution (with bias) and exact GELU or
    ReLU, each with its activation's oneDNN name."""
    layers = list(stem)
    convs, acts = layers[0::2], layers[1::2]

    def name(a) -> str | None:
        if isinstance(a, torch.nn.GELU) and a.approximate == "none":
            return "gelu"
        return "relu" if isinstance(a, torch.nn.ReLU) else None

    if (len(convs) != len(acts) or not all(isinstance(c, torch.nn.Conv2d) and c.bias is not None for c in convs)
            or None in map(name, acts)):
        raise ValueError("fusing needs a folded stem of convolution, activation (GELU or ReLU) pairs")
    return [(c, name(a)) for c, a in zip(convs, acts, strict=True)]


class Int8Reads(torch.nn.Module):
    """The reader with its stem's convolutions in int8 (oneDNN's quantized convolution, VNNI):
    (N, h, w, 3) uint8 BGR tiles -> (N, slots * classes) probabilities, as :meth:`Reader.probs`.

    The tiles' bytes are the first convolution's input as they are (scale 1/255, zero point 128:
    the stem's ``pixel / 255 - 0.5`` but for half a grey level, which the first bias makes up); a
    dark-ground window is inverted as ``255 - pixel`` (exactly the float path's negation). Weights
    are int8 per output channel, each layer's bias corrected for the rounding's mean effect (the
    mean input from the batch norm before it); each activation is uint8 per layer with a scale set
    from the weights alone: the layer's batch norm says where its outputs lie (``beta + k * |gamma|``
    over the channels, ``k`` = :data:`INT8_SIGMAS`), so no calibration data is needed. The last
    convolution writes ``dtype`` for the head (which runs in ``dtype``). Needs a ``reader-relu``
    stem (oneDNN's quantized convolution fuses ReLU) and this torch's oneDNN ops: :meth:`usable`."""

    def __init__(self, reader: Reader, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        if not self.usable(reader):
            raise ValueError("an int8 reader needs a reader-relu stem and torch's oneDNN quantized ops")
        f = folded(reader, torch.float32)
        bns = [m for m in reader.stem if isinstance(m, torch.nn.BatchNorm2d)]
        convs = [m for m in f.stem if isinstance(m, torch.nn.Conv2d)]
        f.head.to(dtype)
        self.reader = f  # its head reads out what the int8 stem gives (Reader.probs_of)
        self.dtype = dtype
        self.layers = []
        x_scale, x_zp = 1 / 255, 128
        for i, (c, bn) in enumerate(zip(convs, bns, strict=True)):
            w = c.weight.detach().float()
            w_scale = (w.abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12)
            qw = torch.round(w / w_scale[:, None, None, None]).clamp(-127, 127).to(torch.int8)
            bias = c.bias.detach().float()
            if i == 0:  # zero point 128 reads a pixel half a grey level low: add it back
                bias = bias + (0.5 / 255) * w.sum(dim=(1, 2, 3))
            else:  # the rounding's mean effect on this layer's input, as its batch norm says that lies
                rounded = qw.float() * w_scale[:, None, None, None] - w
                bias = bias - (rounded.sum(dim=(2, 3)) * _relu_mean(bns[i - 1])[None]).sum(1)
            out_scale = float((bn.bias.detach() + INT8_SIGMAS * bn.weight.detach().abs()).max().clamp_min(1e-3)) / 255
            geometry = (list(c.stride), list(c.padding), list(c.dilation), c.groups)
            packed = torch.ops.onednn.qconv_prepack(qw, w_scale, x_scale, x_zp, *geometry, None)
            self.layers.append((packed, w_scale, torch.zeros(len(w_scale), dtype=torch.int32), bias, geometry,
                                x_scale, x_zp, out_scale))
            x_scale, x_zp = out_scale, 0

    @staticmethod
    def usable(reader: Reader) -> bool:
        return (hasattr(torch.ops.onednn, "qconv2d_pointwise") and torch.backends.mkldnn.is_available()
                and any(isinstance(m, torch.nn.ReLU) for m in reader.stem)
                and not any(isinstance(m, torch.nn.GELU) for m in reader.stem))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        dark = dark_ground(tiles)
        if dark.any():
            tiles = tiles.clone()
            tiles[dark] = 255 - tiles[dark]
        h = tiles.permute(0, 3, 1, 2)
        last = len(self.layers) - 1
        for i, (packed, w_scale, w_zp, bias, geometry, x_scale, x_zp, out_scale) in enumerate(self.layers):
            stride, padding, dilation, groups = geometry
            h = torch.ops.onednn.qconv2d_pointwise(
                h, x_scale, x_zp, packed, w_scale, w_zp, bias, stride, padding, dilation, groups,
                1.0 if i == last else out_scale, 0, self.dtype if i == last else None, "relu", [], "")
        return self.reader.probs_of(h)


INT8_SIGMAS = 6.0  # an int8 reader's activation range: its batch norm's beta + this many |gamma|


def _relu_mean(bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """Per channel, the mean of ReLU(z) for z normal with the batch norm's output mean (beta) and
    spread (|gamma|): what the layer after it reads, on average, on data like its training data."""
    beta, gamma = bn.bias.detach().float(), bn.weight.detach().float().abs().clamp_min(1e-6)
    z = beta / gamma
    return gamma * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi) + beta * 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def folded(reader: Reader, dtype: torch.dtype) -> Reader:
    """An inference copy of ``reader`` in ``dtype``: each convolution's batch norm folded into it
    (the same function, one pass over the activations fewer)."""
    r = copy.deepcopy(reader).float().eval()
    layers, out = list(r.stem), []
    while layers:
        layer = layers.pop(0)
        if isinstance(layer, torch.nn.Conv2d) and layers and isinstance(layers[0], torch.nn.BatchNorm2d):
            layer = fuse_conv_bn_eval(layer, layers.pop(0))
        out.append(layer)
    r.stem = torch.nn.Sequential(*out)
    return r.to(dtype)


class TileReads:
    """A match model's reader run over glimpse tiles, each distinct tile read once (LRU-bounded).
    A tile is known by a 128-bit xxh3 digest of its pixels: ~0.1 ms for a frame's 192 windows,
    against ~1.5 ms for a cryptographic hash.

    ``runtime`` ``onnx`` runs the reader in its own ONNX Runtime session (float32), ``torch`` in
    ``dtype`` (default: the reader's own) on its device, its batch norms folded. On a CPU with native
    bfloat16 arithmetic the policy reads in torch's bfloat16: about half the time of float32 there
    (``dw bench policies``); ``int8``: the reader's convolutions in int8 (:class:`Int8Reads`, where
    the CPU multiplies int8 natively: about a third off the bfloat16 read of a frame's windows).
    ``read`` counts the tiles actually read, for tests and
    benchmarks; :meth:`clear` forgets every tile (a cold start)."""

    def __init__(self, reader: Reader, read_px: int | tuple[int, int], runtime: str = "torch",
                 capacity: int = CAPACITY, dtype: torch.dtype | None = None, int8: bool = False):
        dtype = next(reader.parameters()).dtype if dtype is None else dtype
        device = next(reader.parameters()).device
        fuse = runtime == "torch" and conv_act_fusable(device)
        if int8:
            self.module = Int8Reads(reader, dtype).eval()
        else:
            self.module = _Probs(folded(reader, dtype if runtime == "torch" else torch.float32).to(device), fuse).eval()
        self.capacity = capacity
        self.read = 0
        self._seen: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._session = None
        h, w = (read_px, read_px) if isinstance(read_px, int) else read_px
        if runtime == "onnx":
            example = (torch.zeros(2, h, w, 3, dtype=torch.uint8),)
            self._session = onnx_session(self.module, example, ["tiles"], ["probs"],
                                         {"tiles": {0: "n"}, "probs": {0: "n"}})

    def clear(self) -> None:
        self._seen.clear()

    def _run(self, tiles: np.ndarray) -> np.ndarray:
        if self._session is not None:
            return self._session.run(None, {"tiles": tiles})[0]
        p = next(self.module.parameters())
        with torch.inference_mode():
            return self.module(torch.from_numpy(tiles).to(p.device)).float().cpu().numpy()

    def probs(self, tiles: np.ndarray, use: np.ndarray) -> np.ndarray:
        """(N, G, G, 3) uint8 tiles and (N,) bool: which to read -> (N, C) probabilities, zero
        where not used."""
        keys = {int(i): xxhash.xxh3_128_digest(tiles[i]) for i in np.flatnonzero(use)}
        for key in keys.values():
            if key in self._seen:
                self._seen.move_to_end(key)
        todo = {key: i for i, key in keys.items() if key not in self._seen}
        if todo:
            fresh = self._run(np.ascontiguousarray(tiles[list(todo.values())]))
            self.read += len(todo)
            self._seen.update((key, row.copy()) for key, row in zip(todo, fresh, strict=True))  # not views of the batch
        out = np.zeros((len(tiles), READ_WIDTH), np.float32)
        for i, key in keys.items():
            out[i] = self._seen[key]
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return out

    def frame(self, read_glimpses: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One frame's (4*K, h, w, 3) read windows (window-major) and (K,) glimpse mask -> (4*K, C)
        probabilities: the step's ``read_probs`` (zero for the windows of masked glimpses). The step
        compares them with the instruction's words itself: in ONNX Runtime's threads, not numpy's
        (whose BLAS threads spin on after a product, and took the cores from the step that followed)."""
        return self.probs(read_glimpses, np.tile(mask.astype(bool), len(read_glimpses) // len(mask)))
