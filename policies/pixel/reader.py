"""Reading pretraining for a reader grounding: synthetic UI-text images -> the word's characters.

A policy trained by behaviour cloning alone gets one labelled pointer choice per screen, too
little signal to learn to read; its glimpse encoder then tells buttons apart by shape, not by
label, and clicks the wrong one about half the time (docs/policies.md). Reading is learned here
instead, from an unlimited stream of synthetic glimpses: a ``tile_pt``-point tile, rendered at a
random screen scale, holding one word in a UI font (Pillow's bundled face, and the font files the
caller names: the faces of the screens the policy will read) at 10-16 points, in a random colour over a random background, with clutter (boxes, lines, cut-off
words at the edges); resampled to ``glimpse_px`` pixels with area averaging, as
:class:`~policies.pixel.processing.Preprocessor` makes glimpses. The target is the word's
characters, one classifier per slot (up to :data:`MAX_CHARS`, then an end mark), so what is
learned carries over to words never seen.

With read windows (``window``), each of a tile's four windows names the word centred in it, as a
reader grounding reads. The reader (stem and head) is then loaded into a policy's reader
grounding (a recipe's ``[train] reader``: :func:`policies.pixel.training.load_reader_weights`).
"""

from __future__ import annotations

import json
import math
import random
import string
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file, save_file

from policies.pixel.vision import CtcReader, Reader, make_reader
from policies.pixel.words import CHARS, END, MAX_CHARS

READER_FILE = "reader.safetensors"
READER_CONFIG = "reader.json"
READER_PREFIX = "grounding.reader."  # a reader grounding's reader inside a policy checkpoint's weights
# stems a reader's weights can start (--init), with what they keep of it (carry_layers)
DERIVED_STEMS = {"reader-relu": "every layer is kept, with ReLU for GELU"}


class ReaderError(ValueError):
    """A reader folder that cannot be used."""


def font_faces(files: Sequence[str] = ()) -> list[str | None]:
    """Font files to draw with: ``None`` is Pillow's bundled face (always there), then those of
    ``files`` present on this machine."""
    return [None] + [f for f in files if Path(f).is_file()]


@lru_cache(maxsize=512)
def _font(face: str | None, px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px) if face is None else ImageFont.truetype(face, px)


def random_word(rng: random.Random, words: Sequence[str]) -> str:
    """A word from ``words`` half the time, else a random string shaped like a UI label."""
    if words and rng.random() < 0.5:
        return rng.choice(words)
    n = rng.randint(1, 10)
    kind = rng.random()
    if kind < 0.6:
        w = "".join(rng.choice(string.ascii_lowercase) for _ in range(n))
        return w.capitalize() if rng.random() < 0.6 else w
    if kind < 0.75:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))
    if kind < 0.9:
        return "".join(rng.choice(string.digits) for _ in range(min(n, 6)))
    return "".join(rng.choice(CHARS[:-1]) for _ in range(n)).strip() or "x"


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _luma(c: tuple[int, int, int]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _contrasting(rng: random.Random, bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """A colour whose luma differs from ``bg``'s by at least 80 (UI text is meant to be read)."""
    while True:
        c = _colour(rng) if rng.random() < 0.5 else ((20, 20, 24) if _luma(bg) > 128 else (250, 250, 250))
        if abs(_luma(c) - _luma(bg)) >= 80:
            return c


def render_tile(rng: random.Random, words: Sequence[str], faces: Sequence[str | None],
                tile_pt: int = 64, glimpse_px: int = 48) -> tuple[np.ndarray, str]:
    """One synthetic glimpse (``glimpse_px`` square, uint8 BGR) and the word wholly inside it."""
    scale = rng.choice((1.0, 1.0, 1.25, 1.5, 2.0))
    side = max(1, round(tile_pt * scale))
    bg = _colour(rng) if rng.random() < 0.5 else (rng.choice((236, 240, 246, 250, 255)),) * 3
    img = Image.new("RGB", (side, side), bg)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(0, 3)):  # clutter: boxes, lines, bits of other words at the edges
        r = rng.random()
        x0, y0 = rng.uniform(-0.3, 1.0) * side, rng.uniform(-0.3, 1.0) * side
        x1, y1 = x0 + rng.uniform(0.1, 1.2) * side, y0 + rng.uniform(0.05, 0.8) * side
        if r < 0.4:
            d.rectangle((x0, y0, x1, y1), fill=_colour(rng) if rng.random() < 0.5 else None,
                        outline=_colour(rng), width=max(1, round(scale)))
        elif r < 0.7:
            d.line((x0, y0, x1, y0 if rng.random() < 0.5 else y1), fill=_colour(rng), width=max(1, round(scale)))
        else:
            # at least 6 characters, starting in the right 15% or ending in the left 15%: always cut
            f = _font(rng.choice(faces), round(rng.uniform(10, 16) * scale))
            cut = (random_word(rng, words) + "".join(rng.choice(string.ascii_lowercase) for _ in range(6)))[:12]
            left = rng.random() < 0.5
            x = rng.uniform(0, 0.15) * side if left else rng.uniform(0.85, 1.0) * side
            d.text((x, rng.uniform(0, side)), cut, font=f, fill=_contrasting(rng, bg), anchor="rm" if left else "lm")
    word = ""
    if rng.random() < 0.92:
        face = rng.choice(faces)
        f = _font(face, round(rng.uniform(10, 16) * scale))
        word = random_word(rng, words)[:MAX_CHARS]
        while word and f.getlength(word) > side - 2:  # keep the word wholly inside the tile
            word = word[:-1]
        word = word.strip()
        if word:
            x0, y0, x1, y1 = f.getbbox(word, anchor="ls")
            w, h = x1 - x0, y1 - y0
            x = rng.uniform(1, max(1.0, side - w - 1)) - x0
            y = rng.uniform(1, max(1.0, side - h - 1)) - y0
            under = bg
            if rng.random() < 0.3:  # a button or field behind the word
                under, pad = _colour(rng), rng.uniform(2, 8) * scale
                d.rounded_rectangle((x + x0 - pad, y + y0 - pad, x + x1 + pad, y + y1 + pad),
                                    radius=round(3 * scale), fill=under)
            d.text((x, y), word, font=f, fill=_contrasting(rng, under), anchor="ls")
    out = cv2.resize(np.asarray(img)[:, :, ::-1], (glimpse_px, glimpse_px), interpolation=cv2.INTER_AREA)
    return out, word


def render_window(rng: random.Random, words: Sequence[str], faces: Sequence[str | None], tile_pt: int,
                  window: Sequence[int]) -> tuple[np.ndarray, str]:
    """One synthetic read window (``window`` = ``(w_pt, h_pt, w_px, h_px)``; uint8 BGR, ``h_px`` x
    ``w_px``) and the word it names (:func:`policies.pixel.processing.centred_word`): mostly a word
    centred in its middle cell of half a tile, with neighbours on its line and lines above and
    below, as in running text, or in a column of options, one word a row behind a radio circle or
    a check box, as in forms and lists."""
    from policies.pixel.processing import centred_word

    w_pt, h_pt, w_px, h_px = window
    scale = rng.choice((1.0, 1.0, 1.25, 1.5, 2.0))
    ww, wh, cell = max(1, round(w_pt * scale)), max(1, round(h_pt * scale)), tile_pt * scale / 2
    while True:  # until the window names one word or none (two centred words are redrawn)
        img, drawn = _draw_window(rng, words, faces, ww, wh, cell, scale)
        label = centred_word(drawn, 0, 0, ww, wh, cell)
        if label is not None:
            out = cv2.resize(np.asarray(img)[:, :, ::-1], (w_px, h_px), interpolation=cv2.INTER_AREA)
            return out, label


def _draw_window(rng: random.Random, words: Sequence[str], faces: Sequence[str | None], ww: int, wh: int,
                 cell: float, scale: float) -> tuple[Image.Image, list]:
    """A window's picture and every word drawn on it with its box: see :func:`render_window`."""
    bg = _colour(rng) if rng.random() < 0.5 else (rng.choice((236, 240, 246, 250, 255)),) * 3
    img = Image.new("RGB", (ww, wh), bg)
    d = ImageDraw.Draw(img)
    if rng.random() < 0.3:  # a box or line behind the text
        x0, y0 = rng.uniform(-0.3, 1.0) * ww, rng.uniform(-0.3, 1.0) * wh
        d.rectangle((x0, y0, x0 + rng.uniform(0.1, 1.2) * ww, y0 + rng.uniform(0.1, 1.0) * wh),
                    fill=_colour(rng) if rng.random() < 0.5 else None, outline=_colour(rng), width=max(1, round(scale)))
    f = _font(rng.choice(faces), round(rng.uniform(10, 16) * scale))
    ink = _contrasting(rng, bg)
    drawn = []

    def put(word: str, x: float, y: float) -> float:
        """Draw ``word`` with its left baseline at (x, y); its box's right edge."""
        x0, y0, x1, y1 = f.getbbox(word, anchor="ls")
        d.text((x, y), word, font=f, fill=ink, anchor="ls")
        drawn.append((word, (x + x0, y + y0, x + x1, y + y1)))
        return x + x1

    def some_word() -> str:
        return random_word(rng, words)[:MAX_CHARS].strip() or "x"

    line = f.getbbox("Hg", anchor="ls")
    line_h = (line[3] - line[1]) * rng.uniform(1.3, 2.2)
    cx, cy = ww / 2 + rng.uniform(-cell / 2, cell / 2), wh / 2 + rng.uniform(-cell / 2, cell / 2)
    space = f.getlength(" ") * rng.uniform(1, 3)
    y, left = cy, cx
    column = rng.random() < 0.35  # a column of options (radio buttons, check boxes, a list), one a row
    if rng.random() < 0.9:  # the centred word, and neighbours on its line
        word = some_word()
        x0, y0, x1, y1 = f.getbbox(word, anchor="ls")
        x, y = cx - (x0 + x1) / 2, cy - (y0 + y1) / 2
        right = put(word, x, y)
        left = x + x0
        if not column and rng.random() < 0.5:
            other = some_word()
            put(other, x + x0 - space - f.getlength(other), y)
        if not column and rng.random() < 0.5:
            put(some_word(), right + space, y)
    if column:
        _option_rows(rng, d, put, some_word, f, left, y, line, bg, ink, scale)
        return img, drawn
    for dy in (-line_h, line_h):  # lines above and below
        if rng.random() < 0.4:
            x = rng.uniform(-0.5, 0.3) * ww
            while x < ww:
                x = put(some_word(), x, y + dy) + space
    return img, drawn


def _option_rows(rng: random.Random, d: ImageDraw.ImageDraw, put: Callable, some_word: Callable, f, left: float,
                 y: float, line: tuple, bg: tuple[int, int, int], ink: tuple[int, int, int], scale: float) -> None:
    """Rows of a column of options around the centred word's row (baseline ``y``, text from ``left``):
    the same indicator before each (a radio circle, a check box, or none, as in a list), other
    options a row above and below, packed as toolkits pack them (1.3 to 2.2 text heights apart)."""
    text_h = line[3] - line[1]
    pitch = text_h * rng.uniform(1.3, 2.2)
    kind = rng.choice(("circle", "box", None))
    side = text_h * rng.uniform(0.8, 1.2)
    gap = side * rng.uniform(0.3, 0.8)
    mark = _contrasting(rng, bg) if rng.random() < 0.5 else ink
    fill = (255, 255, 255) if rng.random() < 0.5 else None
    chosen = rng.randrange(-2, 3)
    width = max(1, round(scale))
    for row in range(-2, 3):
        yy = y + row * pitch
        if row and rng.random() < 0.8:
            put(some_word(), left, yy)
        elif row:
            continue
        if kind is None:
            continue
        top = yy + (line[1] + line[3]) / 2 - side / 2  # centred on the row's text
        box = (left - gap - side, top, left - gap, top + side)
        (d.ellipse if kind == "circle" else d.rectangle)(box, outline=mark, fill=fill, width=width)
        if row == chosen:  # the one set: a dot or a tick
            i = side * 0.3
            inner = (box[0] + i, box[1] + i, box[2] - i, box[3] - i)
            (d.ellipse if kind == "circle" else d.rectangle)(inner, fill=mark)


def encode_word(word: str) -> np.ndarray:
    """(MAX_CHARS + 1,) class per slot: the characters, then END, then -1 (ignored)."""
    t = np.full((MAX_CHARS + 1,), -1, np.int64)
    ids = [CHARS.index(ch) if ch in CHARS else CHARS.index("?") for ch in word[:MAX_CHARS]]
    t[: len(ids)] = ids
    t[len(ids)] = END
    return t


def batch(rng: random.Random, n: int, words: Sequence[str], faces: Sequence[str | None],
          tile_pt: int, glimpse_px: int, window: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``n`` synthetic tiles, or read windows (``window``: points and pixels, ``(w_pt, h_pt, w_px,
    h_px)``), with their targets and words."""
    tiles, targets, texts = [], [], []
    for _ in range(n):
        t, w = (render_window(rng, words, faces, tile_pt, window) if window
                else render_tile(rng, words, faces, tile_pt, glimpse_px))
        tiles.append(t)
        targets.append(encode_word(w))
        texts.append(w)
    return torch.from_numpy(np.stack(tiles)), torch.from_numpy(np.stack(targets)), texts


def distill_loss(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL divergence from a teacher reader's per-slot distributions to the student's, averaged over
    slots: the student learns every probability the teacher gives (what a match model compares),
    not only its argmax."""
    s = F.log_softmax(logits.flatten(0, 1).float(), -1)
    t = F.log_softmax(teacher_logits.flatten(0, 1).float(), -1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


def carry_layers(src: Reader, dst: Reader) -> None:
    """Copy ``src``'s weights into ``dst``, a reader of the same input with another stem: each of
    ``dst``'s convolution and batch-norm pairs takes the next of ``src``'s with the same shape and
    stride, and the head comes whole."""
    def pairs(stem: torch.nn.Sequential) -> list:
        layers = list(stem)
        return [(c, b) for c, b in zip(layers, layers[1:], strict=False)
                if isinstance(c, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)]

    todo = iter(pairs(src.stem))
    for conv, norm in pairs(dst.stem):
        for c, b in todo:
            if c.weight.shape == conv.weight.shape and c.stride == conv.stride:
                conv.load_state_dict(c.state_dict())
                norm.load_state_dict(b.state_dict())
                break
        else:
            raise ReaderError(f"no layer left in the --init reader fits {conv}")
    try:
        dst.head.load_state_dict(src.head.state_dict())
    except RuntimeError as e:
        raise ReaderError(f"the --init reader's head does not fit ({e})") from None


@torch.no_grad()
def read_words(model: Reader, tiles: torch.Tensor, batch_size: int = 512) -> list[str]:
    """The word ``model`` names in each tile (up to its end mark)."""
    was_training = model.training
    model.eval()
    got = []
    for i in range(0, len(tiles), batch_size):
        got.extend(model.names(model(tiles[i:i + batch_size])))
    model.train(was_training)
    return got


def word_accuracy(model: Reader, tiles: torch.Tensor, texts: Sequence[str], batch_size: int = 512) -> float:
    """Share of ``tiles`` whose word ``model`` names as ``texts`` has it (a teacher's reading
    words, :func:`read_words`, gives the agreement with that teacher)."""
    got = read_words(model, tiles, batch_size)
    return float(np.mean([a == b for a, b in zip(got, texts, strict=True)])) if texts else 0.0


# (rng, n, held_out, tile_pt, glimpse_px[, window=(w_pt, h_pt, w_px, h_px) or None]) -> (tiles, words)
TileSource = Callable[..., tuple[np.ndarray, list[str]]]


def pretrain_reader(out: str | Path, *, stem: str | None = None, channels: int = 32, head_width: int = 512,
                    tile_pt: int = 64, glimpse_px: int = 48, steps: int = 2000, batch_size: int = 128, lr: float = 2e-3,
                    seed: int = 0, words: Sequence[str] = (), val_tiles: int = 1024,
                    time_budget_s: float | None = None, device: str = "cpu",
                    init: str | Path | None = None, desktop: TileSource | None = None, desktop_share: float = 0.5,
                    window: Sequence[int] | None = None, teacher: str | Path | None = None,
                    fonts: Sequence[str] = (), log: Callable[[str], None] = print) -> dict:
    """Train a reader on synthetic tiles and save it (stem and head) to ``out``: see
    :func:`load_reader_stem` (its stem) and :func:`load_reader`.

    ``fonts``: font files drawn with beside Pillow's bundled face (those present are used).
    ``stem``: ``reader`` (the default without ``init``) or ``reader-relu``. ``init``: a
    reader folder to go on from (its stem, width and head; ``channels`` and ``head_width`` are then
    taken from it, and its stem must be ``stem``'s, or a ``reader`` for a ``reader-relu``:
    :func:`carry_layers`). A reader of other tiles or windows gives its stem only.
    ``teacher``: a reader folder of the same tiles or windows whose per-slot distributions the
    new reader learns (:func:`distill_loss`) instead of the words' labels; its agreement with the
    teacher on held-out tiles is then reported too.
    ``desktop``: a source of labelled tiles from the screens the policy will read
    (``(rng, n, held_out, tile_pt, glimpse_px) -> (tiles, words)``, e.g.
    :func:`agent.desktops.virtual.reading.desktop_tiles`); ``desktop_share`` of each batch then comes from
    it, and its held-out accuracy is reported beside the synthetic one.

    ``window`` ``(w_pt, h_pt, w_px, h_px)``: a reader of read windows (a grounding's ``window``)
    for ``tile_pt``-point tiles, naming the word centred in each, instead of a reader of tiles.

    Seeded: the same seed draws the same tiles and gives the same weights on CPU. With
    ``time_budget_s`` the cosine schedule is fitted to the budget after the first 20 steps, and again
    after 200 more (the first steps are slow on a GPU: kernels are chosen and compiled)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    faces = font_faces(fonts)
    dev = torch.device(device)
    win = tuple(int(v) for v in window) if window else None
    val_x, _, val_text = batch(random.Random(seed + 1_000_003), val_tiles, words, faces, tile_pt, glimpse_px, win)
    val_x = val_x.to(dev)
    n_desk = round(batch_size * desktop_share) if desktop is not None else 0
    if desktop is not None:
        dx, desk_text = desktop(random.Random(seed + 2_000_003), val_tiles, True, tile_pt, glimpse_px, window=win)
        desk_x = torch.from_numpy(dx).to(dev)
    rng = random.Random(seed)
    h_px, w_px = _input_px(glimpse_px, win)

    def same_input(cfg: dict) -> bool:
        """Whether a reader folder's reader reads what this one will."""
        return (cfg.get("tile_pt", tile_pt), cfg["glimpse_px"], _window(cfg)) == (tile_pt, glimpse_px, win)

    teach = None
    if teacher is not None:
        tcfg, teach = load_reader(teacher)
        if not same_input(tcfg):
            raise ReaderError(f"{teacher}: the teacher reads {tcfg.get('tile_pt')}-point tiles at {tcfg['glimpse_px']} "
                              f"px (windows {_window(tcfg)}); the new reader must read the same")
        teach = teach.to(dev)
    if init is not None:
        cfg0, model = load_reader(init)
        channels, head_width = cfg0["stem_channels"], cfg0["head_width"]
        if stem in DERIVED_STEMS and cfg0["stem"] == "reader":
            if not same_input(cfg0):
                raise ReaderError(f"{init}: a {stem} starts from a reader of the same tiles or windows")
            derived = make_reader(stem, channels, h_px, head_width, width_px=w_px)
            carry_layers(model, derived)
            model = derived
            log(f"{init}: {DERIVED_STEMS[stem]}, for a {stem}")
        else:
            if stem not in (None, cfg0["stem"]):
                raise ReaderError(f"{init}: a {cfg0['stem']} reader cannot start a {stem} one "
                                  f"(a {' or '.join(DERIVED_STEMS)} starts from a reader)")
            stem = cfg0["stem"]
            if not same_input(cfg0):
                # another geometry (tiles to windows, say): the convolutions carry over, the head's input does not
                keep = model.stem.state_dict()
                model = make_reader(stem, channels, h_px, head_width, width_px=w_px)
                model.stem.load_state_dict(keep)
                log(f"{init} reads {cfg0.get('tile_pt')}-point tiles at {cfg0['glimpse_px']} px (windows "
                    f"{_window(cfg0)}): its stem is kept, the reading head starts afresh for {w_px}x{h_px} px")
        model = model.to(dev)
    else:
        stem = stem or "reader"
        model = make_reader(stem, channels, h_px, head_width, width_px=w_px).to(dev)
    if teach is not None:
        if isinstance(model, CtcReader) or isinstance(teach, CtcReader):
            raise ReaderError("a reader-ctc learns from the words' labels, not from a teacher's slots")
        val_taught = read_words(teach, val_x)  # what agreement with the teacher is measured against
        desk_taught = read_words(teach, desk_x) if desktop is not None else None
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = [steps]
    warm = min(100, steps // 10 + 1)

    def lr_at(i: int) -> float:
        if i < warm:
            return (i + 1) / warm
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (i - warm) / max(1, total[0] - warm))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    t0, losses, history = time.time(), [], []
    step = 0
    while step < total[0]:
        x, y, _ = batch(rng, batch_size - n_desk, words, faces, tile_pt, glimpse_px, win)
        if n_desk:
            dx, dw = desktop(rng, n_desk, False, tile_pt, glimpse_px, window=win)
            x = torch.cat([x, torch.from_numpy(dx)])
            y = torch.cat([y, torch.from_numpy(np.stack([encode_word(w) for w in dw]))])
        x = x.to(dev)
        if teach is not None:
            with torch.no_grad():
                target = teach(x)
            loss = distill_loss(model(x), target)
        else:
            loss = model.loss(model(x), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        if time_budget_s and step in (20, 220):  # refitted once the first steps' warm-up is behind
            if step == 20:
                t20 = time.time()
                per = (t20 - t0) / step
            else:
                per = (time.time() - t20) / 200
            total[0] = max(step, min(steps, step + int((time_budget_s - (time.time() - t0)) / per)))
        if step % 100 == 0 or step == total[0]:
            rec = {"step": step, "loss": round(float(np.mean(losses[-20:])), 4),
                   "val_word_acc": round(word_accuracy(model, val_x, val_text), 4),
                   "seconds": round(time.time() - t0, 1)}
            if desktop is not None:
                rec["val_desktop_word_acc"] = round(word_accuracy(model, desk_x, desk_text), 4)
            if teach is not None:
                rec["val_agreement"] = round(word_accuracy(model, val_x, val_taught), 4)
                if desktop is not None:
                    rec["val_desktop_agreement"] = round(word_accuracy(model, desk_x, desk_taught), 4)
            history.append(rec)
            log(json.dumps(rec))
    cfg = {"stem": stem, "stem_channels": channels, "head_width": head_width, "tile_pt": tile_pt, "glimpse_px": glimpse_px,
           **({"window": list(win[:2]), "window_px": list(win[2:])} if win else {}),
           "steps": step, "batch_size": batch_size, "seed": seed, "lr": lr,
           "init": str(init) if init is not None else None, "teacher": str(teacher) if teacher is not None else None,
           "desktop_share": n_desk / batch_size,
           "start_loss": round(float(np.mean(losses[:5])), 4), "history": history}
    save_reader(out, model.state_dict(), cfg)
    last = history[-1] if history else {}
    return {"out": str(out), **cfg, "val_word_acc": last.get("val_word_acc"),
            "val_desktop_word_acc": last.get("val_desktop_word_acc"), "val_agreement": last.get("val_agreement"),
            "val_desktop_agreement": last.get("val_desktop_agreement")}


def save_reader(out: str | Path, weights: dict[str, torch.Tensor], cfg: dict) -> None:
    """Write a reader folder: its weights (``stem.*`` and ``head.*``) and settings, as
    :func:`load_reader` reads them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(out / READER_FILE))
    (out / READER_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n")


def _checkpoint_reader(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The reader inside a policy checkpoint with a reader grounding (a folder or a bundled name),
    as a reader folder's settings and weights; None where ``folder`` is no such checkpoint."""
    from policies.checkpoints import checkpoint_dir

    ck = checkpoint_dir(str(folder))
    try:
        c = json.loads((ck / "config.json").read_text())
        g = c["grounding"]
        if not isinstance(g, dict) or g.get("kind") != "reader":
            return None
        r = g["reader"]
        cfg = {"stem": r["stem"], "stem_channels": r["channels"], "head_width": r["head"],
               "tile_pt": c["tile_pt"], "glimpse_px": c["glimpse_px"],
               **({"window": list(g["window"]), "window_px": list(g["window_px"] or g["window"])} if g.get("window") else {})}
        weights = load_file(str(ck / "model.safetensors"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return cfg, {k.removeprefix(READER_PREFIX): v.float() for k, v in weights.items() if k.startswith(READER_PREFIX)}


def load_reader(folder: str | Path) -> tuple[dict, Reader]:
    """A reader folder's settings and the whole reader (stem and reading head); a policy checkpoint
    with a reader grounding (a folder or a bundled name) gives the reader inside it."""
    cfg, weights = _read_reader(folder)
    cfg.setdefault("head_width", 512)  # readers saved before the setting existed have the 512-wide head
    h_px, w_px = _input_px(cfg["glimpse_px"], _window(cfg))
    model = make_reader(cfg["stem"], cfg["stem_channels"], h_px, cfg["head_width"], width_px=w_px)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ReaderError(f"{folder}: the weights do not fit the reader ({e})") from None
    return cfg, model.eval()


def _window(cfg: dict) -> tuple[int, int, int, int] | None:
    """A reader config's read window, ``(w_pt, h_pt, w_px, h_px)``, or None for a tile reader."""
    return (*cfg["window"], *cfg["window_px"]) if cfg.get("window") else None


def _input_px(glimpse_px: int, window) -> tuple[int, int]:
    """(height, width) in pixels of what a reader reads."""
    return (window[3], window[2]) if window else (glimpse_px, glimpse_px)


def _read_reader(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A reader folder's settings and all its weights, read once; a policy checkpoint with a reader
    grounding gives the reader inside it."""
    folder = Path(folder)
    inside = None if (folder / READER_CONFIG).is_file() else _checkpoint_reader(folder)
    try:
        cfg, weights = inside or (json.loads((folder / READER_CONFIG).read_text()), load_file(str(folder / READER_FILE)))
    except (OSError, ValueError) as e:
        raise ReaderError(f"{folder}: not a reader folder ({e})") from None
    for k in ("stem", "stem_channels", "glimpse_px"):
        if k not in cfg:
            raise ReaderError(f"{folder}/{READER_CONFIG}: missing {k!r}")
    if not any(k.startswith("stem.") for k in weights):
        raise ReaderError(f"{folder}/{READER_FILE}: no stem weights inside")
    return cfg, weights


def load_reader_stem(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A reader folder's settings and stem weights (``stem.*`` keys of a pixel model, without the
    prefix); a policy checkpoint with a reader grounding gives the reader inside it."""
    cfg, weights = _read_reader(folder)
    return cfg, {k.removeprefix("stem."): v for k, v in weights.items() if k.startswith("stem.")}
