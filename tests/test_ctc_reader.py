"""The reader that spells (``reader-ctc``): a class per column trained with CTC, read out as the
slots a grounding compares with the instruction's words."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from policies.pixel import reader as R
from policies.pixel.processing import encode_text
from policies.pixel.vision import CtcReader, ctc_slots, make_reader
from policies.pixel.words import CHARS, END, MAX_CHARS, READ_WIDTH, word_templates


def _columns(path: str, sure: float = 6.0, gap: float = 2.0) -> torch.Tensor:
    """(1, END + 1, T) logits whose best path is ``path`` ("_" a blank), each column's second
    class (the next character) ``gap`` below its best."""
    t = torch.zeros(1, END + 1, len(path))
    for j, ch in enumerate(path):
        c = END if ch == "_" else CHARS.index(ch)
        t[0, c, j] = sure
        t[0, (c + 1) % END, j] = sure - gap
    return t


def test_the_best_path_becomes_slots_of_characters_then_end():
    logits = _columns("HH_el_lo__")
    reader = make_reader("reader-ctc", 4, 32, 16, 64)
    assert isinstance(reader, CtcReader) and reader.names(logits) == ["Hello"]  # repeats merge, a blank splits
    slots = ctc_slots(logits)
    assert slots.shape == (1, MAX_CHARS + 1, END + 1)
    assert "".join(CHARS[c] for c in slots[0, :5].argmax(-1).tolist()) == "Hello"
    assert slots[0, 5, END] == 1.0 and slots[0, 6:].abs().sum() == 0  # END, then nothing
    # a slot holds its emitting column's character distribution, blank left out
    assert torch.allclose(slots[0, 0, :END], logits[0, :END, 0].softmax(0), atol=1e-6)
    assert torch.allclose(slots[0, 3, :END], logits[0, :END, 6].softmax(0), atol=1e-6)  # the second l
    # a longer word is cut after MAX_CHARS, then END, as a slot reader is taught
    long = ctc_slots(_columns("abcdefghijklmnop"))
    assert long[0, MAX_CHARS, END] == 1.0
    assert "".join(CHARS[c] for c in long[0, :MAX_CHARS].argmax(-1).tolist()) == "abcdefghijkl"
    # nothing read: END first
    assert ctc_slots(_columns("____"))[0, 0, END] == 1.0


def test_a_clean_spelled_read_matches_the_instructions_word_fully():
    ids = torch.from_numpy(encode_text("Click Hello now", 96)[0])[None]
    template, starts = word_templates(ids)
    probs = ctc_slots(_columns("H_e_l_l_o_", sure=30.0, gap=30.0)).flatten(1)  # all but certain
    score = probs @ template[0].T
    at = "Click Hello now".index("Hello")
    assert starts[0, at] and score[0, at] == pytest.approx(1.0, abs=1e-4)
    assert score[0, 0] < 0.3 and score[0, "Click Hello now".index("now")] < 0.3


def test_ctc_loss_learns_and_the_reader_reloads_as_saved(tmp_path):
    words = ["Submit", "Cancel"]
    summary = R.pretrain_reader(tmp_path, stem="reader-ctc", channels=8, head_width=32, steps=40, batch_size=16,
                                lr=3e-3, val_tiles=32, words=words, window=(96, 48, 64, 32), log=lambda s: None)
    assert summary["stem"] == "reader-ctc" and summary["history"][-1]["loss"] < summary["start_loss"] - 0.5
    cfg, model = R.load_reader(tmp_path)
    assert isinstance(model, CtcReader)
    x, targets, texts = R.batch(random.Random(1_000_003), 32, words, R.font_faces(), 64, 48, (96, 48, 64, 32))
    assert R.word_accuracy(model, x, texts) == pytest.approx(summary["val_word_acc"], abs=5e-5)
    with torch.no_grad():
        probs = model.probs(x)
    assert probs.shape == (32, READ_WIDTH)
    # a slot reader's teacher has slots, not columns
    with pytest.raises(R.ReaderError, match="teacher"):
        R.pretrain_reader(tmp_path / "t", stem="reader-ctc", channels=8, head_width=32, steps=1, batch_size=4,
                          val_tiles=4, words=words, window=(96, 48, 64, 32), teacher=tmp_path, log=lambda s: None)


def test_fused_and_int8_ctc_reads_are_the_readers_own():
    from policies.pixel.reads import Int8Reads, TileReads, _Probs, conv_act_fusable, folded

    torch.manual_seed(0)
    reader = make_reader("reader-ctc", 8, 32, 32, 64).eval()
    with torch.no_grad():  # batch norms that do something when folded
        for layer in reader.modules():
            if isinstance(layer, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 2.0)
    tiles = np.random.default_rng(0).integers(0, 255, (7, 32, 64, 3), dtype=np.uint8)
    with torch.inference_mode():
        want = reader.probs(torch.from_numpy(tiles))
        if conv_act_fusable(torch.device("cpu")):
            assert torch.allclose(_Probs(folded(reader, torch.float32), fuse=True)(torch.from_numpy(tiles)), want, atol=1e-5)
    onnx = TileReads(reader, (32, 64), "onnx").probs(tiles, np.ones(7, bool))
    assert np.allclose(onnx, want.numpy(), atol=1e-4)
    if Int8Reads.usable(reader):
        p8 = TileReads(reader, (32, 64), "torch", int8=True).probs(tiles, np.ones(7, bool))
        assert p8.shape == (7, READ_WIDTH) and np.isfinite(p8).all()
