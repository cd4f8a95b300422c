"""The pixel transformer: one forward pass from (frame views, instruction, cursor, last actions)
to every part of the next action.

Token streams (one set of transformer weights, a prefix-LM layout):

- **text**: the instruction's UTF-8 bytes. Text tokens attend only to text, so their keys and
  values at every layer depend on the instruction alone: :meth:`PixelModel.encode_text` computes
  them once per episode and each step reuses them (a per-episode KV cache).
- **step**: ``[CLS] [cursor] [history x H] [global patches] [glimpses]``; these attend to the text
  and to each other.

Heads, all read in the same pass:

- action type, button, click count, key combo, scroll notches, wait bin: classifiers on CLS;
- where: a *pointer* over the visual tokens (global patches and glimpses) plus a per-token
  offset inside that token's box, for the action point and (for drags) the end point. A glimpse
  covers 64 logical points, so the offset needs only ~5% accuracy for a few-point error;
- text for ``type``: start and end byte of a span copied from the instruction.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from policies.pixel.config import PixelConfig

KIND_CLS, KIND_CURSOR, KIND_HISTORY, KIND_GLOBAL, KIND_GLIMPSE = range(5)
N_FREQ = 6


def fourier(x: torch.Tensor) -> torch.Tensor:
    """(..., n) values in ~[0, 1] -> (..., n * 2 * N_FREQ) sin/cos features."""
    freqs = (2.0 ** torch.arange(N_FREQ, device=x.device, dtype=x.dtype)) * math.pi
    a = x.unsqueeze(-1) * freqs
    return torch.cat([a.sin(), a.cos()], dim=-1).flatten(-2)


READER_STEMS = ("reader", "reader-lite", "reader-relu")  # stems a reader (and a match model's frozen one) can have
STEMS = ("patch", *READER_STEMS)


def stem_input(glimpses: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, G, G, 3) uint8 BGR glimpses -> the stem's (N, 3, G, G) input in [-0.5, 0.5]. The policy
    and reading pretraining (:mod:`policies.pixel.reader`) both feed the stem through here."""
    return glimpses.permute(0, 3, 1, 2).to(dtype) * (1.0 / 255.0) - 0.5


def build_stem(kind: str, ch: int, glimpse_px: int, width_px: int | None = None) -> tuple[nn.Sequential, int]:
    """The glimpse encoder and the size of its flattened output, for ``glimpse_px``-high inputs
    ``width_px`` wide (default: square).

    - ``patch``: a 4x4 stride-4 patchify, then two stride-2 convolutions (the first checkpoints'
      stem: cheap, but its first layer averages strokes away, and it never learned to read);
    - ``reader``: a 4x4 stride-2 convolution, a stride-1 3x3 one at that resolution (strokes are
      one or two pixels wide in a 48-pixel glimpse), then three stride-2 ones, to a 3x3 map, each
      batch-normalised (without, reading pretraining stalls at the prior for hundreds of steps). About
      3 ms more per step for 48 glimpses on 2 CPU cores; pretrained to read by
      :mod:`policies.pixel.reader`;
    - ``reader-lite``: ``reader`` without its stride-1 layer, the same output shape. About a quarter
      less time per read window; trained by distilling a ``reader`` (``dw reader --teacher``);
    - ``reader-relu``: ``reader`` with ReLU after each convolution instead of GELU, the same
      weights' shapes. On a CPU the fused reads' exact GELU costs about as much as the stride-1
      layer's arithmetic, and ReLU almost nothing; distilled from a ``reader`` as ``reader-lite`` is.
    """
    if kind == "patch":
        layers = [nn.Conv2d(3, ch, 4, 4), nn.GELU(), nn.Conv2d(ch, 2 * ch, 3, 2, 1), nn.GELU(),
                  nn.Conv2d(2 * ch, 4 * ch, 3, 2, 1), nn.GELU()]
        if width_px not in (None, glimpse_px):
            raise ValueError("the patch stem takes square glimpses")
        side = across = math.ceil(math.ceil(glimpse_px / 4) / 4)
    elif kind in READER_STEMS:
        layers = []
        for cin, cout, k, stride, pad in ((3, ch, 4, 2, 1), (ch, ch, 3, 1, 1), (ch, 2 * ch, 3, 2, 1),
                                          (2 * ch, 4 * ch, 3, 2, 1), (4 * ch, 4 * ch, 3, 2, 1)):
            if stride == 1 and kind == "reader-lite":
                continue
            act = nn.ReLU() if kind == "reader-relu" else nn.GELU()
            layers += [nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), act]
        # three stride-2 convolutions after the first
        side, across = math.ceil(glimpse_px // 2 / 8), math.ceil((width_px or glimpse_px) // 2 / 8)
    else:
        raise ValueError(f"unknown glimpse stem {kind!r}; choose one of {', '.join(STEMS)}")
    return nn.Sequential(*layers), 4 * ch * side * across


CHARS = string.printable[:95]  # what a reader names: printable ASCII (letters, digits, punctuation, space)
END = len(CHARS)  # the class after the last character
MAX_CHARS = 12  # a reader names up to this many characters, then END
READ_WIDTH = (MAX_CHARS + 1) * (END + 1)  # a reader's probabilities per tile, flattened
WORD_EXTRA = "-'_&/@"  # besides letters and digits, these stay inside an instruction word


def read_tiles(config, glimpses, read_glimpses):
    """What a reading model's reader reads for a batch, (B * R * K, h, w, 3), phase-major per
    sample: the glimpses and their shifted copies, or (``match_window``) the windows alone."""
    h, w = config.read_px
    if config.match_window:
        return read_glimpses.reshape(-1, h, w, 3)
    return torch.cat([glimpses, read_glimpses], 1).reshape(-1, h, w, 3)


def _excl_cumprod(x: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative product over the last axis of probabilities (1 first), as exp of a
    cumulative sum of logs: ONNX has no cumulative product."""
    logs = torch.log(x.clamp(min=1e-12))
    return torch.exp(torch.cat([torch.zeros_like(logs[..., :1]), logs.cumsum(-1)], -1))


N_DIGITS = 10  # CHARS begins with the digits: classes 0-9 are '0'-'9'
MAX_NUMBERS = 4  # an order model compares the instruction's first this many numbers
MAX_NUMBER_READS = 8  # with the reads of this many tiles, those likeliest to hold a number


def number_words(template: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """(B, L, S, C) word templates and (B, L) word starts -> (B, L) bool: a number word starts here
    (digits only, as the reader names a number: digits, then END)."""
    t = template > 0
    is_dig = t[..., :N_DIGITS].any(-1)
    return starts & is_dig[..., 0] & (is_dig | t[..., END] | ~t.any(-1)).all(-1)


def compare_numbers(probs: torch.Tensor, template: torch.Tensor, number: torch.Tensor) -> torch.Tensor:
    """(B, R, S, C) reads (each slot's class probabilities) and (B, L, S, C) instruction word
    templates with (B, L) number-word starts (:func:`number_words`) -> (B, R, L, 3): the chance
    each read is a number below, equal to or above the instruction's number at l (zero where no
    number word starts).

    Numbers are unsigned digit strings, as the reader names them (slots: digits, then END). A read
    with fewer digits (at least one) is below, one with more is above, and one of the same length
    is compared digit by digit: equal up to slot i, then below or above there. Slots are taken
    as independent, as the reader predicts them."""
    t = template > 0
    t_dig = t[..., :N_DIGITS]
    is_dig = t_dig.any(-1)  # (B, L, S)
    n = is_dig.sum(-1)  # (B, L) digits in the word
    digit = probs[..., :N_DIGITS].sum(-1)  # (B, R, S) the slot holds a digit
    end = probs[..., END]
    given = probs[..., :N_DIGITS] / digit[..., None].clamp(min=1e-6)  # which digit, given it is one
    td = t_dig.float()
    lower = torch.tril(torch.ones(N_DIGITS, N_DIGITS, device=probs.device), -1)  # [word digit, read digit < it]
    same = torch.einsum("brsc,blsc->brls", given, td)
    below = torch.einsum("brsc,blsc->brls", given, td @ lower)
    above = torch.einsum("brsc,blsc->brls", given, td @ lower.T)
    inside = (torch.arange(probs.shape[2], device=probs.device) < n[..., None])[:, None]  # (B, 1, L, S)
    same = torch.where(inside, same, torch.ones_like(same))
    prefix = _excl_cumprod(same)  # (B, R, L, S+1): equal on every slot before
    lex_below = (prefix[..., :-1] * below * inside).sum(-1)
    lex_above = (prefix[..., :-1] * above * inside).sum(-1)
    lex_same = prefix[..., -1]
    # length: digits on slots 0..m-1, then END at m
    run = _excl_cumprod(digit)  # (B, R, S+1)
    ends = run[..., :-1] * end  # (B, R, S): exactly m digits
    ends = torch.cat([torch.zeros_like(ends[..., :1]), ends[..., 1:]], -1)  # no digit at all is no number
    shorter = torch.cat([torch.zeros_like(ends[..., :1]), ends.cumsum(-1)], -1)  # (B, R, S+1): fewer than m
    idx = n[:, None, :].expand(-1, probs.shape[1], -1)  # (B, R, L)
    as_long = ends.gather(2, idx.clamp(max=ends.shape[-1] - 1))
    out = torch.stack([shorter.gather(2, idx) + as_long * lex_below,
                       as_long * lex_same,
                       run.gather(2, (idx + 1).clamp(max=run.shape[-1] - 1)) + as_long * lex_above], -1)
    return out * number[:, None, :, None]


class Reader(nn.Module):
    """A reader: a ``reader`` stem and a head naming the glimpse's word, one classifier per slot:
    (N, G, G, 3) uint8 BGR -> (N, MAX_CHARS + 1, END + 1) logits. Pretrained on synthetic UI text
    by :mod:`policies.pixel.reader`; a ``match`` pixel model carries one (frozen) to read with."""

    def __init__(self, stem: str, channels: int, glimpse_px: int, width: int = 512, width_px: int | None = None):
        super().__init__()
        self.stem, flat = build_stem(stem, channels, glimpse_px, width_px)
        self.head = nn.Sequential(nn.Linear(flat, width), nn.GELU(), nn.Linear(width, READ_WIDTH))

    def forward(self, tiles: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.head(self.stem(stem_input(tiles, dtype)).flatten(1)).view(-1, MAX_CHARS + 1, END + 1)

    def probs(self, tiles: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N, G, G, 3) uint8 -> (N, READ_WIDTH) float32: each slot's class
        probabilities, flattened (what a match model compares with its word templates)."""
        return self(tiles, dtype).float().softmax(-1).flatten(1)


def _is_word_char(ch: str) -> bool:
    """Whether ``ch`` belongs inside an instruction word (:func:`word_templates`)."""
    return ch.isalnum() or ch in WORD_EXTRA


def _byte_tables() -> tuple[torch.Tensor, torch.Tensor]:
    cls = torch.full((257,), END, dtype=torch.long)
    word = torch.zeros(257, dtype=torch.bool)
    for i, ch in enumerate(CHARS):
        cls[ord(ch)] = i
        word[ord(ch)] = _is_word_char(ch)
    return cls, word


def word_position(raw: bytes, word: str | None) -> int:
    """Where ``word`` starts in the instruction's bytes ``raw``, as a whole word (its quoted
    occurrence first), or -1: the ``word`` label of a sample whose target a demo named
    (``agent.session.EXPERT_TARGET``). Whole: no word byte (:func:`word_templates`' kind) just
    before or just after it, so "Blue" is not found at the start of "Bluetooth"."""
    if not word:
        return -1
    w = word.encode("utf-8")

    def whole(i: int) -> bool:
        j = i + len(w)
        return ((i == 0 or not _is_word_char(chr(raw[i - 1])))
                and (j >= len(raw) or not _is_word_char(chr(raw[j]))))

    i = raw.find(b'"' + w)
    while i >= 0 and not whole(i + 1):
        i = raw.find(b'"' + w, i + 1)
    if i >= 0:
        return i + 1
    i = raw.find(w)
    while i >= 0 and not whole(i):
        i = raw.find(w, i + 1)
    return i


def word_templates(text_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) byte ids -> what a reader would say if glimpse held the instruction's word at each
    position, and where words start.

    Returns ``template`` (B, L, READ_WIDTH): for position l, the one-hot class of
    each slot of the word starting there (its characters up to the next non-word byte, at most
    ``MAX_CHARS``, then END, as the reader is taught), divided by the number of slots; and
    ``starts`` (B, L) bool, True where a word starts. ``reader probabilities . template`` is then
    the expected fraction of the word's slots the reader got right: 1 for a perfect read."""
    cls_t, word_t = _byte_tables()
    cls_t, word_t = cls_t.to(text_ids.device), word_t.to(text_ids.device)
    b, n = text_ids.shape
    s = MAX_CHARS + 1
    ids = F.pad(text_ids, (0, s), value=256)
    win = ids.unfold(1, s, 1)[:, :n]  # (B, L, S): the bytes from each position on
    is_word = word_t[win]
    # slot k is part of the template while every byte before it is a word byte
    alive = torch.cat([torch.ones_like(is_word[..., :1]), is_word[..., :-1].cumprod(-1).bool()], -1)
    cls = torch.where(is_word, cls_t[win], torch.full_like(win, END))
    cls[..., -1] = END  # a word longer than MAX_CHARS is cut, then END, as the reader reads it
    last = alive & ~is_word  # the END slot of a shorter word
    use = (alive & is_word) | last
    use[..., -1] |= alive[..., -1]
    weights = use.float() / use.sum(-1, keepdim=True).clamp(min=1).float()
    template = F.one_hot(cls, END + 1).float() * weights[..., None]
    starts = word_t[ids[:, :n]] & ~F.pad(word_t[ids[:, :n]], (1, 0), value=False)[:, :n]
    return template.flatten(2), starts


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        hidden = int(d * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.drop = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor):
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _out(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.ln2(x)))

    def text(self, x: torch.Tensor, mask: torch.Tensor):
        """Text attends to text. Returns the new states and this layer's text keys/values."""
        q, k, v = self._qkv(x)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self._out(x, a), (k, v)

    def step(self, x: torch.Tensor, text_kv, mask: torch.Tensor):
        """Step tokens attend to the text (cached keys/values) and to themselves."""
        q, k, v = self._qkv(x)
        tk, tv = text_kv
        if tk.shape[0] != k.shape[0]:
            tk, tv = tk.expand(k.shape[0], -1, -1, -1), tv.expand(k.shape[0], -1, -1, -1)
        a = F.scaled_dot_product_attention(q, torch.cat([tk, k], 2), torch.cat([tv, v], 2),
                                           attn_mask=mask[:, None, None, :])
        return self._out(x, a)


@dataclass
class PixelOutput(ModelOutput):
    type_logits: torch.Tensor | None = None
    button_logits: torch.Tensor | None = None
    count_logits: torch.Tensor | None = None
    key_logits: torch.Tensor | None = None
    scroll_logits: torch.Tensor | None = None  # (B, 2, 2*scroll_max+1): dx, dy
    wait_logits: torch.Tensor | None = None
    pointer_logits: torch.Tensor | None = None  # (B, 2, N): action point, drag end
    offsets: torch.Tensor | None = None  # (B, 2, N, 2)
    boxes: torch.Tensor | None = None  # (B, N, 4) the pointer tokens' boxes (normalised, float32)
    span_start: torch.Tensor | None = None  # (B, L)
    span_end: torch.Tensor | None = None
    # a reading model in training only: each pointer's attention logits over the instruction's
    # positions (B, 2, L; -1e4 where no word starts), which codec.loss teaches where demos name the target
    word_logits: torch.Tensor | None = None
    # a match_snap model in training only (PixelModel.snap): codec.loss teaches each glimpse's choice
    # among the candidate placements, and how far to move, where demos name the target's word
    snap_logits: torch.Tensor | None = None  # (B, 2, K, C): per pointer and glimpse, over C candidates
    snap_spots: torch.Tensor | None = None  # (B, 2, C, 2): the candidates, in screen units
    snap_scores: torch.Tensor | None = None  # (B, 2, C)
    snap_alpha: torch.Tensor | None = None  # (B, 2, K, 2): per glimpse and axis, how far the offset moves
    # a cell_offsets model in training only (PixelModel.cells): codec.loss teaches each pointer's
    # choice of cell in the glimpse the demo points into, and the point it takes in that cell
    cell_logits: torch.Tensor | None = None  # (B, 2, K, S*S): per pointer and glimpse, over its cells
    cell_points: torch.Tensor | None = None  # (B, 2, K, S*S, 2): each cell's point, as a glimpse offset
    cell_trust: torch.Tensor | None = None  # (B, 2, K): logit that the chosen cell's point beats the offset head's
    cell_base: torch.Tensor | None = None  # (B, 2, K, 2): the offset head's point in each glimpse
    cell_moved: torch.Tensor | None = None  # (B, 2, K, 2): and where the cell would move it


def _batched(t: torch.Tensor, b: int) -> torch.Tensor:
    """``t`` for a batch of ``b``: an instruction encoded once (batch 1) is shared by every row."""
    return t if t.shape[0] == b else t.expand(b, *([-1] * (t.dim() - 1)))


@dataclass
class TextCache:
    """What :meth:`PixelModel.encode_text` computes once per instruction."""

    kv: list
    states: torch.Tensor  # (B, L, d) final text states (for span copying)
    mask: torch.Tensor  # (B, L) bool, True = real byte
    template: torch.Tensor | None = None  # (B, L, S*C) word templates (match models): word_templates
    starts: torch.Tensor | None = None  # (B, L) bool: a word starts here (match models)

    def words(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``template`` and ``starts`` for a batch of ``b`` (an instruction cached once is shared)."""
        return _batched(self.template, b), _batched(self.starts, b)


class PixelPreTrainedModel(PreTrainedModel):
    config_class = PixelConfig
    base_model_prefix = "pixel"
    main_input_name = "global_view"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, PixelModel):
            nn.init.normal_(module.global_pos, std=0.02)
            nn.init.normal_(module.cls, std=0.02)


SNAP_HIDDEN = 32  # match_snap: the width of the layer that weighs each window's placement
SNAP_SHARPNESS = 8.0  # match_snap: a placement's score, 0..1, times this is its choice logit to start with
SNAP_OUTSIDE = 40.0  # match_snap: a placement's distance outside a glimpse (screen units) counts this much against it
CELL_DIM = 64  # cell_offsets: the width in which a pointer's query meets each cell's features
CELL_SURE = 0.5  # cell_offsets: a cell chosen with less probability than this never moves a point
CELL_CONV = 48  # cell_offsets: channels of the cells' own encoder (beside the stem's middle map)
WHERE_SHARPNESS = 8.0  # match_where_near: a read at 1.0 beside ones at 0.15 takes ~0.9 of the choice


class PixelModel(PixelPreTrainedModel):
    def __init__(self, config: PixelConfig):
        super().__init__(config)
        c = config
        d = c.hidden_size
        self.byte_emb = nn.Embedding(257, d)
        self.text_pos = nn.Embedding(c.max_text, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.screen_proj = nn.Linear(4, d)
        self.kind_emb = nn.Embedding(5, d)
        self.point_proj = nn.Linear(3 * 2 * N_FREQ + 1, d)  # cursor / history point, + present flag
        self.hist_type = nn.Embedding(len(c.action_types) + 1, d)
        self.hist_pos = nn.Embedding(c.history, d)
        self.patch_embed = nn.Linear(c.patch * c.patch * 3, d)
        self.global_pos = nn.Parameter(torch.zeros(1, c.num_global, d))
        self.stem, flat = build_stem(c.stem, c.stem_channels, c.glimpse_px)
        self.glimpse_proj = nn.Linear(flat, d)
        self.box_proj = nn.Linear(6 * 2 * N_FREQ, d)
        self.layers = nn.ModuleList(Block(d, c.num_heads, c.mlp_ratio, c.dropout) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(d)
        self.text_norm = nn.LayerNorm(d)
        n_scroll = 2 * c.scroll_max + 1
        self.head_type = nn.Linear(d, len(c.action_types))
        self.head_button = nn.Linear(d, len(c.buttons))
        self.head_count = nn.Linear(d, 3)
        self.head_key = nn.Linear(d, len(c.keys))
        self.head_scroll = nn.Linear(d, 2 * n_scroll)
        self.head_wait = nn.Linear(d, len(c.wait_bins))
        self.ptr_q = nn.Linear(d, 2 * d)
        self.ptr_k = nn.Linear(d, 2 * d)
        self.off_cond = nn.Linear(d, 2 * d)
        self.off_out = nn.Linear(d, 2)
        self.span_q = nn.Linear(d, 2 * d)
        self.span_k = nn.Linear(d, d)
        if c.match and not c.match_drawn:  # a drawn-match model draws words instead (policies.pixel.drawn)
            self.reader = Reader(c.match_stem, c.match_channels, c.read_px[0], c.match_head, c.read_px[1])
        if c.match:
            self.match_tq = nn.Linear(d, 2 * d)  # which instruction word each pointer looks for
            self.match_tk = nn.Linear(d, d)
            self.match_gate = nn.Linear(d, 2)  # how much each pointer trusts the match, per state
            self.match_temp = nn.Linear(d, 2)  # and how much its own (visual) pointer logits
            self.match_slot_q = nn.Parameter(torch.zeros(c.match_slots, d))
            self.match_slot_k = nn.Linear(d, d)
            self.match_in = nn.Linear(c.match_slots * (len(c.match_phases) + 1 if c.match_per_phase else 1), d)
            if c.match_order:  # below / equal / above the instruction's number, and how sure: into the state
                self.match_order_in = nn.Linear(4, d)
            if c.match_reach:  # a word names the widget beside it: spread the match over the tile grid
                n = 2 * c.match_reach + 1
                self.match_kernel = nn.Parameter(torch.zeros(c.match_kernels, n * n))
                self.match_mix = nn.Linear(d, 2 * c.match_kernels)  # which kernel, per pointer and state
            if c.match_where:  # each read's match of the pointer's word: into that pointer's offset head
                self.match_where_in = nn.Linear(c.reads_per_glimpse, d)
            if c.match_at:  # where each window's drawing of the pointer's word matched: into its offset head
                self.match_at_in = nn.Linear(3 * c.reads_per_glimpse, d)
            if c.match_where_near:  # an offset correction per read window, chosen by where the word was read
                self.match_where_off = nn.Linear(d, 2 * c.reads_per_glimpse)
            if c.match_snap:  # an offset may move to where its word's drawing matched in its glimpse
                self.snap_in = nn.Linear(3, SNAP_HIDDEN)  # a window's placement on the screen and its score
                self.snap_state = nn.Linear(d, 2 * SNAP_HIDDEN)  # per pointer and state
                self.snap_out = nn.Linear(SNAP_HIDDEN, 1)  # -> that window's choice logit, beside its score's
                self.snap_conf = nn.Linear(1, 1)  # the chosen placement's score -> how far to trust it
                self.snap_gate = nn.Linear(d, 4)  # per pointer and axis: how far the offset moves there
                self.snap_shift = nn.Linear(d, 4)  # and where beside the word it lands (a radio left of its label)
        if c.cell_offsets:  # each pointer picks a cell of a glimpse's middle feature map, and a point in it
            side = math.ceil((c.glimpse_px // 4) / 2)  # the patch stem's second map: 6x6 for 48 pixels
            # the cells' own encoder, the middle map's shape: the stem's map is trained for the glimpse's
            # summary, this one for telling a radio button from a checkbox a cell away
            # (a first layer at two pixels, not four: a radio button's circle from a checkbox's square)
            self.cell_conv = nn.Sequential(nn.Conv2d(3, CELL_CONV // 3, 4, 2, 1), nn.GELU(),
                                           nn.Conv2d(CELL_CONV // 3, CELL_CONV, 4, 4), nn.GELU())
            self.cell_k = nn.Linear(2 * c.stem_channels + CELL_CONV, CELL_DIM)
            self.cell_q = nn.Linear(d, CELL_DIM)
            self.cell_pos = nn.Parameter(torch.zeros(side * side, CELL_DIM))
            self.cell_fine = nn.Linear(CELL_DIM, 2)
            self.cell_trust = nn.Linear(d + 1, 1)  # whether the cell's point beats the offset head's, per glimpse
        self.post_init()
        if c.match:  # start as the model without reading (the pointer bias is learned from there)
            nn.init.zeros_(self.match_in.weight)
            nn.init.zeros_(self.match_gate.weight)
            nn.init.constant_(self.match_gate.bias, 4.0)
            nn.init.zeros_(self.match_temp.weight)
            nn.init.constant_(self.match_temp.bias, math.log(math.e - 1))  # softplus -> 1: logits as they were
            if c.match_order:  # starts as the model without it
                nn.init.zeros_(self.match_order_in.weight)
                nn.init.zeros_(self.match_order_in.bias)
            if c.match_where:  # starts as the model without it
                nn.init.zeros_(self.match_where_in.weight)
                nn.init.zeros_(self.match_where_in.bias)
            if c.match_at:  # starts as the model without it
                nn.init.zeros_(self.match_at_in.weight)
                nn.init.zeros_(self.match_at_in.bias)
            if c.match_where_near:  # so does this
                nn.init.zeros_(self.match_where_off.weight)
                nn.init.zeros_(self.match_where_off.bias)
            if c.match_snap:  # windows chosen by score; a full match moves an offset half way to start with
                nn.init.zeros_(self.snap_out.weight)
                nn.init.zeros_(self.snap_out.bias)
                nn.init.constant_(self.snap_conf.weight, 10.0)  # a true label's 0.4 goes most of the way,
                nn.init.constant_(self.snap_conf.bias, -2.0)  # a stray 0.1 a quarter
                nn.init.zeros_(self.snap_gate.weight)
                nn.init.zeros_(self.snap_gate.bias)
                nn.init.zeros_(self.snap_shift.weight)
                nn.init.zeros_(self.snap_shift.bias)
            if c.match_reach:  # kernels start at zero: only a glimpse's own match counts, as without them
                nn.init.zeros_(self.match_kernel)
                self._draw_match_mix()  # random: see untie_match_kernels
        if c.cell_offsets:  # choices start near uniform (never sure: no point moves) at each cell's middle
            nn.init.normal_(self.cell_pos, std=0.02)
            for layer in self.cell_conv:  # trained from scratch: PyTorch's own scale, not 0.02
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
            nn.init.zeros_(self.cell_fine.weight)
            nn.init.zeros_(self.cell_fine.bias)
            nn.init.zeros_(self.cell_trust.weight)  # untrusted to start with: the model acts as before
            nn.init.constant_(self.cell_trust.bias, -4.0)

    @torch.no_grad()
    def untie_match_kernels(self, generator: torch.Generator | None = None) -> bool:
        """Draw the kernel mix's weights at random when they are all zero; True if it did.

        With every mix weight at zero, each kernel gets the same share in every state, so each
        gets the same gradient: kernels that start equal (at zero, or as a checkpoint trained
        that way left them) stay equal, and the mix never learns to choose between them. Random
        mix weights break the tie without changing any output while the kernels are still equal.
        """
        if not self.config.match_reach or bool(self.match_mix.weight.any()):
            return False
        self._draw_match_mix(generator)
        return True

    def _draw_match_mix(self, generator: torch.Generator | None = None) -> None:
        """Random kernel-mix weights, giving mix logits of unit scale, and a zero bias."""
        nn.init.normal_(self.match_mix.weight, std=1 / math.sqrt(self.config.hidden_size), generator=generator)
        nn.init.zeros_(self.match_mix.bias)

    def train(self, mode: bool = True) -> PixelModel:
        """As ``nn.Module.train``, but a reader stays in eval mode: it is pretrained and frozen."""
        super().train(mode)
        if self.config.match and not self.config.match_drawn:
            self.reader.eval()
        return self

    # -- text -------------------------------------------------------------------------------
    def encode_text(self, text_ids: torch.Tensor) -> TextCache:
        """(B, L) byte ids (256 = pad) -> per-layer keys/values and final states.

        Trailing columns that are padding in every row are dropped first: every row masks them
        out, so the outputs are identical, and instructions are much shorter than ``max_text``
        (this halves a training step's work and shortens every inference step's attention)."""
        mask = text_ids != 256
        n = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 1
        text_ids, mask = text_ids[:, :n], mask[:, :n].clone()
        mask[:, 0] = True  # an empty instruction still has one (pad) key to attend to
        pos = torch.arange(text_ids.shape[1], device=text_ids.device)
        x = self.byte_emb(text_ids) + self.text_pos(pos)[None]
        kv = []
        for layer in self.layers:
            x, lkv = layer.text(x, mask)
            kv.append(lkv)
        cache = TextCache(kv, self.text_norm(x), mask)
        if self.config.match:
            cache.template, cache.starts = word_templates(text_ids)
            cache.starts &= mask
        return cache

    # -- reading ----------------------------------------------------------------------------
    def read_match(self, glimpses: torch.Tensor, read_glimpses: torch.Tensor, text: TextCache) -> torch.Tensor:
        """(B, K, L) how well each glimpse's word matches the instruction's word at each position:
        the reader's expected fraction of right slots, the best of the glimpse and its shifted
        copies (``read_glimpses``: (B, P*K, G, G, 3), phase-major), zero where no word starts.
        With ``match_window``, the best of the glimpse's four windows ((B, 4*K, h, w, 3)) instead.
        With ``match_per_phase`` or ``match_where``, every read's, (B, K, R, L): the glimpse's then
        each copy's, or each window's."""
        return self.match_of(self.read_probs_of(glimpses, read_glimpses), glimpses.shape[1], text)

    def read_probs_of(self, glimpses: torch.Tensor, read_glimpses: torch.Tensor) -> torch.Tensor:
        """(B, R*K, C): the reader's probabilities for every tile it reads (the step's ``read_probs``)."""
        if self.config.match_drawn:
            raise ValueError("a match_drawn model has no reader: its match comes from policies.pixel.drawn")
        return self.reader.probs(read_tiles(self.config, glimpses, read_glimpses),
                                 self.cls.dtype).view(glimpses.shape[0], -1, READ_WIDTH)

    def order_of(self, probs: torch.Tensor, text: TextCache) -> torch.Tensor:
        """(B, R*K, C) read probabilities -> (B, 4): how likely the number on screen is below, equal
        to or above the instruction's number (each times how sure the surest read is), and that
        certainty. All zero when the instruction holds no number or no tile reads one.

        Per tile and instruction number, exactly, if the reader's slots are independent: a read with
        fewer digits is below, one with more is above, and one of the same length compares digit by
        digit (:func:`compare_numbers`). Only the ``MAX_NUMBER_READS`` tiles likeliest to start with
        a digit are compared, and pooled weighted by the square of each one's chance of being a
        number at all, so a glimpse and its shifted copy that both hold the number count about once,
        and a tile that cuts it (read as empty) hardly at all."""
        b, s, c = probs.shape[0], MAX_CHARS + 1, END + 1
        tmpl, starts = text.words(b)
        tmpl = tmpl.view(b, -1, s, c)
        # only the instruction's first MAX_NUMBERS number words are compared (a few, against ~60 words)
        number = number_words(tmpl, starts)
        first = number.float() - 1e-3 * torch.arange(tmpl.shape[1], device=tmpl.device)
        sel = first.topk(min(MAX_NUMBERS, tmpl.shape[1]), -1).indices
        reads = probs.float().view(b, -1, s, c)
        # only the tiles likeliest to hold a number are compared (a few, against ~96 tiles)
        top = reads[:, :, 0, :N_DIGITS].sum(-1).topk(min(MAX_NUMBER_READS, reads.shape[1]), -1).indices
        reads = reads.gather(1, top[..., None, None].expand(-1, -1, s, c))
        f = compare_numbers(reads,
                            tmpl.gather(1, sel[..., None, None].expand(-1, -1, s, c)).float(),
                            number.gather(1, sel))  # (B, R, MAX_NUMBERS, 3)
        tot = f.sum(-1)  # (B, R, MAX_NUMBERS): the chance the tile reads a number at all
        w = tot * tot
        dist = (f * w[..., None]).sum((1, 2)) / w.sum((1, 2))[:, None].clamp(min=1e-6)
        sure = tot.flatten(1).amax(1, keepdim=True)
        return torch.cat([dist * sure, sure], -1)

    def match_of(self, probs: torch.Tensor, k: int, text: TextCache) -> torch.Tensor:
        """:meth:`read_match` from the reader's probabilities for the same tiles, (B, R*K, C), R
        reads per glimpse (``PixelConfig.reads_per_glimpse``, phase-major)."""
        b = probs.shape[0]
        tmpl, starts = text.words(b)
        m = torch.bmm(probs.float(), tmpl.float().transpose(1, 2))  # (B, (P+1)*K, L)
        m = m.view(b, -1, k, m.shape[-1]) * starts[:, None, None, :].float()
        return m.transpose(1, 2) if self.config.match_per_phase or self.config.match_where else m.amax(1)

    def spread(self, bias: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor, h: torch.Tensor,
               reach: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 2, K) per-glimpse match -> each glimpse's own match plus its neighbours' on the tile
        grid, weighted by a (2R+1)^2 kernel per pointer: a field's label sits left of it, an icon's
        below it, a checkbox's right of it. The kernel is a state-chosen mix of ``match_kernels``
        learned ones; offsets are counted in tiles. ``reach``: :meth:`reach_weights`, if computed."""
        reach = self.reach_weights(boxes, mask, h) if reach is None else reach
        return bias + torch.einsum("bpkj,bpj->bpk", reach, bias)

    def reach_weights(self, boxes: torch.Tensor, mask: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(B, 2, K target, K source): how much each neighbour's match counts at each glimpse, per
        pointer (zero beyond ``match_reach`` tiles and on padding; a glimpse's own weight is not
        in it: :meth:`spread` adds the glimpse itself)."""
        c = self.config
        r, (b, k) = c.match_reach, mask.shape
        n = 2 * r + 1
        m = mask.bool()
        x0, y0, x1, y1 = boxes.unbind(-1)
        tw = ((x1 - x0) * m).amax(1, keepdim=True).clamp(min=1e-6)  # a whole tile, normalised
        th = ((y1 - y0) * m).amax(1, keepdim=True).clamp(min=1e-6)
        # grid-aligned left/top edges: a tile at the frame's left/top edge is cut short there
        gx = torch.where(x0 > 0, x0, x1 - tw) / tw
        gy = torch.where(y0 > 0, y0, y1 - th) / th
        dx = torch.round(gx[:, :, None] - gx[:, None, :])  # (B, K target, K source), in tiles
        dy = torch.round(gy[:, :, None] - gy[:, None, :])
        near = (dx.abs() <= r) & (dy.abs() <= r) & m[:, None, :] & m[:, :, None]
        # offset of the source seen from the target, as a kernel index (a word right of a box: dx < 0)
        idx = ((r - dy) * n + (r - dx)).clamp(0, n * n - 1).long()
        mix = self.match_mix(h).float().view(b, 2, -1).softmax(-1)
        kern = torch.einsum("bpm,mq->bpq", mix, self.match_kernel.float())  # (B, 2, n*n)
        w = torch.gather(kern[:, :, None, :].expand(-1, -1, k, -1), 3, idx[:, None].expand(-1, 2, -1, -1))
        return w * near[:, None]

    # -- step -------------------------------------------------------------------------------
    def _point(self, xy: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """(..., 2) points and (...,) presence -> features (..., 3*2*N_FREQ+1)."""
        feats = torch.cat([xy, (xy[..., :1] - xy[..., 1:2]) * 0.5 + 0.5], -1)
        f = fourier(feats) * present.unsqueeze(-1)
        return torch.cat([f, present.unsqueeze(-1)], -1)

    def _boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        cx = (boxes[..., 0:1] + boxes[..., 2:3]) * 0.5
        cy = (boxes[..., 1:2] + boxes[..., 3:4]) * 0.5
        return self.box_proj(fourier(torch.cat([boxes, cx, cy], -1)))

    def global_boxes(self, batch: int, device, dtype) -> torch.Tensor:
        c = self.config
        nx, ny = c.global_w // c.patch, c.global_h // c.patch
        ys, xs = torch.meshgrid(torch.arange(ny, device=device), torch.arange(nx, device=device), indexing="ij")
        xs, ys = xs.flatten().to(dtype), ys.flatten().to(dtype)
        b = torch.stack([xs / nx, ys / ny, (xs + 1) / nx, (ys + 1) / ny], -1)
        return b[None].expand(batch, -1, -1)

    def snap(self, offsets: torch.Tensor, h: torch.Tensor, where: torch.Tensor, word_p: torch.Tensor,
             match_pos: torch.Tensor | None, boxes: torch.Tensor, glimpse_mask: torch.Tensor,
             n_global: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``match_snap``: each glimpse's offset, per pointer (B, 2, N, 2), moved toward where that
        pointer's word matched on the screen. Every read window's placement of the word is a
        candidate; a glimpse chooses among them by score (``where``, (B, 2, K, R)), by where on
        the screen the placement lies (learned: an instruction bar's copy of the word is never the
        target) and by how far it lies outside the glimpse (a label centred just across a tile's
        edge still names the row in it). The move is a learned function of the chosen placement's
        score (the choice weighs where to go, not how far: it cannot learn to go nowhere) times a
        learned fraction per pointer, axis and state (a click beside a label keeps its own x), to
        the placement plus a learned shift, in the glimpse's units, kept in the box.

        Returns the offsets and, for :func:`~policies.pixel.codec.loss` in training, each glimpse's
        choice logits over the candidates, the candidates (screen units), their scores and the
        moves' fractions (``snap_logits``, ``snap_spots``, ``snap_scores``, ``snap_alpha``)."""
        if match_pos is None:
            raise ValueError("a match_snap model needs match_pos (policies.pixel.drawn)")
        b, r = where.shape[0], where.shape[3]
        pos = match_pos.float()[..., :word_p.shape[-1], :]
        at = torch.einsum("bjl,bkrlc->bjkrc", word_p, pos)  # (B, 2, K, R, 2) in the window's glimpse
        lo, hi = boxes[..., :2].float(), boxes[..., 2:].float()  # (B, K, 2)
        spot = (lo[:, None, :, None] + at * (hi - lo)[:, None, :, None]).flatten(2, 3)  # (B, 2, K*R, 2) on screen
        score = where.flatten(2)  # (B, 2, K*R)
        dt = self.snap_in.weight.dtype
        hid = self.snap_in(torch.cat([spot, score[..., None]], -1).to(dt)).float()
        hid = hid + self.snap_state(h).float().view(b, 2, 1, -1)
        z = SNAP_SHARPNESS * score + self.snap_out(F.gelu(hid).to(dt)).float()[..., 0]  # per candidate
        z = z.masked_fill(~glimpse_mask.bool().repeat_interleave(r, 1)[:, None], -1e4)
        # how far each candidate lies outside each glimpse (screen units): (B, 2, K, K*R)
        out = (F.relu(lo[:, None, :, None] - spot[:, :, None]) + F.relu(spot[:, :, None] - hi[:, None, :, None])).sum(-1)
        z = z[:, :, None] - SNAP_OUTSIDE * out
        if self.training:
            w = z.softmax(-1)
        else:  # one placement: two that each half-match would put the click between them
            w = (z == z.amax(-1, keepdim=True)).float()  # (ties share; no one_hot: its depth would be traced)
            w = w / w.sum(-1, keepdim=True)
        chosen = (torch.einsum("bjkn,bjnc->bjkc", w, spot) - lo[:, None]) / (hi - lo).clamp(min=1e-6)[:, None]
        chosen_score = torch.einsum("bjkn,bjn->bjk", w, score)[..., None]  # (B, 2, K, 1)
        conf = torch.sigmoid(self.snap_conf(chosen_score.to(dt)).float())  # how far that score warrants
        alpha = conf * torch.sigmoid(self.snap_gate(h).float()).view(b, 2, 1, 2)
        goal = (chosen + self.snap_shift(h).float().view(b, 2, 1, 2)).clamp(0, 1)  # a point in the glimpse
        gl = offsets[:, :, n_global:].float()
        moved = gl + alpha * (goal - gl)
        aux = {"snap_logits": z, "snap_spots": spot, "snap_scores": score, "snap_alpha": alpha}
        return torch.cat([offsets[:, :, :n_global], moved.to(offsets.dtype)], 2), aux

    def cells(self, offsets: torch.Tensor, hidden: torch.Tensor, mid: torch.Tensor, n_global: int,
              placed: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``cell_offsets``: each pointer's query (from its offset head's hidden state per glimpse,
        ``hidden`` (B, 2, K, D)) meets each cell of the glimpse's middle feature map and the cells'
        own encoder's (``mid``, (B*K, C, S, S)) and chooses one, with a learned point in it. One
        cell is taken (ties share), never a blend: two likely cells would put the point between
        them. Where the offset head's point (``offsets``, (B, 2, N, 2)) lies more than half a cell
        outside the chosen cell on an axis, that axis may take the cell's point: a radio button's
        row, not the middle of the tile's rows. Whether it does is learned (``cell_trust``, from the
        hidden state and how sure the choice is: a dialog's small x is the offset head's to find),
        and a choice less sure than ``CELL_SURE`` never moves (the second of two text fields).
        Where the snap placed the point on its word (``placed``, (B, 2, K): its move's larger
        fraction, at least a half), the word decides and the cell does not.

        Returns the offsets and, for :func:`~policies.pixel.codec.loss` in training, the choices'
        logits, each cell's point, the trust logits, and the points before and after a move
        (``cell_logits``, ``cell_points``, ``cell_trust``, ``cell_base``, ``cell_moved``)."""
        b, _, k, _ = hidden.shape
        s = mid.shape[-1]
        dt = self.cell_k.weight.dtype
        keys = self.cell_k(mid.flatten(2).transpose(1, 2).to(dt)).view(b, k, s * s, -1) + self.cell_pos.to(dt)
        q = self.cell_q(hidden.to(dt))  # (B, 2, K, CELL_DIM)
        logits = torch.einsum("bjkc,bknc->bjkn", q.float(), keys.float()) / math.sqrt(CELL_DIM)
        fine = torch.sigmoid(self.cell_fine(F.gelu(keys[:, None] + q[:, :, :, None])).float())  # (B, 2, K, S*S, 2)
        n = torch.arange(s * s, device=mid.device)
        lo = torch.stack([n % s, n // s], -1).float() / s  # each cell's top-left, as a glimpse offset
        points = lo + fine / s
        p = logits.softmax(-1)
        best = p.amax(-1, keepdim=True)
        pick = (p == best).float()
        pick = pick / pick.sum(-1, keepdim=True)
        at = torch.einsum("bjkn,bjknc->bjkc", pick, points)
        cell_lo = torch.einsum("bjkn,nc->bjkc", pick, lo)
        base = offsets[:, :, n_global:].float()
        margin = 0.5 / s
        outside = (base < cell_lo - margin) | (base > cell_lo + (1.0 + 0.5) / s)
        trust = self.cell_trust(torch.cat([hidden.to(dt), best.to(dt)], -1)).float()  # (B, 2, K, 1)
        take = (trust > 0) & (best >= CELL_SURE)
        if placed is not None:
            take = take & (placed.float() < 0.5)[..., None]
        candidate = torch.where(outside, at, base)  # the point if the cell is trusted
        moved = torch.where(take, candidate, base)
        aux = {"cell_logits": logits, "cell_points": points, "cell_trust": trust[..., 0], "cell_base": base,
               "cell_moved": candidate}
        return torch.cat([offsets[:, :, :n_global], moved.to(offsets.dtype)], 2), aux

    def forward(
        self,
        global_view: torch.Tensor,  # (B, GH, GW, 3) uint8
        glimpses: torch.Tensor,  # (B, K, G, G, 3) uint8
        boxes: torch.Tensor,  # (B, K, 4) float
        glimpse_mask: torch.Tensor,  # (B, K) bool
        screen: torch.Tensor,  # (B, 4)
        cursor: torch.Tensor,  # (B, 3): x, y, present
        history_types: torch.Tensor,  # (B, H) long, len(action_types) = none
        history_points: torch.Tensor,  # (B, H, 3): x, y, present
        text_ids: torch.Tensor | None = None,  # (B, L) long
        text_cache: TextCache | None = None,
        read_glimpses: torch.Tensor | None = None,  # (B, P*K, G, G, 3) uint8: match models
        read_probs: torch.Tensor | None = None,  # (B, (P+1)*K, C): the reader's, on glimpses then copies
        match: torch.Tensor | None = None,  # (B, K[, R], L): read_match's scores, precomputed (training), or drawn
        order: torch.Tensor | None = None,  # (B, 4): order_of's, precomputed (training; match_order models)
        match_pos: torch.Tensor | None = None,  # (B, K, R, L, 2): match_at models, where each drawing matched
        **_: object,
    ) -> PixelOutput:
        c = self.config
        if text_cache is None:
            if text_ids is None:
                raise ValueError("give text_ids or text_cache")
            text_cache = self.encode_text(text_ids)
        dtype = self.cls.dtype
        b = global_view.shape[0]
        d = c.hidden_size
        kind = self.kind_emb.weight
        # CLS (+ screen geometry)
        tok_cls = self.cls.expand(b, -1, -1) + self.screen_proj(screen.to(dtype))[:, None] + kind[KIND_CLS]
        # cursor
        cur = self._point(cursor[:, :2].to(dtype), cursor[:, 2].to(dtype))
        tok_cur = self.point_proj(cur)[:, None] + kind[KIND_CURSOR]
        # history
        hp = self._point(history_points[..., :2].to(dtype), history_points[..., 2].to(dtype))
        tok_hist = (self.point_proj(hp) + self.hist_type(history_types) + self.hist_pos.weight[None]
                    + kind[KIND_HISTORY])
        # global view patches
        p = c.patch
        gv = global_view.to(dtype) * (1.0 / 255.0) - 0.5
        gh, gw = c.global_h // p, c.global_w // p
        gv = gv.view(b, gh, p, gw, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, p * p * 3)
        gboxes = self.global_boxes(b, gv.device, torch.float32)
        tok_glob = self.patch_embed(gv) + self.global_pos + self._boxes(gboxes.to(dtype)) + kind[KIND_GLOBAL]
        # glimpses
        k = glimpses.shape[1]
        gl = stem_input(glimpses.reshape(b * k, c.glimpse_px, c.glimpse_px, 3), dtype)
        if c.cell_offsets:  # the middle map is kept: its cells are what the pointers choose among
            mid = self.stem[:4](gl)
            cell_in = torch.cat([mid, self.cell_conv(gl)], 1)
            gl = self.stem[4:](mid).flatten(1)
        else:
            gl = self.stem(gl).flatten(1)
        boxes = boxes.float()  # pointer boxes stay float32: a bf16 box edge can be off by pixels
        tok_gl = self.glimpse_proj(gl).view(b, k, d) + self._boxes(boxes.to(dtype)) + kind[KIND_GLIMPSE]
        if c.match:
            if read_probs is None and (match is None or (c.match_order and order is None)):
                if read_glimpses is None:
                    raise ValueError("a match model needs read_glimpses, read_probs or match (and order)")
                read_probs = self.read_probs_of(glimpses, read_glimpses)
            if match is None:
                match = self.match_of(read_probs, k, text_cache)
            if c.match_order and order is None:
                order = self.order_of(read_probs, text_cache)
            match = match.float()
            states, starts = _batched(text_cache.states, b), _batched(text_cache.starts, b)
            match, starts = match[..., :starts.shape[1]], starts[:, :match.shape[-1]]
            states = states[:, :match.shape[-1]]
            # text-only word summaries: which words of the instruction each slot stands for
            sk = self.match_slot_k(states).float()
            att = torch.einsum("sd,bld->bsl", self.match_slot_q.float(), sk) / math.sqrt(d)
            att = att.masked_fill(~starts[:, None, :], -1e4).softmax(-1)
            per_read = match if match.dim() == 4 else None  # (B, K, R, L); the pointer takes the best read
            if per_read is not None:
                match = per_read.amax(2)
            if c.match_per_phase:
                feats = torch.einsum("bsl,bkpl->bkps", att, per_read).flatten(2)
            else:
                feats = torch.einsum("bsl,bkl->bks", att, match)
            tok_gl = tok_gl + self.match_in(feats.to(dtype))
        x = torch.cat([tok_cls, tok_cur, tok_hist, tok_glob, tok_gl], 1)
        n_fixed = 2 + c.history + gh * gw
        vis_mask = torch.cat([torch.ones(b, n_fixed, dtype=torch.bool, device=x.device), glimpse_mask.bool()], 1)
        tmask = _batched(text_cache.mask, b)
        mask = torch.cat([tmask, vis_mask], 1)
        for layer, kv in zip(self.layers, text_cache.kv, strict=True):
            x = layer.step(x, kv, mask)
        x = self.norm(x)
        h = x[:, 0]
        if c.match_order:  # (a match_order config is a match one)
            h = h + self.match_order_in(order.to(h.dtype))
        vis = x[:, 2 + c.history:]  # pointer candidates: global patches then glimpses
        ptr_boxes = torch.cat([gboxes, boxes], 1)
        pmask = vis_mask[:, 2 + c.history:]
        q = self.ptr_q(h).view(b, 2, d)
        kk = self.ptr_k(vis).view(b, -1, 2, d)
        scale = 1.0 / math.sqrt(d)
        ptr = torch.einsum("bjd,bnjd->bjn", q, kk) * scale
        if c.match:  # favour the glimpses whose word matches the word this pointer looks for
            tq = self.match_tq(h).view(b, 2, d).float()
            tk = self.match_tk(states).float()
            word_logits = (torch.einsum("bjd,bld->bjl", tq, tk) * scale).masked_fill(~starts[:, None, :], -1e4)
            word_p = word_logits.softmax(-1)
            bias = torch.einsum("bjl,bkl->bjk", word_p, match)  # (B, 2, K)
            if c.match_reach:
                reach = self.reach_weights(boxes, glimpse_mask, h)
                bias = self.spread(bias, boxes, glimpse_mask, h, reach)
            gate = F.softplus(self.match_gate(h).float())[:, :, None]
            temp = F.softplus(self.match_temp(h).float())[:, :, None]
            ptr = temp * ptr.float() + gate * F.pad(bias, (gh * gw, 0))
        ptr = ptr.masked_fill(~pmask[:, None, :], -1e4)
        cond = self.off_cond(h).view(b, 2, 1, d)
        off_in = vis[:, None] + cond
        if c.match_where or c.match_at or c.match_snap:  # how well each read matched this pointer's word
            where = torch.einsum("bjl,bkrl->bjkr", word_p, per_read)  # (B, 2, K, R)
        if c.match_where:  # where in each glimpse this pointer's word was read (none on global patches)
            off_in = off_in + F.pad(self.match_where_in(where.to(dtype)), (0, 0, gh * gw, 0))
        if c.match_at:  # where each window's drawing of this pointer's word matched, by how well it did
            if match_pos is None:
                raise ValueError("a match_at model needs match_pos (policies.pixel.drawn)")
            pos = match_pos.float()[..., :per_read.shape[-1], :]
            at = torch.einsum("bjl,bkrl,bkrlc->bjkrc", word_p, per_read, pos).flatten(3)
            off_in = off_in + F.pad(self.match_at_in(torch.cat([where, at], -1).to(dtype)), (0, 0, gh * gw, 0))
        hidden = F.gelu(off_in)
        offsets = self.off_out(hidden)  # (B, 2, N, 2)
        if c.match_where_near:  # one offset per read window, chosen by where this glimpse or the ones
            # around it (a field's label, left of it) read the word: two rows in a tile, not their middle
            pull = reach.detach().clamp(min=0)  # the kernel stays the pointer's; where its words count,
            pull = pull / pull.sum(-1, keepdim=True).clamp(min=1e-6)  # as a mean: one scale at any distance
            near = torch.einsum("bpkj,bpjr->bpkr", pull, where)
            choice = ((where + near) * WHERE_SHARPNESS).softmax(-1)  # (B, 2, K, R)
            delta = self.match_where_off(hidden[:, :, gh * gw:]).view(*choice.shape, 2)
            offsets = offsets + F.pad((choice[..., None].to(delta.dtype) * delta).sum(3), (0, 0, gh * gw, 0))
        snap_aux: dict[str, torch.Tensor] = {}
        if c.match_snap:
            offsets, snap_aux = self.snap(offsets, h, where, word_p, match_pos, boxes, glimpse_mask, gh * gw)
        cell_aux: dict[str, torch.Tensor] = {}
        if c.cell_offsets:
            placed = snap_aux["snap_alpha"].amax(-1) if c.match_snap else None  # how far a word moved each point
            offsets, cell_aux = self.cells(offsets, hidden[:, :, gh * gw:], cell_in, gh * gw, placed)
        sq = self.span_q(h).view(b, 2, d)
        sk = _batched(self.span_k(text_cache.states), b)
        span = torch.einsum("bjd,bld->bjl", sq, sk) * scale
        span = span.masked_fill(~tmask[:, None, :], -1e4)
        return PixelOutput(
            type_logits=self.head_type(h),
            button_logits=self.head_button(h),
            count_logits=self.head_count(h),
            key_logits=self.head_key(h),
            scroll_logits=self.head_scroll(h).view(b, 2, -1),
            wait_logits=self.head_wait(h),
            pointer_logits=ptr,
            offsets=offsets,
            boxes=ptr_boxes,
            span_start=span[:, 0],
            span_end=span[:, 1],
            word_logits=word_logits if c.match and self.training else None,
            **(snap_aux if self.training else {}),
            **(cell_aux if self.training else {}),
        )
