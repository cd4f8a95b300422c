"""Reader groundings (PixelConfig.grounding kind ``reader``): word templates, the pointer's match
bias and its reach, number order, the where refiner, reading outside the step (both runtimes), and
fine-tuning an existing checkpoint to read with a frozen, pretrained reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agent.errors import UserError
from agent.sessions.demos import demo_specs, record_demo
from agent.training import recipes
from policies.base import Observation
from policies.pixel import PixelConfig, PixelModel, PixelPolicy, encode_text
from policies.pixel import reader as R
from policies.pixel.training import TrainError, grow, load_reader_weights, precompute, precompute_key
from policies.pixel.words import END, MAX_CHARS, READ_WIDTH, decode_word, word_templates
from policies.registry import bundled_checkpoint

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8}
# a reader grounding: four 96x48-point read windows a glimpse, read at 64x32 pixels by an 8-channel reader
READER = {"kind": "reader", "window": [96, 48], "window_px": [64, 32], "reader": {"channels": 8}}
WINDOW = (96, 48, 64, 32)  # the same windows as a reader pretraining takes them: points, then pixels


def _ids(text: str) -> torch.Tensor:
    return torch.from_numpy(encode_text(text, 96)[0])[None]


def _read(word: str) -> torch.Tensor:
    """What a perfect reader says of a window holding ``word``: (S*C,) one-hot per slot."""
    t = torch.from_numpy(R.encode_word(word))
    t[t < 0] = END
    return torch.nn.functional.one_hot(t, END + 1).float().flatten()


def _config(refiners=(), **grounding) -> PixelConfig:
    return PixelConfig(**SMALL, grounding={**READER, **grounding}, refiners=list(refiners))


def _grown(model: PixelModel, refiners=None, **grounding) -> PixelModel:
    """``model`` grown (:func:`policies.pixel.training.grow`) to other grounding settings or refiners."""
    c = model.config
    return grow(model, PixelConfig(**SMALL, grounding={**c.grounding, **grounding},
                                   refiners=c.refiners if refiners is None else refiners))


def _match_model(seed: int = 0, refiners=(), **grounding) -> PixelModel:
    torch.manual_seed(seed)
    m = PixelModel(_config(refiners, **grounding)).eval()
    if m.config.grounding["reach"]:  # learned kernels, not their all-zero start
        with torch.no_grad():
            m.grounding.kernel.normal_()
            m.grounding.mix.weight.normal_(std=0.1)
    return m


def _blank_step(m: PixelModel, cache) -> dict:
    """A step's inputs on a blank screen (random glimpse boxes), all but the grounding's."""
    k, g = m.config.max_glimpses, m.config.glimpse_px
    return dict(global_view=torch.zeros(1, 40, 64, 3, dtype=torch.uint8),
                glimpses=torch.zeros(1, k, g, g, 3, dtype=torch.uint8),
                boxes=torch.rand(1, k, 4), glimpse_mask=torch.ones(1, k, dtype=torch.bool),
                screen=torch.zeros(1, 4), cursor=torch.zeros(1, 3),
                history_types=torch.full((1, 4), len(m.config.action_types)), history_points=torch.zeros(1, 4, 3),
                text_cache=cache)


def _window_hit(k: int, glimpse: int, window: int, at: int) -> torch.Tensor:
    """Per-read matches (1, K, 4 windows, 96 bytes): the word at byte ``at`` read in one window of
    one glimpse, nothing else read."""
    hit = torch.zeros(1, k, 4, 96)
    hit[0, glimpse, window, at] = 1.0
    return hit


def _spread(m: PixelModel, bias: torch.Tensor, boxes: torch.Tensor, mask: torch.Tensor, h: torch.Tensor):
    """(B, 2, K) per-glimpse match bias -> the bias the pointer takes: each glimpse's own, plus its
    neighbours' by the reach kernel (as :meth:`~policies.pixel.grounding.Grounding.pointer` adds them)."""
    return bias + torch.einsum("bpkj,bpj->bpk", m.grounding.reach_weights(boxes, mask, h), bias)


def test_word_templates_score_a_perfect_read_one_at_its_word_only():
    text = 'Click the "Submit" button, then Wi-Fi.'
    tmpl, starts = word_templates(_ids(text))
    assert tmpl.shape == (1, 96, (MAX_CHARS + 1) * (END + 1))
    words = [i for i in range(len(text)) if starts[0, i]]
    assert [text[i:i + 3] for i in words] == ["Cli", "the", "Sub", "but", "the", "Wi-"]
    score = tmpl[0] @ _read("Submit")  # (L,) expected fraction of right slots
    at = text.index("Submit")
    assert float(score[at]) == pytest.approx(1.0)
    assert float(score[text.index("Wi-Fi")]) < 0.5
    assert float((tmpl[0] @ _read("Wi-Fi"))[text.index("Wi-Fi")]) == pytest.approx(1.0)  # "-" stays inside
    # a word read from a tile with more after it ("Submit" seen as "Submi" + END) still scores high
    assert 0.7 < float((tmpl[0] @ _read("Submi"))[at]) < 1.0
    # longer than MAX_CHARS: cut, then END, as the reader is taught
    long = "Extraordinarily"
    t2, _ = word_templates(_ids(long))
    assert float(t2[0, 0] @ _read(long[:MAX_CHARS])) == pytest.approx(1.0)


def test_a_read_that_drops_one_letter_still_matches_its_word_at_the_cost_of_a_slot():
    from policies.pixel.words import word_match

    text = 'Choose "English", then Off and French.'
    tmpl, starts = word_templates(_ids(text))
    reads = ["English", "Engish", "nglish", "Englis", "Spanish", "rench", "Of", "On"]
    m = word_match(torch.stack([_read(w) for w in reads])[None], tmpl)[0]  # (reads, L)
    got = {w: [round(float(m[i, text.index(x)]), 3) for x in ("English", "French", "Off")] for i, w in enumerate(reads)}
    assert got["English"] == [1.0, 0.0, 0.0]
    # a dropped letter shifts the slots after it: in place 4 of 8 ("Eng" and the END slot), forgiven 7
    # of 8 less a slot
    assert got["Engish"][0] == pytest.approx(0.75) and float(tmpl[0, text.index("English")] @ _read("Engish")) == 0.5
    assert got["nglish"][0] == pytest.approx(0.75) and got["Englis"][0] == pytest.approx(0.875)  # its END in place
    assert got["rench"][1] == pytest.approx(5 / 7, abs=1e-3)
    assert got["Of"][2] == pytest.approx(0.75) and got["On"][2] == pytest.approx(0.5)  # as in place: forgiving costs
    assert got["Spanish"][0] == pytest.approx(0.5)  # "ish" and END in place, as before
    # with nothing dropped it is the exact match, everywhere in the instruction
    exact = torch.stack([_read(w) for w in reads]) @ tmpl[0].T
    assert torch.all(m >= exact - 1e-6) and torch.allclose(m[0], exact[0])
    # a grounding forgives as its reader errs: a spelling reader drops letters, a slot reader does not
    probs = torch.stack([_read(w) for w in reads])[None]  # 2 glimpses' 4 windows each, window-major
    cache = _match_model().encode_text(_ids(text))
    for reader, want in (({"stem": "reader-ctc", "channels": 8, "head": 32}, m[1]), ({"channels": 8}, exact[1])):
        g = _match_model(reader=reader).grounding
        got = g.match_of(probs, 2, cache)[0, 1, 0]  # "Engish": window 0 of glimpse 1, per instruction byte
        assert torch.allclose(got, (want * starts[0])[:len(got)])


def test_the_pointer_favours_the_glimpse_that_reads_the_instructions_word():
    m = _match_model()
    text = 'Click the "Save" button.'
    cache = m.encode_text(_ids(text))
    k = m.config.max_glimpses
    args = _blank_step(m, cache)
    none = torch.zeros(1, k, 4, 96)
    hit = _window_hit(k, 5, 1, text.index("Save"))
    with torch.no_grad():
        a, b = m(**args, match=none), m(**args, match=hit)
    ng = m.config.num_global
    d = (b.pointer_logits - a.pointer_logits)[0, 0]
    # only glimpse 5's logit moves (grounding.inp starts at zero), by the gate times its share of the
    # pointer's attention over the instruction's words
    assert float(d[ng + 5]) > 0 and torch.count_nonzero(d) == 1
    # the match comes in precomputed, as probabilities, or as the read windows themselves
    with pytest.raises(ValueError, match="read_glimpses, read_probs or match"):
        m(**args)


def test_numbers_read_compare_with_the_instructions_number():
    from policies.pixel.words import compare_numbers, number_words

    text = "Set the zoom slider to 67, then click Submit."
    tmpl, starts = word_templates(_ids(text))
    tmpl = tmpl.view(1, 96, MAX_CHARS + 1, END + 1)
    number = number_words(tmpl, starts.view(1, 96))
    reads = ["66", "67", "68", "7", "100", "60", "70", "", "Submit", "6x"]
    probs = torch.stack([_read(w) for w in reads]).view(1, len(reads), MAX_CHARS + 1, END + 1)
    f = compare_numbers(probs, tmpl, number)
    got = {w: [round(float(v), 3) for v in f[0, i, text.index("67")]] for i, w in enumerate(reads)}
    below, equal, above = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    assert got == {"66": below, "67": equal, "68": above, "7": below, "100": above, "60": below, "70": above,
                   "": [0.0] * 3, "Submit": [0.0] * 3, "6x": [0.0] * 3}
    # only the number word counts: every other position of the instruction compares nothing
    assert float(f[0].abs().sum()) == pytest.approx(7.0)
    # an unsure read splits its chance: half "66", half "68"
    mixed = (0.5 * _read("66") + 0.5 * _read("68")).view(1, 1, MAX_CHARS + 1, END + 1)
    g = compare_numbers(mixed, tmpl, number)[0, 0, text.index("67")]
    assert g.tolist() == pytest.approx([0.5, 0.0, 0.5], abs=1e-6)


def test_the_order_feature_pools_the_surest_reads_and_starts_silent():
    from policies.pixel.words import MAX_NUMBER_READS

    base = _match_model()
    m = _grown(base, order=True).eval()
    assert m.config.grounding["order"]
    text = "Set the zoom slider to 67, then click Submit."
    cache = m.encode_text(_ids(text))
    k = m.config.max_glimpses
    reads = torch.zeros(1, 4 * k, READ_WIDTH)
    reads[0, :] = _read("")
    reads[0, 3] = _read("67")  # a window reads the number
    reads[0, k + 3] = _read("67")  # and so does the window beside it
    reads[0, 5] = 0.5 * _read("6") + 0.5 * _read("")  # a window cutting it: half a number, and below
    g = m.grounding
    o = g.order_of(reads, cache)
    # weighted by the square of each window's chance of being a number: 1, 1 and 0.25
    assert o[0].tolist() == pytest.approx([0.125 / 2.25, 2 / 2.25, 0.0, 1.0], abs=1e-5)
    none = g.order_of(reads, m.encode_text(_ids('Click the "Save" button.')))
    assert torch.equal(none, torch.zeros(1, 4))
    # only the MAX_NUMBER_READS windows likeliest to hold a number are compared: a ninth, less sure, is not
    crowd = torch.zeros_like(reads)
    crowd[0, :] = _read("")
    crowd[0, :MAX_NUMBER_READS] = _read("66")
    crowd[0, MAX_NUMBER_READS] = 0.9 * _read("68") + 0.1 * _read("")
    assert g.order_of(crowd, cache)[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-5)
    # the instruction's first four numbers are compared, not a fifth
    many = m.encode_text(_ids("Pick 1, 2, 3 or 4, not 67."))
    assert float(g.order_of(reads, many)[0, 1]) < 1e-6  # 67 read, but 67 is not compared
    # pooled over the four numbers compared: equal to 67 (weight 2 of the 9), above 2, 3 and 4
    o4 = g.order_of(reads, m.encode_text(_ids("Pick 67, 2, 3, 4 or 5.")))[0]
    assert o4.tolist() == pytest.approx([0.125 / 9, 2 / 9, (6 + 0.375) / 9, 1.0], abs=1e-5)
    # the new layer starts at zero: the step is the reading model's as it was
    args = _blank_step(m, cache)
    with torch.no_grad():
        a, b = base(**args, read_probs=reads), m(**args, read_probs=reads)
        assert torch.equal(a.key_logits, b.key_logits) and torch.equal(a.pointer_logits, b.pointer_logits)
        g.order_in.weight.normal_()
        c, d = m(**args, read_probs=reads), m(**args, read_probs=reads, order=torch.zeros(1, 4))
    assert not torch.allclose(c.key_logits, b.key_logits)  # once learned, the order moves the step
    assert torch.allclose(d.key_logits, b.key_logits, atol=1e-6)
    with pytest.raises(ValueError, match="no reader"):  # numbers are compared as a reader reads them
        PixelConfig(**SMALL, grounding={"kind": "template", "styles": [["LiberationSans-Regular.ttf", 10, False]],
                                        "order": True})


def test_spread_moves_a_words_match_to_the_widget_beside_it():
    m = _match_model(reach=2, kernels=1)
    r, n = 2, 5
    # a 4 x 3 grid of whole 0.2 x 0.25 tiles, the first column cut short by the frame's left edge
    cols, rows = 4, 3
    boxes = torch.tensor([[max(0.0, c * 0.2 - 0.05), rr * 0.25, c * 0.2 + 0.15, rr * 0.25 + 0.25]
                          for rr in range(rows) for c in range(cols)])[None]
    k = cols * rows
    mask = torch.ones(1, k, dtype=torch.bool)
    h = torch.zeros(1, m.config.hidden_size)
    bias = torch.zeros(1, 2, k)
    word = 1 * cols + 0  # the label: row 1, first column
    bias[0, :, word] = 1.0
    kernel = m.grounding.kernel
    with torch.no_grad():
        kernel.zero_()
        assert torch.equal(_spread(m, bias, boxes, mask, h), bias)  # zero kernels: the glimpse itself only
        kernel[0, r * n + (r - 1)] = 0.7  # the word one tile to the left
        kernel[0, (r - 2) * n + r] = 0.3  # the word two tiles above (out of this grid here)
        out = _spread(m, bias, boxes, mask, h)[0, 0]
    want = torch.zeros(k)
    want[word], want[word + 1] = 1.0, 0.7  # the field right of the label
    assert torch.allclose(out, want)
    mask[0, word + 1] = False  # a glimpse that is not there gets nothing
    with torch.no_grad():
        assert float(_spread(m, bias, boxes, mask, h)[0, 0, word + 1]) == 0.0


def test_the_kernel_mix_starts_untied_so_the_kernels_can_learn_apart():
    """All-zero mix weights give every kernel the same share in every state, hence the same gradient:
    equal kernels would stay equal for ever. The mix starts random; a checkpoint trained with the
    tie is untied without changing its outputs."""
    torch.manual_seed(0)
    m = PixelModel(_config(reach=2))
    g = m.grounding
    assert not bool(g.kernel.any()) and bool(g.mix.weight.any())
    assert not m.untie_match_kernels()  # already untied: left as it is
    k, cols = 12, 4
    boxes = torch.tensor([[c * 0.25, r * 0.3, c * 0.25 + 0.25, r * 0.3 + 0.3]
                          for r in range(3) for c in range(cols)])[None].expand(2, -1, -1)
    mask = torch.ones(2, k, dtype=torch.bool)
    h = torch.randn(2, m.config.hidden_size)
    bias = torch.rand(2, 2, k)

    def grads() -> torch.Tensor:
        m.zero_grad()
        _spread(m, bias, boxes, mask, h).pow(2).mul(torch.randn(2, 2, k, generator=torch.Generator().manual_seed(1))
                                                    ).sum().backward()
        return g.kernel.grad.clone()

    grad = grads()
    assert not torch.allclose(grad[0], grad[1])  # each kernel learns its own
    with torch.no_grad():  # a checkpoint trained with the tie: equal kernels, zero mix
        g.kernel.copy_(torch.randn(1, g.kernel.shape[1]).expand_as(g.kernel))
        g.mix.weight.zero_()
        before = _spread(m, bias, boxes, mask, h)
    grad = grads()
    assert torch.allclose(grad[0], grad[1]) and torch.allclose(grad[0], grad[3])  # tied: the same gradient for all
    assert m.untie_match_kernels(torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(_spread(m, bias, boxes, mask, h), before, atol=1e-6)  # the same outputs
    grad = grads()
    assert not torch.allclose(grad[0], grad[1])
    assert not PixelModel(PixelConfig(**SMALL)).untie_match_kernels()  # nothing to untie without a grounding


def test_where_tells_the_offset_head_which_window_read_the_pointers_word():
    base = _match_model()
    m = _grown(base, refiners=[{"kind": "where"}]).eval()
    assert m.config.refiners == [{"kind": "where", "near": False}]
    where = m.refiners[0]
    text = 'Select "Save" and "Open".'
    cache = m.encode_text(_ids(text))
    k, ng = m.config.max_glimpses, m.config.num_global
    args = _blank_step(m, cache)
    hit = _window_hit(k, 5, 0, text.index("Save"))
    with torch.no_grad():  # the new layer starts at zero: the model acts as the one it came from
        assert torch.equal(m(**args, match=hit).offsets, base(**args, match=hit).offsets)
        where.inp.weight.normal_()
        where.inp.bias.normal_()
    outs = []
    for window in (0, 3):  # "Save" read in the glimpse's top-left window, or in its bottom-right one
        with torch.no_grad():
            outs.append(m(**args, match=_window_hit(k, 5, window, text.index("Save"))))
    a, b = outs
    assert torch.equal(a.pointer_logits, b.pointer_logits)  # the pointer takes the best window either way
    assert not torch.allclose(a.offsets[0, :, ng + 5], b.offsets[0, :, ng + 5])  # the offset does not
    others = [i for i in range(ng + k) if i != ng + 5]
    assert torch.allclose(a.offsets[0, :, others], b.offsets[0, :, others])
    with pytest.raises(ValueError, match="give a grounding"):
        PixelConfig(**SMALL, refiners=[{"kind": "where"}])


def test_where_near_tells_a_fields_offset_head_which_row_its_label_was_read_on():
    """A field's tile holds no word; its label, a tile to its left, is read in the top or the bottom
    windows. With the where refiner's ``near`` the field's offset follows that, through the reach kernel."""
    base = _grown(_match_model(reach=2), refiners=[{"kind": "where"}]).eval()
    m = _grown(base, refiners=[{"kind": "where", "near": True}]).eval()
    assert m.config.refiners == [{"kind": "where", "near": True}]
    where = m.refiners[0]
    assert torch.equal(where.inp.weight, base.refiners[0].inp.weight)  # grown: every weight kept
    text = 'Type "x" into the "Name" field.'
    cache = m.encode_text(_ids(text))
    k, ng = m.config.max_glimpses, m.config.num_global
    args = _blank_step(m, cache)
    cols = 8  # a grid of whole 0.1 x 0.1 tiles: the label's glimpse 5, the field's 6 (right of it)
    args["boxes"] = torch.tensor([[(i % cols) * 0.1, (i // cols) * 0.1, (i % cols) * 0.1 + 0.1, (i // cols) * 0.1 + 0.1]
                                  for i in range(k)])[None]
    r, n = 2, 5
    with torch.no_grad():
        for model in (m, base):
            model.grounding.kernel.zero_()
            model.grounding.kernel[:, r * n + (r - 1)] = 1.0  # every kernel: the word one tile to the left

    def read(window):  # the label "Name" read in one window of glimpse 5
        return _window_hit(k, 5, window, text.index("Name"))

    with torch.no_grad():  # the new layer starts at zero: the model acts as the one it came from
        assert torch.equal(m(**args, match=read(0)).offsets, base(**args, match=read(0)).offsets)
        where.off.weight.normal_()
        where.off.bias.normal_()
        top, bottom = m(**args, match=read(0)), m(**args, match=read(3))
    assert torch.equal(top.pointer_logits, bottom.pointer_logits)
    assert not torch.allclose(top.offsets[0, :, ng + 6], bottom.offsets[0, :, ng + 6])  # the field's follows
    far = [i for i in range(ng + k) if i not in (ng + 5, ng + 6)]  # beyond the kernel: unchanged
    assert torch.allclose(top.offsets[0, :, far], bottom.offsets[0, :, far])
    with pytest.raises(ValueError, match="give a reach"):
        _config([{"kind": "where", "near": True}])
    with pytest.raises(ValueError, match="near is an option of the where refiner"):
        _config([{"kind": "cells", "near": True}], reach=2)


@pytest.mark.parametrize("over", [{"reach": 2},
                                  {"refiners": [{"kind": "where"}]},
                                  {"reach": 2, "refiners": [{"kind": "where", "near": True}]},
                                  {"order": True},
                                  {"order": True, "reader": {"stem": "reader-ctc", "channels": 8, "head": 32}}],
                         ids=["reach", "where", "where-near", "order", "ctc"])
def test_a_reading_policy_reads_outside_the_step_as_the_step_would_inside(over):
    """Both runtimes: the policy's step (windows read by TileReads, fed in as ``read_probs``) gives
    the model's own in-step reading (``read_glimpses``), and each distinct window is read once."""
    from agent.desktops.virtual import VirtualDesktop

    m1, m2 = _match_model(1, **over), _match_model(1, **over)
    for m in (m1, m2):  # learned where and order layers, not their all-zero start
        with torch.no_grad():
            torch.manual_seed(4)
            for refiner in m.refiners:
                refiner.inp.weight.normal_()
                if refiner.near:
                    refiner.off.weight.normal_()
            if m.config.grounding["order"]:
                m.grounding.order_in.weight.normal_()
    po, pt = PixelPolicy(m1, runtime="onnx", dtype="float32"), PixelPolicy(m2, runtime="torch", dtype="float32")
    for task, size in (("click-button", (640, 480)), ("click-menu", (1280, 720)), ("drag-slider", (800, 600))):
        d = VirtualDesktop(task, seed=4, size=size)
        obs = Observation(d.observe(), d.instruction, d.cursor, ())
        po.reset(obs.instruction)
        pt.reset(obs.instruction)
        arrays = po.arrays(obs)
        with torch.inference_mode():
            want = m2(**{k: torch.from_numpy(v) for k, v in arrays.items()}, text_cache=pt._cache)
        for pol in (po, pt):
            pol.reads.clear()
            before = pol.reads.read
            out = pol.run(arrays)
            used = arrays["glimpse_mask"][0]
            reads = arrays["read_glimpses"][0]
            reads = reads[np.tile(used, len(reads) // len(used))]
            distinct = len({t.tobytes() for t in reads})
            assert pol.reads.read - before == distinct  # every used window, each distinct one once
            for key in ("type_logits", "pointer_logits", "offsets", "span_start"):
                assert torch.allclose(getattr(out, key), getattr(want, key), atol=1e-4), (key, pol.runtime)
            before = pol.reads.read
            again = pol.run(arrays)  # the same screen: nothing read, the same step
            assert pol.reads.read == before
            assert torch.equal(again.pointer_logits, out.pointer_logits)
        d.close()


@pytest.mark.skipif(not (bundled_checkpoint("pixel-small") / "config.json").is_file(), reason="no bundled pixel-small")
def test_the_fast_cpu_path_acts_as_float32(monkeypatch):
    """Where the CPU has VNNI and native bfloat16, the ONNX policy multiplies in int8 and reads in
    int8 (bfloat16 with ``DW_PIXEL_INT8_READER=0``; forced here on any CPU). On the bundled
    pixel-small it takes the actions float32 takes, to within a pixel, though its outputs are not
    bit for bit the same."""
    import policies.pixel.hardware as H
    from agent.desktops.virtual import VirtualDesktop
    from policies.pixel import load_model
    from policies.pixel.reads import Int8Reads

    monkeypatch.delenv("DW_PIXEL_DTYPE", raising=False)
    monkeypatch.delenv("DW_PIXEL_RUNTIME", raising=False)
    monkeypatch.setattr(H, "cpu_flags", lambda: frozenset({"avx512_vnni", "avx512_bf16"}))
    monkeypatch.setenv("DW_PIXEL_INT8_READER", "0")
    assert PixelPolicy(load_model("pixel-small")).precision == "int8 matmuls, bfloat16 reader"
    monkeypatch.delenv("DW_PIXEL_INT8_READER")
    fast = PixelPolicy(load_model("pixel-small"))
    exact = PixelPolicy(load_model("pixel-small"), runtime="onnx", dtype="float32")
    reader = "int8" if Int8Reads.usable(fast.model.grounding.reader) else "bfloat16"
    assert fast.precision == f"int8 matmuls, {reader} reader" and exact.precision == "float32, float32 reader"
    moved = 0.0
    for task, size in (("click-menu", (1920, 1080)), ("enter-text", (640, 480)), ("close-dialog", (1920, 1080)),
                       ("click-checkboxes", (1280, 720))):
        d = VirtualDesktop(task, seed=10_001, size=size)
        obs = Observation(d.observe(), d.instruction, d.cursor, ())
        a, b = fast.act(obs), exact.act(obs)
        assert [x.type for x in a] == [x.type for x in b], task
        for x, y in zip(a, b, strict=True):
            if x.point is not None:
                assert np.allclose(np.multiply(x.point, size), np.multiply(y.point, size), atol=1.0), task
        arrays = exact.arrays(obs)
        lf, le = fast.run(arrays).pointer_logits, exact.run(arrays).pointer_logits
        moved = max(moved, float((lf - le).abs().max()))
    assert 0.0 < moved < 1.0  # a different arithmetic ran, and it stayed close


@pytest.mark.parametrize("stem", ["reader", "reader-relu"])
def test_a_fused_read_is_the_readers_own(stem):
    """The torch reader's convolutions run with their activations (GELU, or ReLU) as one oneDNN
    call each where torch has it: the same probabilities as the reader's own layers, in float32
    and in bfloat16."""
    from policies.pixel.reads import _FusedStem, _Probs, conv_act_fusable, folded

    if not conv_act_fusable(torch.device("cpu")):
        pytest.skip("this torch has no fused convolution with an activation")
    reader = _match_model(0, reader={"stem": stem, "channels": 8}).grounding.reader
    with torch.no_grad():  # batch norms that do something when folded
        for layer in reader.stem:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 2.0)
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (7, 32, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        want = reader.eval().probs(tiles)
        for dtype, atol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
            fused = _Probs(folded(reader, dtype), fuse=True).eval()
            assert isinstance(fused.reader.stem, _FusedStem) and len(fused.reader.stem.convs) == 5
            assert set(fused.reader.stem.acts) == {"gelu" if stem == "reader" else "relu"}
            got = fused(tiles)
            assert got.shape == want.shape and torch.allclose(got, want, atol=atol), dtype
            assert torch.allclose(got, _Probs(folded(reader, dtype)).eval()(tiles), atol=atol), dtype


def test_an_int8_reader_reads_the_desktop_as_the_float_one():
    """The bundled pixel-small's reader with its convolutions in int8 (scales from its batch norms,
    no calibration data) names the words of desktop read windows it has never seen, in the classic
    look and every look, as often as in float32 (2026-12-07: 96.7 / 91.3 % of 2,000 windows each,
    float32 96.6 / 91.0 %), mostly the same words, and gives probabilities."""
    import random

    from agent.desktops.virtual.reading import LOOKS, desktop_tiles
    from policies.pixel import load_model
    from policies.pixel.reads import Int8Reads, _Probs, folded

    reader = load_model("pixel-small").grounding.reader.float().eval()
    if not Int8Reads.usable(reader):
        pytest.skip("this torch has no oneDNN quantized convolution")
    int8, f32 = Int8Reads(reader), _Probs(folded(reader, torch.float32))
    for looks in (["classic"], list(LOOKS)):
        x, texts = desktop_tiles(random.Random(3), 300, True, 64, 48, window=(128, 64, 96, 48), looks=looks)
        with torch.inference_mode():
            p8, p32 = int8(torch.from_numpy(x)), f32(torch.from_numpy(x))
        assert p8.shape == p32.shape == (300, READ_WIDTH)
        assert torch.allclose(p8.view(300, MAX_CHARS + 1, END + 1).sum(-1), torch.ones(300, MAX_CHARS + 1), atol=1e-3)
        w8, w32 = ([decode_word(c.tolist()) for c in p.view(300, MAX_CHARS + 1, END + 1).argmax(-1)] for p in (p8, p32))
        right8, right32 = (sum(w == t for w, t in zip(ws, texts, strict=True)) for ws in (w8, w32))
        assert right32 >= 0.85 * 300 and right8 >= right32 - 6, (looks, right8, right32)
        assert sum(a == b for a, b in zip(w8, w32, strict=True)) >= 0.95 * 300, looks


def test_an_int8_reader_is_made_for_relu_readers_only():
    from policies.pixel.reads import Int8Reads, TileReads

    gelu = _match_model(0, reader={"stem": "reader", "channels": 8}).grounding.reader
    assert not Int8Reads.usable(gelu)
    with pytest.raises(ValueError, match="reader-relu"):
        TileReads(gelu, (32, 64), "torch", int8=True)
    relu = _match_model(0, reader={"stem": "reader-relu", "channels": 8}).grounding.reader
    if not Int8Reads.usable(relu):
        pytest.skip("this torch has no oneDNN quantized convolution")
    tiles = np.random.default_rng(0).integers(0, 255, (3, 32, 64, 3), dtype=np.uint8)
    tr = TileReads(relu, (32, 64), "torch", int8=True)
    p = tr.probs(tiles, np.ones(3, bool))
    assert p.shape == (3, READ_WIDTH) and tr.read == 3
    assert np.allclose(p.reshape(3, MAX_CHARS + 1, END + 1).sum(-1), 1.0, atol=1e-3)


def test_tile_reads_read_only_new_used_windows_and_forget_the_oldest():
    from policies.pixel.reads import TileReads

    m = _match_model(0)
    reader = m.grounding.reader
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (6, 32, 64, 3), dtype=np.uint8)
    tr = TileReads(reader, m.config.read_px, "torch", capacity=8)
    use = np.array([True, True, True, True, False, True])
    p = tr.probs(tiles, use)
    assert p.shape == (6, READ_WIDTH) and tr.read == 5
    assert not p[4].any() and np.allclose(p[0].reshape(MAX_CHARS + 1, END + 1).sum(-1), 1.0, atol=1e-5)
    with torch.inference_mode():
        ref = reader(torch.from_numpy(tiles[:1])).softmax(-1).flatten(1).numpy()
    assert np.allclose(p[0], ref, atol=1e-6)
    tiles2 = tiles.copy()
    tiles2[2, 10, 10] ^= 1  # one pixel of one window changes: that window alone is read again
    p2 = tr.probs(tiles2, use)
    assert tr.read == 6 and np.array_equal(p2[[0, 1, 3, 5]], p[[0, 1, 3, 5]])
    fresh = rng.integers(0, 255, (6, 32, 64, 3), dtype=np.uint8)
    tr.probs(fresh, np.ones(6, bool))  # 6 new windows: the least recently used are forgotten
    assert tr.read == 12 and len(tr._seen) == 8
    tr.probs(tiles2[:1], np.ones(1, bool))  # used two calls ago, forgotten since
    assert tr.read == 13
    tr.clear()
    tr.probs(fresh[:2], np.ones(2, bool))
    assert tr.read == 15
    # a frame's windows, window-major: the windows of a masked glimpse are not read
    frame = tr.frame(np.concatenate([tiles] * 4)[:4 * 3], np.array([True, False, True]))
    assert frame.shape == (12, READ_WIDTH) and not frame[1::3].any() and frame[0::3].any()


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    R.pretrain_reader(out, channels=8, steps=2, batch_size=8, val_tiles=8, words=["Submit"], window=WINDOW,
                      log=lambda s: None)
    return out


TRAIN = "epochs = 1\nbatch_size = 8\nmax_steps = 1\nval_fraction = 0.0\nwarmup_steps = 1\n"
GROUNDING = 'grounding = { kind = "reader", window = [96, 48], window_px = [64, 32], reader = { channels = 8 } }'


def _train(tmp_path, name: str, demos, recipe: str) -> dict:
    """``dw train``'s run of a recipe (TOML text) on the demos into ``tmp_path / name``, sharing one sample cache."""
    f = tmp_path / f"{name}.toml"
    f.write_text(recipe)
    return recipes.run(recipes.load_recipe(f), [str(demos)], tmp_path / name, cache=tmp_path / "cache",
                       progress=False, log=lambda s: None)


def test_fine_tuning_a_checkpoint_to_read(reader, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from policies.pixel import load_pixel_policy
    from policies.pixel.grounding import ReaderGrounding

    demos = tmp_path / "demos"
    for spec in demo_specs(["click-button"], 2, [(640, 480, 1.0)], seed=0):
        record_demo(spec, str(demos))
    small = ", ".join(f"{k} = {v}" for k, v in SMALL.items())
    _train(tmp_path, "base", demos, f'[model]\nsize = "pixel-tiny"\nconfig = {{ {small} }}\n'
                                    f"[train]\n{TRAIN}lr = 0.0\nweight_decay = 0.0\n")
    base, ft = tmp_path / "base", tmp_path / "ft"
    read = (f"[model]\ninit = {json.dumps(str(base))}\n{GROUNDING}\n[train]\n{TRAIN}lr = 1e-2\n"
            f"reader = {json.dumps(str(reader))}\n")
    s = _train(tmp_path, "ft", demos, read.replace("max_steps = 1", "max_steps = 2").replace("epochs = 1", "epochs = 2")
               + 'train_only = ["grounding."]\n')
    assert s["steps"] == 2
    cfg = json.loads((ft / "config.json").read_text())
    assert cfg["grounding"]["kind"] == "reader" and cfg["training"]["reader"] == str(reader)
    a, b = load_file(str(base / "model.safetensors")), load_file(str(ft / "model.safetensors"))
    _, rd = R.load_reader(reader)
    # every init weight kept (train_only), the reader as pretrained, and the grounding's layers learned
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(b[f"grounding.reader.{k}"], v) for k, v in rd.state_dict().items())
    assert b["grounding.inp.weight"].any()  # zero to start with: the model acted as it did without a grounding
    # precomputed scores (training) and reading on the fly (acting) give the same step
    pol = load_pixel_policy(str(ft), runtime="torch", dtype="float32")
    from agent.desktops.virtual import VirtualDesktop

    d = VirtualDesktop("click-button", seed=7, size=(640, 480))
    obs = Observation(d.observe(), d.instruction, d.cursor, ())
    d.close()
    pol.reset(obs.instruction)
    x = {k: v.numpy() for k, v in pol.inputs(obs).items()}
    x["text_ids"] = encode_text(obs.instruction, pol.cfg.max_text)[0][None]
    x["labels"] = np.zeros((1, 1))
    pre = precompute(pol.model, x)
    assert "read_glimpses" not in pre and pre["match"].dtype == np.float16 and pre["match"].shape[1:3] == (8, 4)
    with torch.inference_mode():
        live = pol.model(**pol.inputs(obs), text_cache=pol._cache)
        cached = pol.model(**{k: torch.from_numpy(v) for k, v in pre.items() if k != "labels"})
    assert torch.allclose(live.pointer_logits, cached.pointer_logits, atol=2e-2)
    assert len(pol.act(obs)) >= 1
    # and on from there comparing numbers too: the order is precomputed beside the match
    _train(tmp_path, "order", demos, f"[model]\ninit = {json.dumps(str(ft))}\n{GROUNDING[:-2]}, order = true }}\n"
                                     f'[train]\n{TRAIN}lr = 1e-2\ntrain_only = ["grounding.order_in"]\n')
    cfg_o = json.loads((tmp_path / "order" / "config.json").read_text())
    assert cfg_o["grounding"]["order"] and cfg_o["training"]["init"] == str(ft)
    po = load_pixel_policy(str(tmp_path / "order"), runtime="torch", dtype="float32")
    pre_o = precompute(po.model, {**x})
    assert pre_o["order"].shape == (1, 4) and not pre_o["order"].any()  # "Click ..." holds no number
    # the reads are cached per session and grounding: two sessions, read for the match alone (ft),
    # then with the order too
    cache = tmp_path / "cache"
    assert len(list(cache.glob("*-*.npz"))) == 4

    def no_reading(*a, **k):
        raise AssertionError("read again")

    # the same stage again (the same grounding, the same weights): the reader never runs
    monkeypatch.setattr(ReaderGrounding, "precompute_samples", no_reading)
    _train(tmp_path, "order2", demos, (tmp_path / "order.toml").read_text())
    assert len(list(cache.glob("*-*.npz"))) == 4
    # bad input: nothing to train, a reader of other windows, a reader for a model without a grounding
    with pytest.raises(UserError, match="no trainable parameter name starts with nothing_"):
        _train(tmp_path, "bad", demos, read + 'train_only = ["nothing_"]\n')
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / R.READER_CONFIG).write_text(json.dumps({"stem": "reader", "stem_channels": 8, "glimpse_px": 32}))
    (wrong / R.READER_FILE).write_bytes((reader / R.READER_FILE).read_bytes())
    with pytest.raises(UserError, match="does not fit"):
        _train(tmp_path, "bad", demos, read.replace(str(reader), str(wrong)))
    with pytest.raises(UserError, match="a reader is for a reader grounding"):
        _train(tmp_path, "bad", demos, f"[model]\ninit = {json.dumps(str(base))}\n[train]\n{TRAIN}"
                                       f"reader = {json.dumps(str(reader))}\n")


def test_a_narrow_reader_fits_a_grounding_of_its_width(tmp_path):
    R.pretrain_reader(tmp_path, channels=4, head_width=32, steps=1, batch_size=4, val_tiles=4, words=["Save"],
                      window=WINDOW, log=lambda s: None)
    cfg, rd = R.load_reader(tmp_path)
    assert cfg["head_width"] == 32 and rd.head[0].out_features == 32
    assert (cfg["window"], cfg["window_px"]) == ([96, 48], [64, 32])
    m = PixelModel(_config(reader={"channels": 4, "head": 32}))
    load_reader_weights(m, tmp_path)
    assert all(torch.equal(m.grounding.reader.state_dict()[k], v) for k, v in rd.state_dict().items())
    with pytest.raises(TrainError, match="does not fit the model's grounding"):
        load_reader_weights(PixelModel(_config()), tmp_path)  # 8 channels and a 512-wide head
    with pytest.raises(TrainError, match="a reader is for a reader grounding"):
        load_reader_weights(PixelModel(PixelConfig(**SMALL)), tmp_path)


def test_the_cached_reads_depend_on_the_reader_alone():
    """A frozen reader's reads are fixed per sample: a stage whose grounding layers trained in the
    stage before, or whose reach widened, takes the reads cached for that stage."""
    m = _match_model(0)
    key = precompute_key(m)
    trained = _grown(m)
    with torch.no_grad():
        trained.grounding.tq.weight.add_(1.0)  # a grounding layer trained; the reader as it was
    assert precompute_key(trained) == key
    assert precompute_key(_grown(m, reach=1)) == key  # the neighbours' reads are the same reads
