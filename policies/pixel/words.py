"""Instruction words as a reader names them: the character classes a reader predicts per slot,
each instruction word's template in that space, where words start, and number comparison.

Shared by the learned reader (:mod:`policies.pixel.vision`), the grounders
(:mod:`policies.pixel.grounding`) and the template matcher (:mod:`policies.pixel.templates`).
"""

from __future__ import annotations

import string

import torch
import torch.nn.functional as F

CHARS = string.printable[:95]  # what a reader names: printable ASCII (letters, digits, punctuation, space)


END = len(CHARS)  # the class after the last character


MAX_CHARS = 12  # a reader names up to this many characters, then END


READ_WIDTH = (MAX_CHARS + 1) * (END + 1)  # a reader's probabilities per tile, flattened


def decode_word(classes) -> str:
    """A slot reader's character classes up to the first END -> the word it names."""
    out = []
    for c in classes:
        if c >= END:
            break
        out.append(CHARS[c])
    return "".join(out)


WORD_EXTRA = "-'_&/@"  # besides letters and digits, these stay inside an instruction word


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


def word_match(probs: torch.Tensor, template: torch.Tensor, forgive: bool = True) -> torch.Tensor:
    """(B, W, READ_WIDTH) reads and (B, L, READ_WIDTH) word templates (:func:`word_templates`) ->
    (B, W, L): the expected fraction of the word's slots each read got right; with ``forgive``, one
    dropped letter is forgiven at the cost of one more slot.

    Exactly, that is ``read . template``; with the word's letter j dropped, slots before j are read
    in place and the rest one slot early. A spelling reader's misses mostly drop a thin letter
    ("Engish"), which shifts every slot after it: 3 of 8 in place, 6 of 8 forgiven. Slots are
    taken as independent, as the reader predicts them."""
    if not forgive:
        return torch.bmm(probs.float(), template.float().transpose(1, 2))
    b, w = probs.shape[:2]
    s, c = MAX_CHARS + 1, END + 1
    p = probs.float().view(b, w, s, c).transpose(1, 2)  # (B, S, W, C)
    t = template.float().view(b, -1, s, c).transpose(1, 2)  # (B, S, L, C)
    same = torch.matmul(p, t.transpose(2, 3))  # (B, S, W, L): slot k read as the word's slot k
    early = torch.matmul(p[:, :-1], t[:, 1:].transpose(2, 3))  # slot k read as the word's slot k + 1
    before = same[:, :-1].cumsum(1) - same[:, :-1]  # dropped at j: slots before j in place
    after = early.sum(1, keepdim=True) - (early.cumsum(1) - early)  # and slots j.. one early
    slot = t.amax(3).amax(1)  # (B, L): one slot's weight (1 / the word's slots)
    dropped = (before + after).amax(1) - slot[:, None, :]
    return torch.maximum(same.sum(1), dropped)


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


def is_word_char(ch: str) -> bool:
    """Whether ``ch`` belongs inside an instruction word (:func:`word_templates`)."""
    return ch.isalnum() or ch in WORD_EXTRA


def _byte_tables() -> tuple[torch.Tensor, torch.Tensor]:
    cls = torch.full((257,), END, dtype=torch.long)
    word = torch.zeros(257, dtype=torch.bool)
    for i, ch in enumerate(CHARS):
        cls[ord(ch)] = i
        word[ord(ch)] = is_word_char(ch)
    return cls, word


def word_position(raw: bytes, word: str | None) -> int:
    """Where ``word`` starts in the instruction's bytes ``raw``, as a whole word (its quoted
    occurrence first), or -1: the ``word`` label of a sample whose target a demo named
    (``agent.sessions.format.EXPERT_TARGET``). Whole: no word byte (:func:`word_templates`' kind) just
    before or just after it, so "Blue" is not found at the start of "Bluetooth"."""
    if not word:
        return -1
    w = word.encode("utf-8")

    def whole(i: int) -> bool:
        j = i + len(w)
        return ((i == 0 or not is_word_char(chr(raw[i - 1])))
                and (j >= len(raw) or not is_word_char(chr(raw[j]))))

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

