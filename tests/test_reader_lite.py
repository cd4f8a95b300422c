"""reader-lite: a reader without its stride-1 layer, started from a reader's other layers and
distilled from it (``dw reader --stem reader-lite --init R --teacher R``), then read by a policy as
the reader it replaces was; and reader-relu, the reader with ReLU for GELU, started from all of a
reader's layers the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.pixel import PixelConfig, PixelModel
from policies.pixel import reader as R
from policies.pixel.model import build_stem
from policies.train import with_match_reader

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8, "tile_pt": 32}
WINDOW = (64, 32, 64, 32)  # points, then pixels
QUIET = {"words": ["Save", "Cancel"], "tile_pt": 32, "window": WINDOW, "val_tiles": 16, "log": lambda s: None}


def _convs(stem: torch.nn.Sequential) -> list[torch.nn.Conv2d]:
    return [m for m in stem if isinstance(m, torch.nn.Conv2d)]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    R.pretrain_reader(out, channels=4, head_width=32, steps=20, batch_size=16, lr=3e-3, **QUIET)
    return out


def test_reader_lite_drops_the_stride_1_layer_and_keeps_the_output_shape():
    full, n_full = build_stem("reader", 8, 32, 64)
    lite, n_lite = build_stem("reader-lite", 8, 32, 64)
    assert [c.stride for c in _convs(full)] == [(2, 2), (1, 1), (2, 2), (2, 2), (2, 2)]
    assert [c.stride for c in _convs(lite)] == [(2, 2), (2, 2), (2, 2), (2, 2)]
    x = torch.zeros(2, 3, 32, 64)
    assert n_full == n_lite and full(x).shape == lite(x).shape


def test_a_reader_lite_starts_from_the_readers_layers_and_learns_its_distributions(teacher, tmp_path):
    _, full = R.load_reader(teacher)
    # lr 0: the carried weights as they came
    s0 = R.pretrain_reader(tmp_path / "l0", stem="reader-lite", init=teacher, teacher=teacher, steps=1, lr=0.0,
                           batch_size=8, **QUIET)
    cfg, lite = R.load_reader(tmp_path / "l0")
    assert cfg["stem"] == "reader-lite" and cfg["teacher"] == str(teacher) and cfg["stem_channels"] == 4
    kept = [c for c in _convs(full.stem) if c.stride != (1, 1)]
    assert len(_convs(lite.stem)) == 4 and all(torch.equal(a.weight, b.weight)
                                               for a, b in zip(_convs(lite.stem), kept, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(lite.head.state_dict().values(), full.head.state_dict().values(),
                                                  strict=True))
    assert 0.0 <= s0["val_agreement"] <= 1.0
    # the loss is the teacher's KL divergence: zero against itself, and it falls as the student trains
    with torch.no_grad():
        logits = full(torch.zeros(3, 32, 64, 3, dtype=torch.uint8))
    assert float(R.distill_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(R.distill_loss(torch.zeros_like(logits), logits)) > 0.0
    s = R.pretrain_reader(tmp_path / "l", stem="reader-lite", init=teacher, teacher=teacher, steps=40, lr=3e-3,
                          batch_size=16, **QUIET)
    h = s["history"]
    assert h[-1]["loss"] < s["start_loss"] and "val_agreement" in h[-1]
    # a reader-lite does not start a reader, and a teacher of other windows is refused
    with pytest.raises(R.ReaderError, match="cannot start a reader one"):
        R.pretrain_reader(tmp_path / "y", stem="reader", init=tmp_path / "l", steps=1, batch_size=4, **QUIET)
    with pytest.raises(R.ReaderError, match="must read the same"):
        R.pretrain_reader(tmp_path / "x", stem="reader-lite", teacher=teacher, steps=1, batch_size=4,
                          **{**QUIET, "window": (96, 32, 64, 32)})


def test_a_policy_reads_through_a_reader_lite(teacher, tmp_path):
    from policies.pixel.reads import _FusedStem, _Probs, conv_act_fusable, folded

    R.pretrain_reader(tmp_path / "lite", stem="reader-lite", init=teacher, teacher=teacher, steps=2, batch_size=4,
                      **QUIET)
    _, lite = R.load_reader(tmp_path / "lite")
    m = with_match_reader(PixelModel(PixelConfig(**SMALL)), tmp_path / "lite")
    assert m.config.match_stem == "reader-lite"
    assert all(torch.equal(m.reader.state_dict()[k], v) for k, v in lite.state_dict().items())
    m.save_pretrained(tmp_path / "policy")
    again = PixelModel.from_pretrained(tmp_path / "policy")
    assert again.config.match_stem == "reader-lite" and len(_convs(again.reader.stem)) == 4
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (5, 32, 64, 3), dtype=np.uint8))
    with torch.inference_mode():
        want = again.reader.eval().probs(tiles)
        if conv_act_fusable(torch.device("cpu")):  # the fused read takes the four layers as it took five
            fused = _Probs(folded(again.reader, torch.float32), fuse=True).eval()
            assert isinstance(fused.reader.stem, _FusedStem) and len(fused.reader.stem.convs) == 4
            assert torch.allclose(fused(tiles), want, atol=1e-5)


def test_a_reader_relu_keeps_every_layer_of_the_reader_it_starts_from(teacher, tmp_path):
    full, _ = build_stem("reader", 8, 32, 64)
    relu, _ = build_stem("reader-relu", 8, 32, 64)
    assert [type(m) for m in relu if not isinstance(m, torch.nn.ReLU)] == \
        [type(m) for m in full if not isinstance(m, torch.nn.GELU)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in relu) == 5 and not any(isinstance(m, torch.nn.GELU) for m in relu)
    R.pretrain_reader(tmp_path / "r0", stem="reader-relu", init=teacher, teacher=teacher, steps=1, lr=0.0,
                      batch_size=8, **QUIET)
    _, src = R.load_reader(teacher)
    cfg, got = R.load_reader(tmp_path / "r0")
    assert cfg["stem"] == "reader-relu"
    got_params = dict(got.named_parameters())  # lr 0: as they came (a step moves batch-norm statistics only)
    assert all(torch.equal(got_params[k], v) for k, v in src.named_parameters())
    # a reader-relu does not start a reader-lite
    with pytest.raises(R.ReaderError, match="cannot start a reader-lite one"):
        R.pretrain_reader(tmp_path / "y", stem="reader-lite", init=tmp_path / "r0", steps=1, batch_size=4, **QUIET)
