"""scripts/average_checkpoints.py: a weight-by-weight average of two checkpoints of one architecture."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import average_checkpoints  # noqa: E402

from policies.pixel import PixelConfig, PixelModel  # noqa: E402


def _checkpoint(path: Path, seed: int, **over) -> Path:
    torch.manual_seed(seed)
    PixelModel(PixelConfig.for_size("pixel-tiny", **over)).save_pretrained(path)
    (path / "training.json").write_text(json.dumps({"out": str(path)}))
    return path


def test_average_is_the_weighted_mean_and_loads(tmp_path):
    a, b = _checkpoint(tmp_path / "a", 0), _checkpoint(tmp_path / "b", 1)
    average_checkpoints.main([str(a), str(b), str(tmp_path / "out"), "--weight", "0.25"])
    ta, tb, tm = (load_file(p / "model.safetensors") for p in (a, b, tmp_path / "out"))
    floats = [k for k in tm if tm[k].is_floating_point()]
    assert floats and all(torch.allclose(tm[k], 0.75 * ta[k] + 0.25 * tb[k], atol=1e-6) for k in floats)
    info = json.loads((tmp_path / "out" / "training.json").read_text())
    assert info["out"] == str(b) and info["average"]["weight_of_after"] == 0.25
    PixelModel.from_pretrained(tmp_path / "out")  # a checkpoint like any other


def test_float16_and_refusals(tmp_path):
    a, b = _checkpoint(tmp_path / "a", 0), _checkpoint(tmp_path / "b", 1)
    average_checkpoints.main([str(a), str(b), str(tmp_path / "h"), "--float16"])
    assert {t.dtype for t in load_file(tmp_path / "h" / "model.safetensors").values() if t.is_floating_point()} == {torch.float16}
    other = _checkpoint(tmp_path / "c", 2, hidden_size=64)
    with pytest.raises(SystemExit, match="not the same architecture"):
        average_checkpoints.main([str(a), str(other), str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        average_checkpoints.main([str(a), str(b), str(tmp_path / "y"), "--weight", "1.5"])
