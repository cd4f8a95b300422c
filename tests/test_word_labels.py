"""A person's demo names no target word; the frozen reader's best read in the clicked glimpse does
(policies.pixel.grounding.Grounding.loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from policies.pixel.codec import NO_WORD
from policies.pixel.grounding import READ_LABEL, Grounding


class Out:
    def __init__(self, logits, best):
        self.aux = {"word_logits": logits, "word_best": best}


def _case():
    torch.manual_seed(0)
    b, n, length = 4, 6, 10
    logits = torch.randn(b, 2, length)
    best = torch.zeros(b, n, length)
    best[0, 3, 2] = 0.9  # token 3 reads the word at byte 2 well
    best[1, 4, 7] = 0.8
    best[2, 1, 5] = READ_LABEL - 0.1  # read too poorly to label
    best[3, 2, 0] = 0.95
    return logits, best


def test_an_unnamed_targets_word_is_the_one_read_best_there():
    logits, best = _case()
    labels = {"word": torch.tensor([-1, -1, -1, NO_WORD]), "ptr0": torch.tensor([3, 4, 1, 2])}
    got = Grounding.loss(None, Out(logits, best), labels, None)["word"]
    # rows 0 and 1 are labelled by their reads; row 2 read too poorly; row 3's demo named targets
    # but none for this step (NO_WORD): never relabelled
    want = F.cross_entropy(logits[:2, 0], torch.tensor([2, 7]))
    assert torch.allclose(got, want)


def test_a_named_word_stands_and_a_key_has_none():
    logits, best = _case()
    labels = {"word": torch.tensor([5, -1, -1, -1]), "ptr0": torch.tensor([3, -1, -1, -1])}
    got = Grounding.loss(None, Out(logits, best), labels, None)["word"]
    assert torch.allclose(got, F.cross_entropy(logits[:1, 0], torch.tensor([5])))  # not the read's 2
    none = {"word": torch.tensor([-1, -1, -1, -1]), "ptr0": torch.tensor([-1, -1, -1, -1])}
    assert Grounding.loss(None, Out(logits, best), none, None) == {}
