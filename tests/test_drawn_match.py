"""Template groundings (PixelConfig.grounding kind ``template``): the instruction's words drawn and
matched against read windows, in the policy's step (both runtimes) and in training's precomputed
scores; the snap refiner that moves an offset to where its word matched, and its loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.desktops.miniwob.fonts import TEMPLATE_STYLES
from policies.base import Observation
from policies.pixel import PixelConfig, PixelModel, PixelPolicy, encode_text
from policies.pixel import templates as D
from policies.pixel.grounding import Step
from policies.pixel.training import grow, precompute
from tests.test_pixel_match import SMALL, _blank_step

FONT = TEMPLATE_STYLES[0][0]
TEMPLATE = {"kind": "template", "window": [64, 32], "styles": TEMPLATE_STYLES}


def _font_ok() -> bool:
    try:
        D.drawing("x", FONT, 10.0, False)
    except Exception:  # noqa: BLE001 - no Liberation Sans here
        return False
    return True


needs_font = pytest.mark.skipif(not _font_ok(), reason="Liberation Sans not installed (fonts-liberation)")


def _window(word: str, dx: int = 0, dy: int = 0, size: float = 11.0, w: int = 64, h: int = 32) -> np.ndarray:
    """A white (h, w, 3) BGR window with ``word`` drawn (as the matcher draws it, then darkened
    to blue link ink) centred at the window's middle plus (dx, dy)."""
    win = np.full((h, w, 3), 255, np.uint8)
    t = D.drawing(word, FONT, size, False).astype(np.uint8)
    th, tw = t.shape
    y0, x0 = (h - th) // 2 + dy, (w - tw) // 2 + dx
    ink = np.stack([np.full_like(t, 255), t, t], -1)  # black text becomes blue (BGR), a link's colour
    win[y0:y0 + th, x0:x0 + tw] = np.minimum(win[y0:y0 + th, x0:x0 + tw], ink)
    return win


def test_instruction_words_are_cut_as_word_templates_cut_them():
    ids, _ = encode_text('Select "qMtj3" and click Submit. Submit', 96)
    words = dict(D.instruction_words(ids))
    assert list(words) == ["Select", "qMtj3", "and", "click", "Submit"]
    assert words["qMtj3"] == [8] and words["Submit"] == [25, 33]
    ids, _ = encode_text(" ".join(f"w{i}" for i in range(40)), 96)
    assert len(D.instruction_words(ids)) == D.MAX_WORDS


@needs_font
def test_a_drawn_word_is_found_centred_in_its_window_only():
    variants = TEMPLATE_STYLES
    words = ["qMtj3", "K4JwLj", "Submit"]
    wins = np.stack([_window("qMtj3"), _window("qMtj3", dx=-14), _window("Submit", dy=3),
                     np.full((32, 64, 3), 255, np.uint8)])
    s, at = D.drawn_scores(wins, words, variants, cell=16)
    assert s.shape == (4, 3) and s.dtype == np.float32 and at.shape == (4, 3, 2)
    assert s[0, 0] > 0.9 and s[0, 1] < 0.3  # its own word, not another random string
    assert s[1, 0] == 0  # the same word off the middle cell: another window's
    assert s[2, 2] > 0.9 and s[2, 0] < 0.3
    assert not s[3].any()  # a blank window holds no word
    # where the drawing matched, in cells from the middle cell's centre: to the pixel
    off = np.stack([_window("qMtj3", dx=dx, dy=dy) for dx, dy in ((0, 0), (5, 0), (-4, 3))])
    s2, at2 = D.drawn_scores(off, ["qMtj3"], variants, cell=16)
    assert (s2 > 0.9).all()
    moved = at2[:, 0] - at2[0, 0]
    assert np.allclose(moved, [[0, 0], [5 / 16, 0], [-4 / 16, 3 / 16]], atol=1e-6)


@needs_font
def test_matches_land_at_every_position_the_word_starts_window_major():
    ids, _ = encode_text("Click qMtj3 then qMtj3", 96)
    k = 2
    wins = np.stack([np.full((32, 64, 3), 255, np.uint8)] * 4 * k)
    wins[2 * k + 1] = _window("qMtj3")  # the third window of the second glimpse
    cfg = PixelConfig.for_size("pixel-tiny", **SMALL, tile_pt=32, grounding=TEMPLATE)
    assert D.model_geometry(cfg)[1] == 16  # the middle cell: half a 32-point tile at a pixel a point
    m, pos = D.DrawnReads(cfg).frame(wins, np.ones(k, bool), ids)
    assert m.shape == (k, 4, 96) and pos.shape == (k, 4, 96, 2)
    # the word sits centred in window 2 (the tile's lower-left quarter): about a quarter across,
    # three quarters down the glimpse
    assert np.allclose(pos[1, 2, 6], [0.25, 0.75], atol=1 / 32) and (pos[1, 2, 17] == pos[1, 2, 6]).all()
    assert m[1, 2, 6] > 0.9 and m[1, 2, 17] == m[1, 2, 6]
    assert m[1, 2, 0] < 0.5 and m[0].max() == 0 and m[1, 2, 7] == 0  # no word starts at byte 7


def _drawn_model(seed: int, refiners=(), **over) -> PixelModel:
    torch.manual_seed(seed)
    cfg = PixelConfig.for_size("pixel-tiny", **SMALL, tile_pt=32, grounding={**TEMPLATE, "reach": 1, **over},
                               refiners=list(refiners))
    m = PixelModel(cfg)
    with torch.no_grad():  # learned grounding layers, not their all-zero start
        m.grounding.inp.weight.normal_()
        m.grounding.gate.bias.fill_(6.0)
        for snap in m.refiners:  # offsets move all the way to full matches, not at all where none
            snap.gate.bias.fill_(8.0)
            snap.conf.weight.fill_(20.0)
            snap.conf.bias.fill_(-5.0)
    return m.eval()


def test_a_template_model_has_no_reader_and_refuses_what_needs_one():
    m = _drawn_model(0)
    assert not hasattr(m.grounding, "reader") and not any(k.startswith("grounding.reader.") for k in m.state_dict())
    with pytest.raises(ValueError, match="needs match"):  # drawn matches come in from outside the step
        m(**_blank_step(m, m.encode_text(torch.from_numpy(encode_text("Click OK", 96)[0])[None])))
    with pytest.raises(ValueError, match="needs styles"):
        PixelConfig(grounding={"kind": "template", "window": [64, 32]})
    with pytest.raises(ValueError, match="no reader"):
        PixelConfig(grounding={**TEMPLATE, "order": True})
    with pytest.raises(ValueError, match="not a reader's"):
        PixelConfig(grounding={**TEMPLATE, "kind": "reader"})
    with pytest.raises(ValueError, match="needs a template grounding"):
        PixelConfig(grounding={"kind": "reader", "window": [64, 32]}, refiners=[{"kind": "snap"}])
    with pytest.raises(ValueError, match="give a grounding"):
        PixelConfig(refiners=[{"kind": "snap"}])


@needs_font
@pytest.mark.parametrize("refiners", [[], [{"kind": "snap"}]], ids=["plain", "snap"])
def test_a_template_policy_matches_outside_the_step_as_training_precomputes(refiners, monkeypatch):
    """Both runtimes give the step the model gives on training's precomputed scores (and, with the
    snap refiner, placements), and a window seen before is not matched again."""
    from agent.desktops.virtual import VirtualDesktop

    # precomputed in float32, as the policy matches (under bfloat16 they differ: see the test below)
    monkeypatch.setenv("DW_PIXEL_DTYPE", "float32")

    m1, m2 = _drawn_model(1, refiners), _drawn_model(1, refiners)
    po, pt = PixelPolicy(m1, runtime="onnx", dtype="float32"), PixelPolicy(m2, runtime="torch", dtype="float32")
    d = VirtualDesktop("click-button", seed=4, size=(640, 480))
    obs = Observation(d.observe(), d.instruction, d.cursor, ())
    d.close()
    for pol in (po, pt):
        pol.reset(obs.instruction)
    arrays = po.arrays(obs)
    data = {**arrays, "text_ids": encode_text(obs.instruction, 96)[0][None], "labels": np.zeros((1, 1))}
    pre = precompute(m2, data)
    assert "read_glimpses" not in pre and pre["match"].dtype == np.float16 and pre["match"].shape[1:3] == (8, 4)
    assert pre["match_pos"].shape == (*pre["match"].shape, 2)
    with torch.inference_mode():
        want = m2(**{k: torch.from_numpy(v) for k, v in pre.items() if k != "labels"})
        if refiners:  # the placements move the offsets: the step must be given them
            moved = m2(**{k: torch.from_numpy(v) for k, v in pre.items() if k != "labels"} | {
                "match_pos": torch.zeros(pre["match_pos"].shape)})
            assert not torch.allclose(moved.offsets, want.offsets, atol=1e-3)
    for pol in (po, pt):
        out = pol.run(arrays)
        assert torch.allclose(out.pointer_logits, want.pointer_logits, atol=2e-2), pol.runtime
        assert torch.allclose(out.offsets, want.offsets, atol=2e-2), pol.runtime
        seen = dict(pol.reads._seen)
        pol.run(arrays)
        assert pol.reads._seen == seen  # nothing new to match
    assert len(pt.act(obs)) >= 1


@needs_font
def test_training_precomputes_the_matches_the_policy_computes():
    m = _drawn_model(0)
    k = m.config.max_glimpses
    ids = encode_text('Click "qMtj3" then Submit', 96)[0]
    wins = np.stack([_window("qMtj3", dx=i % 3, dy=i % 2) if i % 3 else _window("Submit", dy=i % 3)
                     for i in range(4 * k)])
    mask = np.ones(k, bool)
    pre = precompute(m, {"read_glimpses": wins[None], "glimpse_mask": mask[None], "text_ids": ids[None],
                         "labels": np.zeros((1, 12), np.int64)})
    want, at = D.DrawnReads(m.config).frame(wins, mask, ids)
    assert np.allclose(pre["match"][0], want, atol=1e-3)  # float16 storage: about 5e-4 at most
    assert np.allclose(pre["match_pos"][0], at, atol=1e-3)


def _snap(m: PixelModel, offsets, h, reads, pos, boxes, live) -> torch.Tensor:
    """The snap refiner's offsets (B, 2, 3 + K, 2) for a step whose pointers both look for the word
    at byte 3, which each glimpse's read windows matched as ``reads`` (B, K, R); ``pos``: where in
    each window each word matched (B, K, R, L, 2), or None. 3 global patches, then the glimpses."""
    b, k, r = reads.shape
    length = 6
    per_read = torch.zeros(b, k, r, length)
    per_read[..., 3] = reads
    word_p = torch.zeros(b, 2, length)
    word_p[:, :, 3] = 1.0
    step = Step(b=b, k=k, n_global=3, dtype=torch.float32, text=None, boxes=boxes, glimpse_mask=live,
                stem_in=None, stem_mid=None, inputs={} if pos is None else {"match_pos": pos},
                per_read=per_read, word_p=word_p)
    return m.refiners[0].refine(step, h, None, offsets)


def test_snap_moves_an_offset_to_where_its_word_matched_in_that_glimpse():
    """The snap refiner: in a glimpse whose window matched the pointer's word, the offset moves to
    that window's placement (plus the learned shift); a glimpse far from every match stays where it
    was, one just beside a match moves to its edge. The choice among windows can be learned from
    where they lie on the screen."""
    m = _drawn_model(0, [{"kind": "snap"}])
    snap = m.refiners[0]
    b, k, r, length = 1, 2, 4, 6
    reads = torch.zeros(b, k, r)
    reads[:, 0, 2] = 1.0  # glimpse 0's third window matched the word fully; glimpse 1 matched nothing
    pos = torch.rand(b, k, r, length, 2)
    pos[0, 0, 2, 3] = torch.tensor([0.3, 0.8])
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    offsets = torch.full((b, 2, 3 + k, 2), 0.5)  # 3 global patches, then the glimpses
    h = torch.zeros(b, m.config.hidden_size)
    live = torch.ones(b, k, dtype=torch.bool)
    with torch.no_grad():
        out = _snap(m, offsets, h, reads, pos, boxes, live)
        assert torch.equal(out[:, :, :3], offsets[:, :, :3])  # global patches are not glimpses: unmoved
        assert torch.allclose(out[0, :, 3], torch.tensor([0.3, 0.8]), atol=0.02)
        assert torch.allclose(out[0, :, 4], offsets[0, :, 4], atol=0.02)
        snap.shift.bias.copy_(torch.tensor([-0.1, 0.0, -0.1, 0.0]))  # e.g. a radio left of its label
        assert torch.allclose(out := _snap(m, offsets, h, reads, pos, boxes, live)[0, :, 3],
                              torch.tensor([0.2, 0.8]), atol=0.02), out
        # a second window matched as well, higher on the screen; a choice that learned where on the
        # screen targets lie (an instruction bar's copy of the word never is one) takes it over the first
        reads[:, 0, 0] = 1.0
        pos[0, 0, 0, 3] = torch.tensor([0.7, 0.1])
        snap.shift.bias.zero_()
        snap.inp.weight.zero_()
        snap.inp.weight[0, 1] = 1.0  # hidden unit 0: the placement's screen y ...
        snap.out.weight[0, 0] = -40.0  # ... counts against a window: the lower, the more
        top = _snap(m, offsets, h, reads, pos, boxes, live)[0, :, 3]
        assert torch.allclose(top, torch.tensor([0.7, 0.1]), atol=0.05), top
        # the word centred just below glimpse 0, in glimpse 1's window: glimpse 0 moves to its edge
        reads.zero_()
        reads[:, 1, 0] = 1.0
        pos[0, 1, 0, 3] = torch.tensor([0.6, 0.01])  # screen (0.3, 0.505): glimpse 0 is (0, 0)-(0.5, 0.5)
        boxes[0, 1] = torch.tensor([0.0, 0.5, 0.5, 1.0])
        snap.out.weight.zero_()
        edge = _snap(m, offsets, h, reads, pos, boxes, live)[0, :, 3]
        assert torch.allclose(edge, torch.tensor([0.6, 1.0]), atol=0.02), edge  # its edge: the goal is kept in the box
        alone = _snap(m, offsets, h, reads, pos, boxes, live & torch.tensor([True, False]))[0, :, 3]
        assert torch.allclose(alone, offsets[0, :, 3], atol=0.02), alone  # a padded glimpse's windows are no candidates
    with pytest.raises(ValueError, match="needs match_pos"):
        _snap(m, offsets, h, reads, None, boxes, live)


def _snap_out(logits, alpha):
    """A snap model's training outputs for one sample: 2 global patches, then glimpse 0 (the
    top-left quarter); three candidates: the instruction bar's copy of the word (0.25, 0.04), the
    label on the click's row (0.25, 0.30), a stray low score elsewhere on that row (0.4, 0.3)."""
    from types import SimpleNamespace

    spots = torch.tensor([[0.25, 0.04], [0.25, 0.30], [0.40, 0.30]])
    return SimpleNamespace(
        offsets=torch.zeros(1, 2, 3, 2), boxes=torch.tensor([[[0, 0, 1, 1]] * 2 + [[0.0, 0.0, 0.5, 0.5]]]),
        aux={"snap_logits": torch.tensor(logits, dtype=torch.float32).view(1, 1, 1, 3).expand(1, 2, 1, 3),
             "snap_spots": spots.expand(1, 2, 3, 2), "snap_scores": torch.tensor([[0.9, 0.6, 0.2]]).expand(1, 2, 3),
             "snap_alpha": torch.tensor(alpha, dtype=torch.float32).view(1, 1, 1, 2).expand(1, 2, 1, 2)})


def test_snap_loss_teaches_the_rows_word_over_the_bars_copy_and_how_far_to_move():
    """Where a demo names the target's word, the glimpse's choice learns the best placement on the
    click's row (not the bar's higher-scoring copy, not a stray), and the move learns to go all the
    way in y, and in x only where the click is on the word; where no word names the target, nowhere."""
    from policies.pixel.codec import NO_WORD
    from policies.pixel.configuration import RefinerConfig
    from policies.pixel.refiners import SnapRefiner

    snap_loss = SnapRefiner(RefinerConfig("snap"), PixelConfig(**SMALL)).loss
    radio = torch.tensor([[[0.1, 0.59], [0.0, 0.0]]])  # the click in glimpse 0's units: (0.05, 0.295)
    labels = {"ptr0": torch.tensor([2]), "word": torch.tensor([5])}
    right = snap_loss(_snap_out([0.0, 9.0, 0.0], [0.0, 1.0]), labels, radio)
    wrong = snap_loss(_snap_out([9.0, 0.0, 0.0], [1.0, 1.0]), labels, radio)
    assert right["snap_choice"] < 0.01 < 8.0 < wrong["snap_choice"]
    assert right["snap_gate"] < 0.01 < 4.0 < wrong["snap_gate"]  # x stays at the radio: its move is wrong
    on_word = torch.tensor([[[0.5, 0.6], [0.0, 0.0]]])  # the click on the label itself: x moves too
    assert snap_loss(_snap_out([0.0, 9.0, 0.0], [1.0, 1.0]), labels, on_word)["snap_gate"] < 0.01
    none = snap_loss(_snap_out([0.0, 9.0, 0.0], [0.0, 0.0]), {**labels, "word": torch.tensor([NO_WORD])}, radio)
    assert "snap_choice" not in none and none["snap_gate"] < 0.01
    assert snap_loss(_snap_out([0.0, 9.0, 0.0], [0.0, 0.0]), {**labels, "word": torch.tensor([-1])}, radio) == {}
    assert snap_loss(_snap_out([0.0, 9.0, 0.0], [0.0, 0.0]), {**labels, "ptr0": torch.tensor([1])}, radio) == {}


def test_any_model_can_be_grown_into_a_template_one_keeping_its_weights():
    plain = PixelModel(PixelConfig.for_size("pixel-tiny", **SMALL))
    cfg = {k: v for k, v in plain.config.to_dict().items() if k not in ("architectures", "model_type",
                                                                         "transformers_version", "dtype")}
    m = grow(plain, PixelConfig(**{**cfg, "grounding": {**TEMPLATE, "reach": 3}}))
    assert m.config.grounding["styles"] == [[f, float(s), bool(u)] for f, s, u in TEMPLATE_STYLES]
    assert m.config.grounding["window"] == [64, 32] and m.config.grounding["reach"] == 3
    kept = plain.state_dict()
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in kept.items())
    m_snap = grow(m, PixelConfig(**{**cfg, "grounding": m.config.grounding, "refiners": [{"kind": "snap"}]}))
    assert m_snap.config.refiners == [{"kind": "snap", "near": False}]
    assert all(torch.equal(v, m_snap.state_dict()[k]) for k, v in m.state_dict().items())
    reading = PixelModel(PixelConfig.for_size("pixel-tiny", **SMALL, grounding={
        "kind": "reader", "window": [64, 32], "reader": {"channels": 8}}))
    m2 = grow(reading, PixelConfig(**{**cfg, "grounding": TEMPLATE}))
    assert not any(k.startswith("grounding.reader.") for k in m2.state_dict())
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in reading.state_dict().items()
               if not k.startswith("grounding.reader."))
