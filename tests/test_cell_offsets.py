"""The cells refiner: each pointer also chooses one cell of a glimpse's middle feature map and a
point in it; a sure choice moves an offset that lies outside that cell (a radio button's row, not
the middle of a tile's rows)."""

from __future__ import annotations

import pytest
import torch

from policies.base import Observation
from policies.pixel import PixelConfig, PixelModel, PixelPolicy
from policies.pixel.configuration import RefinerConfig
from policies.pixel.grounding import Step
from policies.pixel.modeling import PixelOutput
from policies.pixel.refiners import CellRefiner
from policies.pixel.training import grow
from tests.test_pixel_match import SMALL
from tests.test_pixel_model import _frame

CELLS = [{"kind": "cells"}]
cell_loss = CellRefiner(RefinerConfig("cells"), PixelConfig(**SMALL)).loss


def _sure(m: PixelModel, cell: int) -> None:
    """Make every pointer choose ``cell`` of every glimpse, surely, at its middle, and trust it."""
    c = m.refiners[0]
    with torch.no_grad():
        c.trust.weight.zero_()
        c.trust.bias.fill_(10.0)
        c.q.weight.zero_()
        c.q.bias.fill_(1.0)
        c.k.weight.zero_()
        c.k.bias.zero_()
        c.pos.zero_()
        c.pos[cell].fill_(2.0)  # its logit: 64 * 2 / 8 = 16 over every other cell's 0


def _cells(m: PixelModel, offsets, hidden, mid, stem_in, n_global: int, placed=None):
    """The cells refiner's offsets (and its training outputs) for a step of ``n_global`` global
    patches then glimpses; ``mid`` and ``stem_in``: the glimpses' stem middle maps and stem inputs;
    ``placed``: how far a word placed each point (the snap refiner's, before it)."""
    b, _, _, _ = hidden.shape
    step = Step(b=b, k=len(mid) // b, n_global=n_global, dtype=torch.float32, text=None, boxes=None,
                glimpse_mask=None, stem_in=stem_in, stem_mid=mid, inputs={}, placed=placed)
    return m.refiners[0].refine(step, None, hidden, offsets), step.aux


def test_a_model_gains_the_cells_refiner_keeping_its_weights_and_acts_as_before():
    torch.manual_seed(0)
    m = PixelModel(PixelConfig(**SMALL)).eval()
    c = grow(m, PixelConfig(**SMALL, refiners=CELLS)).eval()
    assert c.config.refiners == [{"kind": "cells", "near": False}]
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in m.state_dict().items())
    p, pc = PixelPolicy(m, runtime="torch", dtype="float32"), PixelPolicy(c, runtime="torch", dtype="float32")
    obs = Observation(_frame(), 'Click on a "radio" widget.', (0.5, 0.5), ())
    p.reset(obs.instruction)
    pc.reset(obs.instruction)
    with torch.inference_mode():
        a = m(**p.inputs(obs), text_cache=p._cache)
        b = c(**pc.inputs(obs), text_cache=pc._cache)
    assert torch.equal(a.offsets, b.offsets)  # no cell is trusted yet: no point moves
    assert b.aux is None  # training outputs only
    # given labels, the model's loss holds the refiner's: a demo's point in a glimpse teaches its cell
    from policies.pixel.codec import LABEL_FIELDS

    labels = torch.full((1, len(LABEL_FIELDS)), -1)
    labels[0, LABEL_FIELDS.index("ptr0")] = c.config.num_global + int(pc.arrays(obs)["glimpse_mask"][0].argmax())
    with torch.inference_mode():
        out = c(**pc.inputs(obs), text_cache=pc._cache, labels=labels, target_offsets=torch.full((1, 2, 2), 0.5))
    assert {"ptr0", "offset", "cell", "cell_fine"} <= set(out.loss_parts) and out.aux["cell_logits"] is not None
    with pytest.raises(ValueError, match="multiple of 8"):  # the stem's middle map must be whole cells
        PixelConfig(**SMALL, glimpse_px=44, refiners=CELLS)


def test_a_sure_cell_moves_an_offset_outside_it_per_axis_and_keeps_one_inside():
    torch.manual_seed(0)
    m = PixelModel(PixelConfig(**SMALL, refiners=CELLS)).eval()
    s = 6  # 48-pixel glimpses: a 6x6 middle map
    _sure(m, 0 * s + 1)  # row 0, column 1: x in [1/6, 2/6), y in [0, 1/6)
    b, k, d, n_global = 1, 2, m.config.hidden_size, 3
    mid = torch.randn(b * k, 2 * m.config.stem_channels, s, s)
    stem_in = torch.rand(b * k, 3, 48, 48) - 0.5
    hidden = torch.randn(b, 2, n_global + k, d)
    offsets = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5],  # global patches: never moved
                            [0.25, 0.6],  # glimpse 0: x in the cell, y three rows below it
                            [0.2, 0.05]])[None, None].expand(b, 2, -1, -1).clone()  # glimpse 1: inside
    with torch.no_grad():
        out, aux = _cells(m, offsets, hidden, mid, stem_in, n_global)
    assert torch.equal(out[:, :, :n_global], offsets[:, :, :n_global])
    assert torch.allclose(out[0, :, 3], torch.tensor([[0.25, 0.5 / s]] * 2))  # y to the cell's middle, x kept
    assert torch.allclose(out[0, :, 4], offsets[0, :, 4])  # inside the cell: the head's own point
    assert aux["cell_logits"].shape == (b, 2, k, s * s) and aux["cell_points"].shape == (b, 2, k, s * s, 2)
    with torch.no_grad():  # where the snap placed a point on its word, the word decides
        placed = torch.tensor([0.9, 0.1]).view(1, 1, 2).expand(b, 2, k)
        kept = _cells(m, offsets, hidden, mid, stem_in, n_global, placed)[0]
        assert torch.equal(kept[0, :, 3], offsets[0, :, 3])
        assert torch.equal(_cells(m, offsets, hidden, mid, stem_in, n_global, placed.flip(-1))[0], out)
    with torch.no_grad():  # half a cell outside still counts as on it
        near = offsets.clone()
        near[..., 3, :] = torch.tensor([0.25, 1.4 / s])
        assert torch.equal(_cells(m, near, hidden, mid, stem_in, n_global)[0], near)
        cells = m.refiners[0]
        cells.trust.bias.fill_(-10.0)  # untrusted: nothing moves, though the move is still proposed
        kept, aux = _cells(m, offsets, hidden, mid, stem_in, n_global)
        assert torch.equal(kept, offsets) and torch.allclose(aux["cell_moved"][0, :, 0], out[0, :, 3])
        cells.trust.bias.fill_(10.0)
        cells.pos.zero_()  # trusted but unsure (every cell alike): nothing moves
        assert torch.equal(_cells(m, offsets, hidden, mid, stem_in, n_global)[0], offsets)


def test_the_onnx_step_moves_points_as_torch_does():
    torch.manual_seed(2)
    m_onnx = PixelModel(PixelConfig(**SMALL, refiners=CELLS)).eval()
    _sure(m_onnx, 5 * 6 + 4)
    m_torch = PixelModel(m_onnx.config).eval()
    m_torch.load_state_dict(m_onnx.state_dict())
    po = PixelPolicy(m_onnx, runtime="onnx", dtype="float32")
    pt = PixelPolicy(m_torch, runtime="torch", dtype="float32")
    obs = Observation(_frame(seed=3), 'Click on a "checkbox" widget.', (0.4, 0.6), ())
    po.reset(obs.instruction)
    pt.reset(obs.instruction)
    o = po._step(po.arrays(obs))
    with torch.inference_mode():
        r = m_torch(**pt.inputs(obs), text_cache=pt._cache)
    assert torch.allclose(o.offsets, r.offsets, atol=1e-4)
    ng = m_torch.config.num_global
    live = pt.arrays(obs)["glimpse_mask"][0].astype(bool)
    y = r.offsets[0, :, ng:][:, torch.from_numpy(live), 1]  # every live glimpse's point: bottom row (or half a cell off)
    assert bool(((y - 5.5 / 6).abs() < 1e-5).any()) and bool((y >= 4.5 / 6 - 1e-6).all())


def _cell_out(logits: list[float], points: list[list[float]], trust: float = 0.0,
              base=(0.5, 0.5), moved=(0.5, 0.5)):
    """A cells model's training outputs for one sample: 2 global patches, one glimpse of 2x2 cells."""
    return PixelOutput(pointer_logits=torch.zeros(1, 2, 3), aux={
        "cell_logits": torch.tensor(logits).view(1, 1, 1, 4).expand(1, 2, 1, 4),
        "cell_points": torch.tensor(points).view(1, 1, 1, 4, 2).expand(1, 2, 1, 4, 2),
        "cell_trust": torch.full((1, 2, 1), trust),
        "cell_base": torch.tensor(base).view(1, 1, 1, 2).expand(1, 2, 1, 2),
        "cell_moved": torch.tensor(moved).view(1, 1, 1, 2).expand(1, 2, 1, 2)})


def test_cell_loss_teaches_the_cell_holding_the_demos_point_and_its_point_there():
    labels = {"ptr0": torch.tensor([2]), "ptr1": torch.tensor([-1])}  # the glimpse (token 2)
    target = torch.tensor([[[0.7, 0.2], [0.0, 0.0]]])  # right column, top row: cell 1
    pts = [[0.25, 0.25], [0.7, 0.2], [0.25, 0.75], [0.75, 0.75]]
    right = cell_loss(_cell_out([0.0, 9.0, 0.0, 0.0], pts), labels, target)
    wrong = cell_loss(_cell_out([0.0, 0.0, 9.0, 0.0], pts), labels, target)
    assert right["cell"] < 0.01 < 8.0 < wrong["cell"]
    assert right["cell_fine"] < 1e-6  # the cell's own point is the demo's
    off = cell_loss(_cell_out([0.0, 9.0, 0.0, 0.0], [[0.25, 0.25], [0.9, 0.4], [0.0, 0.0], [0.0, 0.0]]), labels, target)
    assert off["cell_fine"] > 1.0
    assert cell_loss(_cell_out([0.0] * 4, pts), {"ptr0": torch.tensor([1]), "ptr1": torch.tensor([-1])}, target) == {}


def test_cell_trust_is_taught_where_the_cells_move_brings_the_point_nearer():
    labels = {"ptr0": torch.tensor([2]), "ptr1": torch.tensor([-1])}
    target = torch.tensor([[[0.7, 0.2], [0.0, 0.0]]])
    pts = [[0.25, 0.25], [0.7, 0.2], [0.25, 0.75], [0.75, 0.75]]
    logits = [0.0, 9.0, 0.0, 0.0]
    nearer = {"base": (0.7, 0.6), "moved": (0.7, 0.2)}  # the head's point two rows low; the cell's on it
    assert cell_loss(_cell_out(logits, pts, 9.0, **nearer), labels, target)["cell_trust"] < 0.01
    assert cell_loss(_cell_out(logits, pts, -9.0, **nearer), labels, target)["cell_trust"] > 8.0
    farther = {"base": (0.7, 0.2), "moved": (0.2, 0.2)}  # the head was right; the move would leave it
    assert cell_loss(_cell_out(logits, pts, 9.0, **farther), labels, target)["cell_trust"] > 8.0
    still = {"base": (0.7, 0.2), "moved": (0.7, 0.2)}  # no move proposed: nothing to teach
    assert "cell_trust" not in cell_loss(_cell_out(logits, pts, 9.0, **still), labels, target)
