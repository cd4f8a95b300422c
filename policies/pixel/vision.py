"""Glimpse encoders: the policy's patch stem, and the reader (a stem and a head that name the
word in an image), which the reader grounding carries frozen and :mod:`policies.pixel.reader`
pretrains."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from policies.pixel.words import CHARS, END, MAX_CHARS, READ_WIDTH, decode_word

SLOT_STEMS = ("reader", "reader-relu")  # a slot reader's stems (reader_stem)
READER_STEMS = (*SLOT_STEMS, "reader-ctc")  # stems a reader can have (make_reader)
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
    if kind not in SLOT_STEMS:  # a CTC reader's stem is its own (make_reader)
        raise ValueError(f"unknown reader stem {kind!r}; choose one of {', '.join(SLOT_STEMS)}")
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

    drops_letters = False  # its misses are whole-word guesses, not a letter left out (words.word_match)

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

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss of :meth:`forward`'s output against (N, MAX_CHARS + 1) slot targets (the
        characters, END, then -1: :func:`policies.pixel.reader.encode_word`)."""
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)

    def names(self, logits: torch.Tensor) -> list[str]:
        """The word :meth:`forward`'s output names in each image."""
        return [decode_word(row) for row in logits.argmax(-1).tolist()]


CTC_DILATIONS = (1, 2, 4, 8)  # a CTC reader's column layers: together they see 31 columns (the whole window)


class CtcReader(Reader):
    """A reader that spells: its stem keeps a quarter of the window's width as columns (a column
    is about one character at 10-16 points) and folds the height away; dilated column layers with
    a learned position each (the word to name is the centred one) give each column a character
    or a blank, trained with CTC (``reader-ctc``). A word is then as easy to read as its letters,
    where the slot reader names the words it was shown and few others
    (docs/research/2026-12-07-spelling-reader.md).

    For a grounding it says what a slot reader says: :meth:`probs_of` turns the best path (each
    column's most likely class; repeats and blanks dropped) into slots, each emitting column's
    character distribution (blank left out) in its slot, then END."""

    drops_letters = True  # a thin letter read as blank ("Engish"): the match forgives one (words.word_match)

    def __init__(self, channels: int, height_px: int, width: int = 128, width_px: int | None = None):
        nn.Module.__init__(self)
        layers: list[nn.Module] = []
        for cin, cout, stride in ((3, channels, 2), (channels, 2 * channels, 2),
                                  (2 * channels, 4 * channels, (2, 1)), (4 * channels, 4 * channels, (2, 1))):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.stem = nn.Sequential(*layers)
        with torch.no_grad():
            _, c, rows, cols = self.stem(torch.zeros(1, 3, height_px, width_px or height_px)).shape
        self.head = CtcHead(c * rows, width, cols)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The stem's (N, C, rows, T) features -> (N, END + 1, T) per-column logits (END: blank)."""
        return self.head(features)

    def probs_of(self, features: torch.Tensor) -> torch.Tensor:
        return ctc_slots(self.logits(features)).flatten(1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        real = (targets >= 0) & (targets < END)
        lp = logits.float().log_softmax(1).permute(2, 0, 1)  # (T, N, C)
        n, t = targets.shape[0], lp.shape[0]
        return F.ctc_loss(lp, targets[real], torch.full((n,), t, dtype=torch.long), real.sum(1), blank=END,
                          zero_infinity=True)

    def names(self, logits: torch.Tensor) -> list[str]:
        best, emit = best_path(logits)
        return ["".join(CHARS[c] for c, e in zip(b, m, strict=True) if e) for b, m in zip(best.tolist(), emit.tolist(), strict=True)]


class CtcHead(nn.Module):
    """(N, C, rows, T) stem features -> (N, END + 1, T): each column's features, a learned position
    per column, residual dilated convolutions along the columns, a class per column."""

    def __init__(self, c_in: int, width: int, cols: int):
        super().__init__()
        self.proj = nn.Conv1d(c_in, width, 1)
        self.pos = nn.Parameter(torch.randn(1, width, cols) * 0.02)
        self.seq = nn.ModuleList(nn.Sequential(nn.Conv1d(width, width, 3, 1, d, dilation=d), nn.BatchNorm1d(width),
                                               nn.ReLU()) for d in CTC_DILATIONS)
        self.out = nn.Conv1d(width, END + 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = self.proj(features.flatten(1, 2)) + self.pos.to(features.dtype)
        for layer in self.seq:
            h = h + layer(h)
        return self.out(h)


def ctc_slots(logits: torch.Tensor) -> torch.Tensor:
    """(N, END + 1, T) per-column logits (END: blank) -> (N, MAX_CHARS + 1, END + 1) slot
    probabilities, as a slot reader gives them: along the best path, the k-th column that emits a
    character (not blank, not its left neighbour's class) puts its character distribution (blank
    left out) in slot k; slot n (n characters emitted, at most MAX_CHARS) is END. Tensor operations
    only, so it exports."""
    p = logits.float().softmax(1)
    _, emit = best_path(logits)
    slot = emit.long().cumsum(1) - 1
    ks = torch.arange(MAX_CHARS, device=logits.device)
    at = ((slot[:, :, None] == ks) & emit[:, :, None]).float()  # (N, T, MAX_CHARS)
    chars = p[:, :END] / p[:, :END].sum(1, keepdim=True).clamp(min=1e-6)  # (N, END, T)
    slots = torch.bmm(at.transpose(1, 2), chars.transpose(1, 2))  # (N, MAX_CHARS, END)
    n = emit.sum(1).clamp(max=MAX_CHARS)
    end = (torch.arange(MAX_CHARS + 1, device=logits.device) == n[:, None]).float()  # (N, MAX_CHARS + 1)
    slots = torch.cat([slots, torch.zeros_like(slots[:, :1])], 1)
    return torch.cat([slots, end[:, :, None]], 2)


def best_path(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, END + 1, T) per-column logits -> each column's best class (N, T) and whether it emits a
    character there (not blank, not its left neighbour's class): CTC's greedy reading."""
    best = logits.argmax(1)
    prev = torch.cat([torch.full_like(best[:, :1], END), best[:, :-1]], 1)
    return best, (best != END) & (best != prev)


def make_reader(stem: str, channels: int, height_px: int, width: int = 512, width_px: int | None = None) -> Reader:
    """The reader a stem kind names (:data:`READER_STEMS`): a slot reader, or a CTC one."""
    if stem == "reader-ctc":
        return CtcReader(channels, height_px, width, width_px)
    return Reader(stem, channels, height_px, width, width_px)
