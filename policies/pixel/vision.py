"""Glimpse encoders: the policy's patch stem, and the reader (a stem and a head that name the
word in an image), which the reader grounding carries frozen and :mod:`policies.pixel.reader`
pretrains."""

from __future__ import annotations

import math

import torch
from torch import nn

from policies.pixel.words import END, MAX_CHARS, READ_WIDTH

READER_STEMS = ("reader", "reader-relu")  # stems a reader can have
DARK_GROUND = 80  # a reader's window whose median luma is below this is read with its colours inverted


def stem_input(glimpses: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, G, G, 3) uint8 BGR glimpses -> the stem's (N, 3, G, G) input in [-0.5, 0.5]. The policy
    and reading pretraining (:mod:`policies.pixel.reader`) both feed a stem through here."""
    return glimpses.permute(0, 3, 1, 2).to(dtype) * (1.0 / 255.0) - 0.5


def luma(pixels: torch.Tensor) -> torch.Tensor:
    """(..., 3) BGR -> (...) float32 luma (ITU-R 601, as OpenCV's grey)."""
    w = pixels.float()
    return w[..., 0] * 0.114 + w[..., 1] * 0.587 + w[..., 2] * 0.299


GREY_WEIGHTS = (3735, 19235, 9798)  # B, G, R: OpenCV's integer BGR -> grey (ITU-R 601, rounded, shift 15)


def dark_ground(windows: torch.Tensor) -> torch.Tensor:
    """(N, h, w, 3) uint8 BGR -> (N,) bool: more than half the window's pixels have a grey (OpenCV's,
    rounded to an integer) below :data:`DARK_GROUND`. OpenCV's conversion on a CPU (a few times
    faster than a float one: this runs on every read window of a step), the same integers elsewhere."""
    # OpenCV on a CPU (not for no windows: it refuses an empty image); an exported graph computes it itself
    fast = windows.device.type == "cpu" and not torch.jit.is_tracing() and len(windows) > 0
    if fast:  # counted by OpenCV too: a few times faster than torch's sum of a mask
        import cv2

        grey = grey_of(windows).numpy().reshape(len(windows), -1)
        _, below = cv2.threshold(grey, DARK_GROUND - 1, 1, cv2.THRESH_BINARY_INV)  # 1 where grey < DARK_GROUND
        count = cv2.reduce(below, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]
        return torch.from_numpy(count * 2 > grey.shape[1])
    grey = grey_of(windows, fast=False).flatten(1)
    return (grey < DARK_GROUND).sum(1) * 2 > grey.shape[1]


def grey_of(pixels: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """(..., 3) uint8 BGR on a CPU -> (...) uint8 grey, OpenCV's; ``fast=False``: the same integers
    computed with torch (any device)."""
    if fast:
        import cv2

        flat = pixels.reshape(-1, pixels.shape[-2], 3).numpy()  # cv2 takes rows of BGR pixels
        return torch.from_numpy(cv2.cvtColor(flat, cv2.COLOR_BGR2GRAY)).view(pixels.shape[:-1])
    w = torch.tensor(GREY_WEIGHTS, device=pixels.device, dtype=torch.int32)
    return torch.div((pixels.to(torch.int32) * w).sum(-1) + (1 << 14), 1 << 15, rounding_mode="floor").to(torch.uint8)


def light_ground(windows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A reader's input ``x`` (:func:`stem_input` of the (N, h, w, 3) uint8 BGR ``windows``) with
    each window whose ground is dark (:func:`dark_ground`) inverted, in place: light text on a dark
    theme is read as the dark-on-light text readers learn mostly from
    (`docs/research/2026-12-06-dark-ground-reads.md`)."""
    dark = dark_ground(windows)
    if torch.jit.is_tracing():  # an exported graph: for whichever windows it is given
        return torch.where(dark[:, None, None, None], -x, x)
    if dark.any():
        x[dark] = -x[dark]
    return x


def patch_stem(ch: int, glimpse_px: int) -> tuple[nn.Sequential, int]:
    """The policy's glimpse encoder: a 4x4 stride-4 patchify, then two stride-2 convolutions. Its
    first four layers give the middle map (2 * ``ch`` channels, a sixth of a 48-pixel glimpse a
    cell) that the cell refiner chooses among. Returns the stem and its flattened output size."""
    layers = [nn.Conv2d(3, ch, 4, 4), nn.GELU(), nn.Conv2d(ch, 2 * ch, 3, 2, 1), nn.GELU(),
              nn.Conv2d(2 * ch, 4 * ch, 3, 2, 1), nn.GELU()]
    side = math.ceil(math.ceil(glimpse_px / 4) / 4)
    return nn.Sequential(*layers), 4 * ch * side * side


def reader_stem(kind: str, ch: int, height_px: int, width_px: int | None = None) -> tuple[nn.Sequential, int]:
    """A reader's encoder for ``height_px``-high inputs ``width_px`` wide (default: square), and the
    size of its flattened output.

    ``reader``: a 4x4 stride-2 convolution, a stride-1 3x3 one at that resolution (strokes are one
    or two pixels wide in a 48-pixel glimpse), then three stride-2 ones, each batch-normalised
    (without, reading pretraining stalls at the prior for hundreds of steps). ``reader-relu``: the
    same with ReLU for GELU (the same weights' shapes; cheaper on a CPU, distilled from a
    ``reader`` by ``dw reader``)."""
    if kind not in READER_STEMS:
        raise ValueError(f"unknown reader stem {kind!r}; choose one of {', '.join(READER_STEMS)}")
    layers: list[nn.Module] = []
    for cin, cout, k, stride, pad in ((3, ch, 4, 2, 1), (ch, ch, 3, 1, 1), (ch, 2 * ch, 3, 2, 1),
                                      (2 * ch, 4 * ch, 3, 2, 1), (4 * ch, 4 * ch, 3, 2, 1)):
        act = nn.ReLU() if kind == "reader-relu" else nn.GELU()
        layers += [nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), act]
    side, across = math.ceil(height_px // 2 / 8), math.ceil((width_px or height_px) // 2 / 8)
    return nn.Sequential(*layers), 4 * ch * side * across


class Reader(nn.Module):
    """A reader: a reader stem and a head naming the image's word, one classifier per slot:
    (N, h, w, 3) uint8 BGR -> (N, MAX_CHARS + 1, END + 1) logits. Pretrained on UI text by
    :mod:`policies.pixel.reader`; the reader grounding carries one, frozen, to read with."""

    def __init__(self, stem: str, channels: int, height_px: int, width: int = 512, width_px: int | None = None):
        super().__init__()
        self.stem, flat = reader_stem(stem, channels, height_px, width_px)
        self.head = nn.Sequential(nn.Linear(flat, width), nn.GELU(), nn.Linear(width, READ_WIDTH))

    def forward(self, tiles: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.logits(self.stem(light_ground(tiles, stem_input(tiles, dtype))))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The stem's (N, C, h, w) features -> (N, MAX_CHARS + 1, END + 1) logits."""
        return self.head(features.flatten(1)).view(-1, MAX_CHARS + 1, END + 1)

    def probs(self, tiles: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, h, w, 3) uint8 -> (N, READ_WIDTH) float32: each slot's class probabilities,
        flattened (what a grounding compares with its word templates)."""
        return self.probs_of(self.stem(light_ground(tiles, stem_input(tiles, dtype))))

    def probs_of(self, features: torch.Tensor) -> torch.Tensor:
        """:meth:`probs` from the stem's features (a stem run elsewhere: an int8 one)."""
        return self.logits(features).float().softmax(-1).flatten(1)
