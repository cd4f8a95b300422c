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


def test_a_swapped_reader_and_grown_keys_are_the_fine_tuned_ones(tmp_path):
    """AFTER trained with its own frozen reader (a new one swapped in) and appended key combos: the
    average keeps AFTER's reader and AFTER's rows for the new combos, and averages the rest."""
    from policies.pixel import load_model
    from policies.pixel.training import with_keys

    after = with_keys(load_model("pixel-small"), ["ctrl+n"])
    with torch.no_grad():
        for name, t in after.named_parameters():
            if name.startswith("grounding.reader.") or name.startswith("head_"):
                t.add_(0.5)
    after.save_pretrained(tmp_path / "after")
    average_checkpoints.main(["pixel-small", str(tmp_path / "after"), str(tmp_path / "out")])
    from policies.checkpoints import bundled_checkpoint

    ta = load_file(bundled_checkpoint("pixel-small") / "model.safetensors")
    tb, tm = (load_file(tmp_path / p / "model.safetensors") for p in ("after", "out"))
    reader = [k for k in tm if k.startswith("grounding.reader.")]
    assert reader and all(torch.equal(tm[k], tb[k]) for k in reader)
    n = ta["head_key.weight"].shape[0]
    assert torch.allclose(tm["head_key.weight"][:n], 0.5 * ta["head_key.weight"].float() + 0.5 * tb["head_key.weight"][:n], atol=1e-6)
    assert torch.equal(tm["head_key.weight"][n:], tb["head_key.weight"][n:])
    assert load_model(str(tmp_path / "out")).config.keys[-1] == "ctrl+n"
