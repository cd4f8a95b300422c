"""Grounding: how the instruction's words are found on the screen, and how that steers the step.

A grounder scores, for every glimpse, each of its read windows against each instruction word
(``(B, K, R, L)``, 0..1). Two implementations share the rest:

- :class:`ReaderGrounding`: a pretrained reader (frozen) names the word centred in each read
  window; the score is the expected fraction of the word's characters it got right
  (:func:`policies.pixel.words.word_templates`). It may also compare the numbers it reads with the
  instruction's (``order``).
- :class:`TemplateGrounding`: each instruction word is drawn in the styles the config names and
  matched by normalised cross-correlation (:mod:`policies.pixel.templates`), outside the network.

Given the scores, the grounding adds to each glimpse token which instruction words it holds (a
few learned word summaries), learns which word each pointer looks for (``word_logits``, taught
where demos name the target's word), and adds that word's match to the pointer's logits, spread
over the tiles around it by a learned kernel (``reach``: a label names the field beside it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from policies.pixel.configuration import GroundingConfig
from policies.pixel.processing import READS
from policies.pixel.vision import DARK_GROUND, make_reader
from policies.pixel.words import (
    END,
    MAX_CHARS,
    MAX_NUMBER_READS,
    MAX_NUMBERS,
    N_DIGITS,
    READ_WIDTH,
    compare_numbers,
    number_words,
    word_match,
    word_templates,
)


def batched(t: torch.Tensor, b: int) -> torch.Tensor:
    """``t`` for a batch of ``b``: an instruction encoded once (batch 1) is shared by every row."""
    return t if t.shape[0] == b else t.expand(b, *([-1] * (t.dim() - 1)))


@dataclass
class TextCache:
    """What :meth:`policies.pixel.modeling.PixelModel.encode_text` computes once per instruction."""

    kv: list
    states: torch.Tensor  # (B, L, d) final text states
    span_keys: torch.Tensor  # (B, L, d) the keys a typed span's start and end point at
    mask: torch.Tensor  # (B, L) bool, True = real byte
    template: torch.Tensor | None = None  # (B, L, S*C) word templates (grounded models): word_templates
    starts: torch.Tensor | None = None  # (B, L) bool: a word starts here (grounded models)

    def words(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``template`` and ``starts`` for a batch of ``b`` (an instruction cached once is shared)."""
        return batched(self.template, b), batched(self.starts, b)

    # -- as an exported graph's inputs: one flat list, its names, and its text axes ------------
    def _named_parts(self) -> list[tuple[str, torch.Tensor, int]]:
        """(name, tensor, text axis) of each part, in the graph's order (the one place for it)."""
        match = [("text_template", self.template, 1), ("text_starts", self.starts, 1)] if self.template is not None else []
        return [("text_states", self.states, 1), ("text_span_keys", self.span_keys, 1), ("text_mask", self.mask, 1),
                *match, *((f"text_{n}{i}", t, 2) for i, kv in enumerate(self.kv) for n, t in zip("kv", kv, strict=True))]

    def parts(self) -> list[torch.Tensor]:
        return [t for _, t, _ in self._named_parts()]

    def part_names(self) -> list[str]:
        return [n for n, _, _ in self._named_parts()]

    def text_axes(self) -> dict[str, int]:
        """Each part's text (length) axis."""
        return {n: axis for n, _, axis in self._named_parts()}

    @classmethod
    def from_parts(cls, parts, words: bool) -> TextCache:
        """The cache :meth:`parts` flattened (``words``: it holds a template and word starts)."""
        states, span_keys, mask, *rest = parts
        template = starts = None
        if words:
            template, starts, *rest = rest
        return cls([(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)], states, span_keys, mask,
                   template, starts)


@dataclass
class Step:
    """One forward pass as the grounding and the refiners see it. The core model fills the first
    part; the grounding adds what it found; refiners read both and add their own."""

    b: int
    k: int
    n_global: int  # pointer candidates before the glimpses (global patches)
    dtype: torch.dtype
    text: TextCache
    boxes: torch.Tensor  # (B, K, 4) float32
    glimpse_mask: torch.Tensor  # (B, K) bool
    stem_in: torch.Tensor  # (B*K, 3, G, G) the stem's input
    stem_mid: torch.Tensor  # (B*K, C, S, S) the stem's middle map
    inputs: dict  # the grounding's inputs (read_glimpses, read_probs, match, order, match_pos)
    per_read: torch.Tensor | None = None  # (B, K, R, L) each read window's match of each word
    best: torch.Tensor | None = None  # (B, K, L) each glimpse's best read window's
    text_states: torch.Tensor | None = None  # (B, L', d) and (B, L') the text as far as words are scored
    text_starts: torch.Tensor | None = None
    word_p: torch.Tensor | None = None  # (B, 2, L) which word each pointer looks for
    reach: torch.Tensor | None = None  # (B, 2, K, K) the reach kernel's weights
    placed: torch.Tensor | None = None  # (B, 2, K) how far a word placed each point (snap)
    aux: dict = field(default_factory=dict)  # training outputs the modules' losses read
    _where: torch.Tensor | None = None

    def where(self) -> torch.Tensor:
        """(B, 2, K, R): how well each read window matched the word each pointer looks for."""
        if self._where is None:
            self._where = torch.einsum("bjl,bkrl->bjkr", self.word_p, self.per_read)
        return self._where


class NoGrounding(nn.Module):
    """A model without grounding: the pointer sees pixels alone."""

    @staticmethod
    def example_inputs(k: int) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {}

    step_inputs: tuple[str, ...] = ()  # training arrays per frame, beside the core's
    run_inputs: tuple[str, ...] = ()  # inputs of the step a policy runs
    text_inputs: tuple[str, ...] = ()  # parts of the text cache the step takes

    def text(self, cache: TextCache, text_ids: torch.Tensor) -> None:
        pass

    def init_weights(self) -> None:
        pass

    def glimpse_tokens(self, step: Step, tok_gl: torch.Tensor) -> torch.Tensor:
        return tok_gl

    def state(self, step: Step, h: torch.Tensor) -> torch.Tensor:
        return h

    def pointer(self, step: Step, h: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        return ptr

    def loss(self, out, labels: dict[str, torch.Tensor], target_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def untie_kernels(self, generator: torch.Generator | None = None) -> bool:
        return False

    def precompute_samples(self, model: nn.Module, data: dict) -> dict:
        """Training samples (numpy arrays) with ``read_glimpses`` replaced by what this grounding makes
        of them (fixed per sample), for :func:`policies.pixel.training.precompute`."""
        return data

    def precompute_version(self) -> list:
        """What :meth:`precompute_samples` depends on beyond the config and weights (cache keys)."""
        return []


class Grounding(NoGrounding):
    """What both grounders share: word summaries into the glimpse tokens, each pointer's word,
    and the word's match (spread by the reach kernel) as a bias on the pointer's logits."""

    step_inputs = ("read_glimpses",)
    text_inputs = ("text_template", "text_starts")

    def __init__(self, g: GroundingConfig, d: int):
        super().__init__()
        self.g = g
        self.d = d
        self.tq = nn.Linear(d, 2 * d)  # which instruction word each pointer looks for
        self.tk = nn.Linear(d, d)
        self.gate = nn.Linear(d, 2)  # how much each pointer trusts the match, per state
        self.temp = nn.Linear(d, 2)  # and how much its own (visual) pointer logits
        self.slot_q = nn.Parameter(torch.zeros(g.slots, d))
        self.slot_k = nn.Linear(d, d)
        self.inp = nn.Linear(g.slots, d)
        if g.reach:  # a word names the widget beside it: spread the match over the tile grid
            n = 2 * g.reach + 1
            self.kernel = nn.Parameter(torch.zeros(g.kernels, n * n))
            self.mix = nn.Linear(d, 2 * g.kernels)  # which kernel, per pointer and state

    @torch.no_grad()
    def init_weights(self) -> None:
        """Start as the model without grounding (the pointer bias is learned from there)."""
        nn.init.normal_(self.slot_q, std=0.02)
        nn.init.zeros_(self.inp.weight)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, 4.0)
        nn.init.zeros_(self.temp.weight)
        nn.init.constant_(self.temp.bias, math.log(math.e - 1))  # softplus -> 1: logits as they were
        if self.g.reach:  # kernels start at zero: only a glimpse's own match counts
            nn.init.zeros_(self.kernel)
            self._draw_mix()

    def untie_kernels(self, generator: torch.Generator | None = None) -> bool:
        """Draw the kernel mix's weights at random when they are all zero; True if it did.

        With every mix weight at zero, each kernel gets the same share in every state, so each
        gets the same gradient: kernels that start equal stay equal, and the mix never learns to
        choose between them. Random mix weights break the tie without changing any output while
        the kernels are still equal."""
        if not self.g.reach or bool(self.mix.weight.any()):
            return False
        with torch.no_grad():
            self._draw_mix(generator)
        return True

    def _draw_mix(self, generator: torch.Generator | None = None) -> None:
        nn.init.normal_(self.mix.weight, std=1 / math.sqrt(self.d), generator=generator)
        nn.init.zeros_(self.mix.bias)

    def text(self, cache: TextCache, text_ids: torch.Tensor) -> None:
        cache.template, cache.starts = word_templates(text_ids)
        cache.starts &= cache.mask

    # -- what a grounder implements ---------------------------------------------------------------
    def scores(self, step: Step) -> torch.Tensor:
        """(B, K, R, L) each read window's match of each instruction word (zero where none starts)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------
    def glimpse_tokens(self, step: Step, tok_gl: torch.Tensor) -> torch.Tensor:
        match = self.scores(step).float()
        b = step.b
        states, starts = batched(step.text.states, b), batched(step.text.starts, b)
        match, starts = match[..., :starts.shape[1]], starts[:, :match.shape[-1]]
        step.text_states, step.text_starts = states[:, :match.shape[-1]], starts
        # text-only word summaries: which words of the instruction each slot stands for
        sk = self.slot_k(step.text_states).float()
        att = torch.einsum("sd,bld->bsl", self.slot_q.float(), sk) / math.sqrt(self.d)
        att = att.masked_fill(~starts[:, None, :], -1e4).softmax(-1)
        step.per_read = match
        step.best = match.amax(2)  # (B, K, L): the pointer takes the best read
        feats = torch.einsum("bsl,bkl->bks", att, step.best)
        return tok_gl + self.inp(feats.to(step.dtype))

    def pointer(self, step: Step, h: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        """Favour the glimpses whose word matches the word each pointer looks for."""
        b, d = step.b, self.d
        tq = self.tq(h).view(b, 2, d).float()
        tk = self.tk(step.text_states).float()
        logits = (torch.einsum("bjd,bld->bjl", tq, tk) * (1.0 / math.sqrt(d))).masked_fill(~step.text_starts[:, None, :], -1e4)
        step.word_p = logits.softmax(-1)
        step.aux["word_logits"] = logits
        bias = torch.einsum("bjl,bkl->bjk", step.word_p, step.best)  # (B, 2, K)
        if self.g.reach:
            step.reach = self.reach_weights(step.boxes, step.glimpse_mask, h)
            bias = bias + torch.einsum("bpkj,bpj->bpk", step.reach, bias)
        gate = F.softplus(self.gate(h).float())[:, :, None]
        temp = F.softplus(self.temp(h).float())[:, :, None]
        return temp * ptr.float() + gate * F.pad(bias, (step.n_global, 0))

    def reach_weights(self, boxes: torch.Tensor, mask: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """(B, 2, K target, K source): how much each neighbour's match counts at each glimpse, per
        pointer (zero beyond ``reach`` tiles and on padding; a glimpse's own match is added apart).
        The kernel is a state-chosen mix of ``kernels`` learned ones; offsets count in tiles."""
        r, (b, k) = self.g.reach, mask.shape
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
        mix = self.mix(h).float().view(b, 2, -1).softmax(-1)
        kern = torch.einsum("bpm,mq->bpq", mix, self.kernel.float())  # (B, 2, n*n)
        w = torch.gather(kern[:, :, None, :].expand(-1, -1, k, -1), 3, idx[:, None].expand(-1, 2, -1, -1))
        return w * near[:, None]

    def loss(self, out, labels: dict[str, torch.Tensor], target_offsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """``word``: each demo that names its target's word teaches the first pointer to look for it."""
        t = labels["word"].clamp(min=-1)
        if not (t >= 0).any():
            return {}
        return {"word": F.cross_entropy(out.aux["word_logits"][:, 0].float(), t, ignore_index=-1)}


class ReaderGrounding(Grounding):
    """A frozen, pretrained reader names the word centred in each read window."""

    run_inputs = ("read_probs",)  # made outside the step, each distinct window read once (policies.pixel.reads)

    @staticmethod
    def example_inputs(k: int) -> tuple[dict[str, torch.Tensor], dict]:
        """Inputs of the step a policy runs, as zeros for an export, and their dynamic axes."""
        return {"read_probs": torch.zeros(1, READS * k, READ_WIDTH)}, {}

    def __init__(self, g: GroundingConfig, d: int):
        super().__init__(g, d)
        r = g.reader
        self.reader = make_reader(r.stem, r.channels, g.window_px[1], r.head, g.window_px[0])
        self.reader.requires_grad_(False)  # pretrained (dw reader) and frozen
        if g.order:  # below / equal / above the instruction's number, and how sure: into the state
            self.order_in = nn.Linear(4, d)

    @torch.no_grad()
    def init_weights(self) -> None:
        super().init_weights()
        if self.g.order:  # starts as the model without it
            nn.init.zeros_(self.order_in.weight)
            nn.init.zeros_(self.order_in.bias)

    def train(self, mode: bool = True) -> ReaderGrounding:
        """As ``nn.Module.train``, but the reader stays in eval mode: it is pretrained and frozen."""
        super().train(mode)
        self.reader.eval()
        return self

    def read_probs(self, read_glimpses: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, R*K, h, w, 3) read windows -> (B, R*K, C): the reader's probabilities for each."""
        h, w = self.g.window_px[1], self.g.window_px[0]
        b = read_glimpses.shape[0]
        return self.reader.probs(read_glimpses.reshape(-1, h, w, 3), dtype).view(b, -1, READ_WIDTH)

    def match_of(self, probs: torch.Tensor, k: int, text: TextCache) -> torch.Tensor:
        """(B, R*K, C) read probabilities (window-major) -> (B, K, R, L) match scores."""
        b = probs.shape[0]
        tmpl, starts = text.words(b)
        m = word_match(probs, tmpl, self.reader.drops_letters)  # (B, R*K, L)
        m = m.view(b, -1, k, m.shape[-1]) * starts[:, None, None, :].float()
        return m.transpose(1, 2)

    def scores(self, step: Step) -> torch.Tensor:
        inp = step.inputs
        probs = inp.get("read_probs")
        need_order = self.g.order and inp.get("order") is None
        if probs is None and (inp.get("match") is None or need_order):
            if inp.get("read_glimpses") is None:
                raise ValueError("a reader grounding needs read_glimpses, read_probs or match (and order)")
            probs = self.read_probs(inp["read_glimpses"], step.dtype)
        if need_order:
            inp["order"] = self.order_of(probs, step.text)
        match = inp.get("match")
        return self.match_of(probs, step.k, step.text) if match is None else match

    def state(self, step: Step, h: torch.Tensor) -> torch.Tensor:
        return h + self.order_in(step.inputs["order"].to(h.dtype)) if self.g.order else h

    def order_of(self, probs: torch.Tensor, text: TextCache) -> torch.Tensor:
        """(B, R*K, C) read probabilities -> (B, 4): how likely the number on screen is below, equal
        to or above the instruction's number (each times how sure the surest read is), and that
        certainty. All zero when the instruction holds no number or no window reads one.

        Per window and instruction number, exactly, if the reader's slots are independent
        (:func:`~policies.pixel.words.compare_numbers`). Only the ``MAX_NUMBER_READS`` windows
        likeliest to start with a digit are compared, pooled weighted by the square of each one's
        chance of being a number at all."""
        b, s, c = probs.shape[0], MAX_CHARS + 1, END + 1
        tmpl, starts = text.words(b)
        tmpl = tmpl.view(b, -1, s, c)
        number = number_words(tmpl, starts)
        first = number.float() - 1e-3 * torch.arange(tmpl.shape[1], device=tmpl.device)
        sel = first.topk(min(MAX_NUMBERS, tmpl.shape[1]), -1).indices
        reads = probs.float().view(b, -1, s, c)
        top = reads[:, :, 0, :N_DIGITS].sum(-1).topk(min(MAX_NUMBER_READS, reads.shape[1]), -1).indices
        reads = reads.gather(1, top[..., None, None].expand(-1, -1, s, c))
        f = compare_numbers(reads,
                            tmpl.gather(1, sel[..., None, None].expand(-1, -1, s, c)).float(),
                            number.gather(1, sel))  # (B, R, MAX_NUMBERS, 3)
        tot = f.sum(-1)  # (B, R, MAX_NUMBERS): the chance the window reads a number at all
        w = tot * tot
        dist = (f * w[..., None]).sum((1, 2)) / w.sum((1, 2))[:, None].clamp(min=1e-6)
        sure = tot.flatten(1).amax(1, keepdim=True)
        return torch.cat([dist * sure, sure], -1)

    def precompute_version(self) -> list:
        from policies.pixel.hardware import inference_dtype

        g = self.g
        return ["reader", g.window, g.window_px, g.order, str(g.reader), str(inference_dtype("cpu")), ["dark ground", DARK_GROUND]] + (
            ["one dropped letter forgiven"] if self.reader.drops_letters else [])

    @torch.no_grad()
    def precompute_samples(self, model: nn.Module, data: dict, batch_size: int = 64) -> dict:
        """The reader's scores (``match``, float16, and ``order``) in place of the read windows: the
        reader is frozen, so its reads are fixed per sample."""
        import numpy as np

        data = dict(data)
        windows = data.pop("read_glimpses")
        self.eval()
        n, k, width = len(data["labels"]), data["glimpses"].shape[1], data["text_ids"].shape[1]
        match = np.zeros((n, k, READS, width), np.float16)
        order = np.zeros((n, 4), np.float32) if self.g.order else None
        for s in range(0, n, batch_size):
            sl = slice(s, min(n, s + batch_size))
            cache = model.encode_text(torch.from_numpy(data["text_ids"][sl]))
            probs = self.read_probs(torch.from_numpy(windows[sl]), torch.float32)
            m = self.match_of(probs, k, cache)
            match[sl, ..., :m.shape[-1]] = m.float().numpy()
            if order is not None:
                order[sl] = self.order_of(probs, cache).float().numpy()
        data["match"] = match
        if order is not None:
            data["order"] = order
        return data


class TemplateGrounding(Grounding):
    """The instruction's words drawn in the config's styles and matched against each read window
    (:mod:`policies.pixel.templates`, outside the network): ``match`` and ``match_pos`` (where in
    each window the drawing matched) come in as inputs."""

    run_inputs = ("match", "match_pos")

    @staticmethod
    def example_inputs(k: int) -> tuple[dict[str, torch.Tensor], dict]:
        """Inputs of the step a policy runs, as zeros for an export, and their dynamic axes."""
        return ({"match": torch.zeros(1, k, READS, 2), "match_pos": torch.zeros(1, k, READS, 2, 2)},
                {"match": {3: "text"}, "match_pos": {3: "text"}})

    def precompute_samples(self, model: nn.Module, data: dict) -> dict:
        """The drawn matches and where they matched (float16) in place of the read windows, in
        float32 arithmetic as the policy computes them (never under a training autocast)."""
        from policies.pixel.templates import match_of_samples

        data = dict(data)
        with torch.autocast("cpu", enabled=False):
            data["match"], data["match_pos"] = match_of_samples(model.config, data.pop("read_glimpses"),
                                                                data["glimpse_mask"], data["text_ids"])
        return data

    def precompute_version(self) -> list:
        from policies.pixel import templates

        g = self.g
        return ["template", g.window, g.window_px, g.styles,
                [templates.FLAT, templates.NCC_FLOOR, templates.NCC_FULL, templates.MAX_WORDS]]

    def scores(self, step: Step) -> torch.Tensor:
        if step.inputs.get("match") is None:
            raise ValueError("a template grounding needs match (policies.pixel.templates)")
        return step.inputs["match"]


GROUNDINGS = {None: NoGrounding, "reader": ReaderGrounding, "template": TemplateGrounding}


def grounding_class(g: GroundingConfig | dict | None) -> type[NoGrounding]:
    """The grounding module a config's ``grounding`` builds (its class: inputs without weights)."""
    kind = g.kind if isinstance(g, GroundingConfig) else (g or {}).get("kind")
    return GROUNDINGS[kind]


def build_grounding(g: GroundingConfig | None, d: int) -> NoGrounding:
    return NoGrounding() if g is None else GROUNDINGS[g.kind](g, d)
