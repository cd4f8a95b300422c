"""Reading models (PixelConfig.match): word templates, shifted reads, the pointer's match bias,
the ONNX step, and fine-tuning an existing checkpoint to use a frozen reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agent.sessions.demos import demo_specs, record_demo
from policies.base import Observation
from policies.pixel import PixelConfig, PixelModel, PixelPolicy, Preprocessor, encode_text
from policies.pixel import reader as R
from policies.pixel.model import END, MAX_CHARS, word_templates
from policies.registry import bundled_checkpoint
from policies.train import TrainConfig, TrainError, precompute_match, train
from tests.test_pixel_model import _frame

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8}
MATCH = {**SMALL, "match": True, "match_channels": 8}


def _ids(text: str) -> torch.Tensor:
    return torch.from_numpy(encode_text(text, 96)[0])[None]


def _read(word: str) -> torch.Tensor:
    """What a perfect reader says of a glimpse holding ``word``: (S*C,) one-hot per slot."""
    t = torch.from_numpy(R.encode_word(word))
    t[t < 0] = END
    return torch.nn.functional.one_hot(t, END + 1).float().flatten()


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


@pytest.mark.parametrize("w,h,scale", [(640, 480, 1.0), (1000, 700, 1.25), (2880, 1800, 2.0)])
def test_shifted_reads_are_whole_tiles_inside_the_frame(w, h, scale):
    import cv2

    cfg = PixelConfig(**MATCH, match_phases=[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]])
    fr = _frame(w, h, scale)
    v = Preprocessor(cfg)(fr)
    k = cfg.max_glimpses
    assert v.read_glimpses.shape == (3 * k, 48, 48, 3)
    # phase (0, 0) reads the glimpses themselves (full tiles; edge tiles are clamped inside instead)
    side = round(cfg.tile_pt * scale)
    for i in np.flatnonzero(v.mask):
        x0, y0, x1, y1 = (v.boxes[i] * [w, h, w, h]).round().astype(int)
        sx0, sy0 = min(int(round(x0 + 0.5 * side)), w - side), min(y0, h - side)
        want = cv2.resize(np.ascontiguousarray(fr.pixels[sy0:sy0 + side, sx0:sx0 + side, :3]), (48, 48),
                          interpolation=cv2.INTER_AREA)
        assert np.array_equal(v.read_glimpses[k + i], want)
        if x1 - x0 == side and y1 - y0 == side:
            assert np.array_equal(v.read_glimpses[i], v.glimpses[i])
    assert not v.read_glimpses[~np.tile(v.mask, 3)].any()


def _match_model(seed: int = 0, **over) -> PixelModel:
    torch.manual_seed(seed)
    m = PixelModel(PixelConfig(**{**MATCH, **over})).eval()
    if m.config.match_reach:  # learned kernels, not their all-zero start
        with torch.no_grad():
            m.match_kernel.normal_()
            m.match_mix.weight.normal_(std=0.1)
    return m


def _blank_step(m: PixelModel, cache) -> dict:
    """A step's inputs on a blank screen (random glimpse boxes), all but the match."""
    k, g = m.config.max_glimpses, m.config.glimpse_px
    return dict(global_view=torch.zeros(1, 40, 64, 3, dtype=torch.uint8),
                glimpses=torch.zeros(1, k, g, g, 3, dtype=torch.uint8),
                boxes=torch.rand(1, k, 4), glimpse_mask=torch.ones(1, k, dtype=torch.bool),
                screen=torch.zeros(1, 4), cursor=torch.zeros(1, 3),
                history_types=torch.full((1, 4), len(m.config.action_types)), history_points=torch.zeros(1, 4, 3),
                text_cache=cache)


def test_the_pointer_favours_the_glimpse_that_reads_the_instructions_word():
    m = _match_model()
    text = 'Click the "Save" button.'
    cache = m.encode_text(_ids(text))
    k = m.config.max_glimpses
    args = _blank_step(m, cache)
    none = torch.zeros(1, k, 96)
    hit = none.clone()
    hit[0, 5, text.index("Save")] = 1.0
    with torch.no_grad():
        a, b = m(**args, match=none), m(**args, match=hit)
    ng = m.config.num_global
    d = (b.pointer_logits - a.pointer_logits)[0, 0]
    # only glimpse 5's logit moves (match_in starts at zero), by the gate times its share of the
    # pointer's attention over the instruction's words
    assert float(d[ng + 5]) > 0 and torch.count_nonzero(d) == 1


def test_numbers_read_compare_with_the_instructions_number():
    from policies.pixel.model import compare_numbers, number_words

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
    from policies.train import with_match_order

    base = _match_model()
    m = with_match_order(base).eval()
    assert m.config.match_order and with_match_order(m) is m
    text = "Set the zoom slider to 67, then click Submit."
    cache = m.encode_text(_ids(text))
    k = m.config.max_glimpses
    reads = torch.zeros(1, 2 * k, (MAX_CHARS + 1) * (END + 1))
    reads[0, :] = _read("")
    reads[0, 3] = _read("67")  # a glimpse reads the number
    reads[0, k + 3] = _read("67")  # and so does its shifted copy
    reads[0, 5] = 0.5 * _read("6") + 0.5 * _read("")  # a tile cutting it: half a number, and below
    o = m.order_of(reads, cache)
    # weighted by the square of each tile's chance of being a number: 1, 1 and 0.25
    assert o[0].tolist() == pytest.approx([0.125 / 2.25, 2 / 2.25, 0.0, 1.0], abs=1e-5)
    none = m.order_of(reads, m.encode_text(_ids('Click the "Save" button.')))
    assert torch.equal(none, torch.zeros(1, 4))
    # only the MAX_NUMBER_READS tiles likeliest to hold a number are compared: a ninth, less sure, is not
    from policies.pixel.model import MAX_NUMBER_READS

    crowd = torch.zeros_like(reads)
    crowd[0, :] = _read("")
    crowd[0, :MAX_NUMBER_READS] = _read("66")
    crowd[0, MAX_NUMBER_READS] = 0.9 * _read("68") + 0.1 * _read("")
    assert m.order_of(crowd, cache)[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-5)
    # the instruction's first four numbers are compared, not a fifth
    many = m.encode_text(_ids("Pick 1, 2, 3 or 4, not 67."))
    assert float(m.order_of(reads, many)[0, 1]) < 1e-6  # 67 read, but 67 is not compared
    # pooled over the four numbers compared: equal to 67 (weight 2 of the 9), above 2, 3 and 4
    o4 = m.order_of(reads, m.encode_text(_ids("Pick 67, 2, 3, 4 or 5.")))[0]
    assert o4.tolist() == pytest.approx([0.125 / 9, 2 / 9, (6 + 0.375) / 9, 1.0], abs=1e-5)
    # the new layer starts at zero: the step is the reading model's as it was
    args = _blank_step(m, cache)
    with torch.no_grad():
        a, b = base(**args, read_probs=reads), m(**args, read_probs=reads)
        assert torch.equal(a.key_logits, b.key_logits) and torch.equal(a.pointer_logits, b.pointer_logits)
        m.match_order_in.weight.normal_()
        c, d = m(**args, read_probs=reads), m(**args, read_probs=reads, order=torch.zeros(1, 4))
    assert not torch.allclose(c.key_logits, b.key_logits)  # once learned, the order moves the step
    assert torch.allclose(d.key_logits, b.key_logits, atol=1e-6)
    cfg = PixelConfig(**SMALL).to_dict()
    with pytest.raises(ValueError, match="needs match"):
        PixelConfig(**{**cfg, "match_order": True})


def test_spread_moves_a_words_match_to_the_widget_beside_it():
    m = _match_model(match_reach=2, match_kernels=1)
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
    with torch.no_grad():
        m.match_kernel.zero_()
        assert torch.equal(m.spread(bias, boxes, mask, h), bias)  # zero kernels: the glimpse itself only
        m.match_kernel[0, r * n + (r - 1)] = 0.7  # the word one tile to the left
        m.match_kernel[0, (r - 2) * n + r] = 0.3  # the word two tiles above (out of this grid here)
        out = m.spread(bias, boxes, mask, h)[0, 0]
    want = torch.zeros(k)
    want[word], want[word + 1] = 1.0, 0.7  # the field right of the label
    assert torch.allclose(out, want)
    mask[0, word + 1] = False  # a glimpse that is not there gets nothing
    with torch.no_grad():
        assert float(m.spread(bias, boxes, mask, h)[0, 0, word + 1]) == 0.0


def test_the_kernel_mix_starts_untied_so_the_kernels_can_learn_apart():
    """All-zero mix weights give every kernel the same share in every state, hence the same gradient:
    equal kernels would stay equal for ever. The mix starts random; a checkpoint trained with the
    tie is untied without changing its outputs."""
    torch.manual_seed(0)
    m = PixelModel(PixelConfig(**{**MATCH, "match_reach": 2}))
    assert not bool(m.match_kernel.any()) and bool(m.match_mix.weight.any())
    assert not m.untie_match_kernels()  # already untied: left as it is
    k, cols = 12, 4
    boxes = torch.tensor([[c * 0.25, r * 0.3, c * 0.25 + 0.25, r * 0.3 + 0.3]
                          for r in range(3) for c in range(cols)])[None].expand(2, -1, -1)
    mask = torch.ones(2, k, dtype=torch.bool)
    h = torch.randn(2, m.config.hidden_size)
    bias = torch.rand(2, 2, k)

    def grads() -> torch.Tensor:
        m.zero_grad()
        m.spread(bias, boxes, mask, h).pow(2).mul(torch.randn(2, 2, k, generator=torch.Generator().manual_seed(1))
                                                  ).sum().backward()
        return m.match_kernel.grad.clone()

    g = grads()
    assert not torch.allclose(g[0], g[1])  # each kernel learns its own
    with torch.no_grad():  # a checkpoint trained with the tie: equal kernels, zero mix
        m.match_kernel.copy_(torch.randn(1, m.match_kernel.shape[1]).expand_as(m.match_kernel))
        m.match_mix.weight.zero_()
        before = m.spread(bias, boxes, mask, h)
    g = grads()
    assert torch.allclose(g[0], g[1]) and torch.allclose(g[0], g[3])  # tied: the same gradient for all
    assert m.untie_match_kernels(torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(m.spread(bias, boxes, mask, h), before, atol=1e-6)  # the same outputs
    g = grads()
    assert not torch.allclose(g[0], g[1])


def test_a_wider_reach_keeps_the_learned_kernels_and_the_step():
    from policies.train import with_match_reach

    m = _match_model(3, match_reach=2)
    text = 'Type "x" into the "Street" field.'
    cache = m.encode_text(_ids(text))
    args = _blank_step(m, cache)
    match = torch.rand(1, m.config.max_glimpses, 96)
    wide = with_match_reach(m, 4).eval()
    assert wide.config.match_reach == 4 and wide.match_kernel.shape == (m.config.match_kernels, 81)
    kern = wide.match_kernel.view(-1, 9, 9)
    assert torch.equal(kern[:, 2:7, 2:7], m.match_kernel.view(-1, 5, 5))
    assert not bool(kern[:, 0].any()) and not bool(kern[:, :, 8].any())  # the new offsets start at zero
    with torch.no_grad():
        a, b = m(**args, match=match), wide(**args, match=match)
    assert torch.allclose(a.pointer_logits, b.pointer_logits, atol=1e-5)
    narrow = with_match_reach(m, 1)
    assert torch.equal(narrow.match_kernel.view(-1, 3, 3), m.match_kernel.view(-1, 5, 5)[:, 1:4, 1:4])
    assert with_match_reach(m, 2) is m
    with pytest.raises(TrainError, match="needs a reader"):
        with_match_reach(PixelModel(PixelConfig(**SMALL)), 4)


def test_per_phase_matches_tell_the_glimpse_which_copy_read_the_word():
    m = _match_model(match_per_phase=True, match_phases=[[0.5, 0.0], [0.0, 0.5]])
    with torch.no_grad():
        m.match_in.weight.normal_()
    text = 'Click the "Save" button.'
    cache = m.encode_text(_ids(text))
    k = m.config.max_glimpses
    assert m.match_in.in_features == 3 * m.config.match_slots
    args = _blank_step(m, cache)
    outs = []
    for phase in (1, 2):  # the word read in the copy shifted right, or in the one shifted down
        hit = torch.zeros(1, k, 3, 96)
        hit[0, 5, phase, text.index("Save")] = 1.0
        with torch.no_grad():
            outs.append(m(**args, match=hit))
    # the pointer sees the best copy either way; the glimpse's token (and so the step) does not
    ng = m.config.num_global
    assert not torch.allclose(outs[0].offsets[0, :, ng + 5], outs[1].offsets[0, :, ng + 5])
    assert torch.equal(outs[0].boxes, outs[1].boxes)


def _window_hit(k: int, glimpse: int, window: int, at: int) -> torch.Tensor:
    """Per-read matches (1, K, 4 windows, 96 bytes): the word at byte ``at`` read in one window of
    one glimpse, nothing else read."""
    hit = torch.zeros(1, k, 4, 96)
    hit[0, glimpse, window, at] = 1.0
    return hit


def test_where_tells_the_offset_head_which_window_read_the_pointers_word():
    from policies.train import with_match_where

    base = _match_model(match_window=[96, 48], match_window_px=[64, 32])
    m = with_match_where(base).eval()
    assert m.config.match_where and with_match_where(m) is m
    text = 'Select "Save" and "Open".'
    cache = m.encode_text(_ids(text))
    k, ng = m.config.max_glimpses, m.config.num_global
    args = _blank_step(m, cache)
    hit = _window_hit(k, 5, 0, text.index("Save"))
    with torch.no_grad():  # the new layer starts at zero: the model acts as the one it came from
        assert torch.equal(m(**args, match=hit).offsets, base(**args, match=hit.amax(2)).offsets)
        m.match_where_in.weight.normal_()
        m.match_where_in.bias.normal_()
    outs = []
    for window in (0, 3):  # "Save" read in the glimpse's top-left window, or in its bottom-right one
        with torch.no_grad():
            outs.append(m(**args, match=_window_hit(k, 5, window, text.index("Save"))))
    a, b = outs
    assert torch.equal(a.pointer_logits, b.pointer_logits)  # the pointer takes the best window either way
    assert not torch.allclose(a.offsets[0, :, ng + 5], b.offsets[0, :, ng + 5])  # the offset does not
    others = [i for i in range(ng + k) if i != ng + 5]
    assert torch.allclose(a.offsets[0, :, others], b.offsets[0, :, others])
    with pytest.raises(TrainError, match="needs a reader"):
        with_match_where(PixelModel(PixelConfig(**SMALL)))
    with pytest.raises(ValueError, match="needs match"):
        PixelConfig(**SMALL, match_where=True)


def test_where_near_tells_a_fields_offset_head_which_row_its_label_was_read_on():
    """A field's tile holds no word; its label, a tile to its left, is read in the top or the bottom
    windows. With ``match_where_near`` the field's offset follows that, through the reach kernel."""
    from policies.train import with_match_where, with_match_where_near

    base = with_match_where(_match_model(match_window=[96, 48], match_window_px=[64, 32], match_reach=2))
    m = with_match_where_near(base).eval()
    assert m.config.match_where_near and with_match_where_near(m) is m
    text = 'Type "x" into the "Name" field.'
    cache = m.encode_text(_ids(text))
    k, ng = m.config.max_glimpses, m.config.num_global
    args = _blank_step(m, cache)
    cols = 8  # a grid of whole 0.1 x 0.1 tiles: the label's glimpse 5, the field's 6 (right of it)
    args["boxes"] = torch.tensor([[(i % cols) * 0.1, (i // cols) * 0.1, (i % cols) * 0.1 + 0.1, (i // cols) * 0.1 + 0.1]
                                  for i in range(k)])[None]
    r, n = 2, 5
    with torch.no_grad():
        m.match_kernel.zero_()
        m.match_kernel[:, r * n + (r - 1)] = 1.0  # every kernel: the word one tile to the left

    def read(window):  # the label "Name" read in one window of glimpse 5
        return _window_hit(k, 5, window, text.index("Name"))

    with torch.no_grad():  # the new layer starts at zero: the model acts as the one it came from
        assert torch.equal(m(**args, match=read(0)).offsets, base(**args, match=read(0)).offsets)
        m.match_where_off.weight.normal_()
        m.match_where_off.bias.normal_()
        top, bottom = m(**args, match=read(0)), m(**args, match=read(3))
    assert torch.equal(top.pointer_logits, bottom.pointer_logits)
    assert not torch.allclose(top.offsets[0, :, ng + 6], bottom.offsets[0, :, ng + 6])  # the field's follows
    far = [i for i in range(ng + k) if i not in (ng + 5, ng + 6)]  # beyond the kernel: unchanged
    assert torch.allclose(top.offsets[0, :, far], bottom.offsets[0, :, far])
    with pytest.raises(TrainError, match="no reach|has none"):
        with_match_where_near(with_match_where(_match_model(match_window=[96, 48], match_window_px=[64, 32])))
    with pytest.raises(ValueError, match="needs both"):
        PixelConfig(**MATCH, match_where_near=True, match_reach=2)


@pytest.mark.parametrize("over", [{"match_reach": 2},
                                  {"match_per_phase": True, "match_phases": [[0.5, 0.0], [0.0, 0.5], [0.0, -0.5]]},
                                  {"match_window": [96, 48], "match_window_px": [64, 32], "match_reach": 2},
                                  {"match_window": [96, 48], "match_window_px": [64, 32], "match_where": True},
                                  {"match_window": [96, 48], "match_window_px": [64, 32], "match_where": True,
                                   "match_reach": 2, "match_where_near": True},
                                  {"match_order": True}])
def test_a_reading_policy_reads_outside_the_step_as_the_step_would_inside(over):
    """Both runtimes: the policy's step (tiles read by TileReads, fed in as ``read_probs``) gives the
    model's own in-step reading (``read_glimpses``), and each distinct tile is read once."""
    from agent.desktops.virtual import VirtualDesktop

    m1, m2 = _match_model(1, **over), _match_model(1, **over)
    if m1.config.match_per_phase:  # learned per-phase inputs, not their all-zero start
        for m in (m1, m2):
            with torch.no_grad():
                torch.manual_seed(2)
                m.match_in.weight.normal_()
    if m1.config.match_where:  # a learned where layer, not its all-zero start
        for m in (m1, m2):
            with torch.no_grad():
                torch.manual_seed(4)
                m.match_where_in.weight.normal_()
                if m.config.match_where_near:
                    m.match_where_off.weight.normal_()
    if m1.config.match_order:  # a learned order layer, not its all-zero start
        for m in (m1, m2):
            with torch.no_grad():
                torch.manual_seed(3)
                m.match_order_in.weight.normal_()
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
            tiles = reads if m1.config.match_window else np.concatenate([arrays["glimpses"][0][used], reads])
            distinct = len({t.tobytes() for t in tiles})
            assert pol.reads.read - before == distinct  # every used tile, each distinct one once
            for key in ("type_logits", "pointer_logits", "offsets", "span_start"):
                assert torch.allclose(getattr(out, key), getattr(want, key), atol=1e-4), (key, pol.runtime)
            before = pol.reads.read
            again = pol.run(arrays)  # the same screen: nothing read, the same step
            assert pol.reads.read == before
            assert torch.equal(again.pointer_logits, out.pointer_logits)


@pytest.mark.skipif(not (bundled_checkpoint("pixel-small") / "config.json").is_file(), reason="no bundled pixel-small")
def test_the_fast_cpu_path_acts_as_float32(monkeypatch):
    """Where the CPU has VNNI and native bfloat16, the ONNX policy multiplies in int8 and reads in
    bfloat16 (forced here on any CPU). On the bundled pixel-small it takes the actions float32
    takes, to within a pixel, though its outputs are not bit for bit the same."""
    import policies.pixel.policy as P
    import policies.pixel.runtime as R
    from agent.desktops.virtual import VirtualDesktop
    from policies.pixel import load_model

    monkeypatch.delenv("DW_PIXEL_DTYPE", raising=False)
    monkeypatch.delenv("DW_PIXEL_RUNTIME", raising=False)
    monkeypatch.setattr(R, "cpu_flags", lambda: frozenset({"avx512_vnni", "avx512_bf16"}))
    monkeypatch.setattr(P, "cpu_flags", R.cpu_flags)
    fast = PixelPolicy(load_model("pixel-small"))
    exact = PixelPolicy(load_model("pixel-small"), runtime="onnx", dtype="float32")
    assert fast.precision == "int8 matmuls, bfloat16 reader" and exact.precision == "float32, float32 reader"
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
    m = _match_model(0, match_window=[96, 48], match_window_px=[64, 32], match_stem=stem)
    with torch.no_grad():  # batch norms that do something when folded
        for layer in m.reader.stem:
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 2.0)
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (7, 32, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        want = m.reader.eval().probs(tiles)
        for dtype, atol in ((torch.float32, 1e-5), (torch.bfloat16, 3e-2)):
            fused = _Probs(folded(m.reader, dtype), fuse=True).eval()
            assert isinstance(fused.reader.stem, _FusedStem) and len(fused.reader.stem.convs) == 5
            assert set(fused.reader.stem.acts) == {"gelu" if stem == "reader" else "relu"}
            got = fused(tiles)
            assert got.shape == want.shape and torch.allclose(got, want, atol=atol), dtype
            assert torch.allclose(got, _Probs(folded(m.reader, dtype)).eval()(tiles), atol=atol), dtype


def test_tile_reads_read_only_new_used_tiles_and_forget_the_oldest():
    from policies.pixel.model import READ_WIDTH
    from policies.pixel.reads import TileReads

    m = _match_model(0)
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (6, 48, 48, 3), dtype=np.uint8)
    tr = TileReads(m.reader, 48, "torch", capacity=8)
    use = np.array([True, True, True, True, False, True])
    p = tr.probs(tiles, use)
    assert p.shape == (6, READ_WIDTH) and tr.read == 5
    assert not p[4].any() and np.allclose(p[0].reshape(MAX_CHARS + 1, END + 1).sum(-1), 1.0, atol=1e-5)
    with torch.inference_mode():
        ref = m.reader(torch.from_numpy(tiles[:1])).softmax(-1).flatten(1).numpy()
    assert np.allclose(p[0], ref, atol=1e-6)
    tiles2 = tiles.copy()
    tiles2[2, 10, 10] ^= 1  # one pixel of one tile changes: that tile alone is read again
    p2 = tr.probs(tiles2, use)
    assert tr.read == 6 and np.array_equal(p2[[0, 1, 3, 5]], p[[0, 1, 3, 5]])
    fresh = rng.integers(0, 255, (6, 48, 48, 3), dtype=np.uint8)
    tr.probs(fresh, np.ones(6, bool))  # 6 new tiles: the least recently used are forgotten
    assert tr.read == 12 and len(tr._seen) == 8
    tr.probs(tiles2[:1], np.ones(1, bool))  # used two calls ago, forgotten since
    assert tr.read == 13
    tr.clear()
    tr.probs(fresh[:2], np.ones(2, bool))
    assert tr.read == 15


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    R.pretrain_reader(out, channels=8, steps=2, batch_size=8, val_tiles=8, words=["Submit"], log=lambda s: None)
    return out


def test_fine_tuning_a_checkpoint_to_read(reader, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from policies.pixel import load_pixel_policy

    demos = tmp_path / "demos"
    for spec in demo_specs(["click-button"], 2, [(640, 480, 1.0)], seed=0):
        record_demo(spec, str(demos))
    quiet = dict(progress=False, log=lambda s: None, cache_dir=tmp_path / "cache")
    base = TrainConfig(size="pixel-tiny", epochs=1, batch_size=8, max_steps=1, val_fraction=0.0, warmup_steps=1,
                       lr=0.0, weight_decay=0.0, overrides=SMALL)
    train([demos], tmp_path / "base", base, **quiet)
    tc = TrainConfig(epochs=2, batch_size=8, max_steps=2, val_fraction=0.0, warmup_steps=1, lr=1e-2,
                     init=str(tmp_path / "base"), match_reader=str(reader), train_only=("match_",))
    s = train([demos], tmp_path / "ft", tc, **quiet)
    assert s["steps"] == 2
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["match"] and cfg["training"]["match_reader"] == str(reader)
    a, b = load_file(str(tmp_path / "base" / "model.safetensors")), load_file(str(tmp_path / "ft" / "model.safetensors"))
    _, rd = R.load_reader(reader)
    # every init weight kept (train_only), the reader as pretrained, and the match layers learned
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(b[f"reader.{k}"], v) for k, v in rd.state_dict().items())
    fresh = PixelModel(PixelConfig(**cfg)).state_dict()
    assert any(not torch.equal(b[k], fresh[k]) for k in b if k.startswith("match_"))
    # precomputed scores (training) and reading on the fly (acting) give the same step
    pol = load_pixel_policy(str(tmp_path / "ft"), runtime="torch", dtype="float32")
    from agent.desktops.virtual import VirtualDesktop

    d = VirtualDesktop("click-button", seed=7, size=(640, 480))
    obs = Observation(d.observe(), d.instruction, d.cursor, ())
    pol.reset(obs.instruction)
    x = {k: v.numpy() for k, v in pol.inputs(obs).items()}
    x["text_ids"] = encode_text(obs.instruction, pol.cfg.max_text)[0][None]
    x["labels"] = np.zeros((1, 1))
    pre = precompute_match(pol.model, x)
    assert "read_glimpses" not in pre and pre["match"].dtype == np.float16
    with torch.inference_mode():
        live = pol.model(**pol.inputs(obs), text_cache=pol._cache)
        cached = pol.model(**{k: torch.from_numpy(v) for k, v in pre.items()
                              if k not in ("labels", "read_glimpses")})
    assert torch.allclose(live.pointer_logits, cached.pointer_logits, atol=2e-2)
    assert len(pol.act(obs)) >= 1
    # and on from there comparing numbers too: the order is precomputed beside the match
    tc_o = TrainConfig(epochs=1, batch_size=8, max_steps=1, val_fraction=0.0, warmup_steps=1, lr=1e-2,
                       init=str(tmp_path / "ft"), match_order=True, train_only=("match_order",))
    train([demos], tmp_path / "order", tc_o, **quiet)
    cfg_o = json.loads((tmp_path / "order" / "config.json").read_text())
    assert cfg_o["match_order"] and cfg_o["training"]["match_order"]
    po = load_pixel_policy(str(tmp_path / "order"), runtime="torch", dtype="float32")
    pre_o = precompute_match(po.model, {**x})
    assert pre_o["order"].shape == (1, 4) and not pre_o["order"].any()  # "Click ..." holds no number
    # the reads are cached per session, reader and what the model takes from them: two sessions,
    # read for the match alone (ft), then with the order too
    assert len(list((tmp_path / "cache").glob("*-read-*.npz"))) == 4
    tc_w = TrainConfig(epochs=1, batch_size=8, max_steps=1, val_fraction=0.0, warmup_steps=1, lr=1e-2,
                       init=str(tmp_path / "ft"), match_where=True, train_only=("match_where", "off_"))
    train([demos], tmp_path / "where", tc_w, **quiet)
    assert len(list((tmp_path / "cache").glob("*-read-*.npz"))) == 6  # every read's score: read afresh
    cfg_w = json.loads((tmp_path / "where" / "config.json").read_text())
    assert cfg_w["match_where"] and cfg_w["training"]["match_where"]

    def no_reading(*a, **k):
        raise AssertionError("read again")

    monkeypatch.setattr("policies.train.precompute_match", no_reading)
    train([demos], tmp_path / "where2", tc_w, **quiet)  # the same reads: the reader never runs
    assert len(list((tmp_path / "cache").glob("*-read-*.npz"))) == 6
    # the neighbours' reads are the same scores: still nothing read again
    tc_n = TrainConfig(epochs=1, batch_size=8, max_steps=1, val_fraction=0.0, warmup_steps=1, lr=1e-2,
                       init=str(tmp_path / "where"), match_reach=1, match_where_near=True,
                       train_only=("match_where_off",))
    train([demos], tmp_path / "near", tc_n, **quiet)
    cfg_n = json.loads((tmp_path / "near" / "config.json").read_text())
    assert cfg_n["match_where_near"] and cfg_n["match_reach"] == 1 and cfg_n["training"]["match_where_near"]
    # bad input: nothing to train, or a reader of the wrong glimpse size
    tc.train_only = ("nothing_",)
    with pytest.raises(TrainError, match="no parameter name starts with nothing_"):
        train([demos], tmp_path / "bad", tc, **quiet)
    with pytest.raises(TrainError, match="needs a reader"):
        train([demos], tmp_path / "bad", TrainConfig(init=str(tmp_path / "base"), match_order=True), **quiet)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / R.READER_CONFIG).write_text(json.dumps({"stem": "reader", "stem_channels": 8, "glimpse_px": 32}))
    (wrong / R.READER_FILE).write_bytes((reader / R.READER_FILE).read_bytes())
    tc.train_only, tc.match_reader = ("match_",), str(wrong)
    with pytest.raises(TrainError, match="do not fit the reader"):
        train([demos], tmp_path / "bad", tc, **quiet)


def test_a_narrow_reader_makes_a_reading_model_of_its_width(tmp_path):
    from policies.train import MATCH_REACH, with_match_reader

    R.pretrain_reader(tmp_path, channels=4, head_width=32, steps=1, batch_size=4, val_tiles=4, words=["Save"],
                      log=lambda s: None)
    cfg, rd = R.load_reader(tmp_path)
    assert cfg["head_width"] == 32 and rd.head[0].out_features == 32
    m = with_match_reader(PixelModel(PixelConfig(**SMALL)), tmp_path)
    c = m.config
    assert (c.match, c.match_channels, c.match_head, c.match_reach) == (True, 4, 32, MATCH_REACH)
    assert all(torch.equal(m.reader.state_dict()[k], v) for k, v in rd.state_dict().items())
