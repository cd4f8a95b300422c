"""The pixel policy's exported ONNX step is cached on disk, keyed by what went into it: a second
load of a checkpoint skips the export, and a changed checkpoint (or code, or a damaged file) is
never served a stale graph."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import policies.pixel.runtime as runtime
from capture import Frame, Screen
from policies.base import Observation
from policies.pixel import PixelConfig, PixelModel, PixelPolicy, load_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DW_ONNX_CACHE", raising=False)
    return tmp_path / "cache" / "onnx"


@pytest.fixture
def exports(monkeypatch):
    """Counts the real exports."""
    n = []
    real = runtime._export

    def counted(*a, **kw):
        n.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(runtime, "_export", counted)
    return n


def _checkpoint(folder, seed=0):
    torch.manual_seed(seed)
    PixelModel(PixelConfig.for_size("pixel-tiny")).save_pretrained(folder)
    return str(folder)


def _obs():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (240, 320, 4), dtype=np.uint8)
    return Observation(Frame(px, 0.0, 0, Screen(320, 240)), 'Click "OK".', (0.3, 0.6), ())


def _outputs(policy):
    obs = _obs()
    policy.reset(obs.instruction)
    return policy._step(policy.arrays(obs))


def test_cache_dir_follows_xdg_and_can_be_turned_off(monkeypatch, tmp_path):
    monkeypatch.delenv("DW_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("DW_ONNX_CACHE", raising=False)
    assert runtime.onnx_cache_dir() == tmp_path / "digital-worker" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime.onnx_cache_dir() == tmp_path / "home" / ".cache" / "digital-worker" / "onnx"
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "dw"))
    assert runtime.onnx_cache_dir() == tmp_path / "dw" / "onnx"
    from encoders.ladder import cache_dir

    assert runtime.onnx_cache_dir().parent == cache_dir()  # one user cache for every part
    monkeypatch.setenv("DW_ONNX_CACHE", "0")
    assert runtime.onnx_cache_dir() is None


def test_second_load_uses_the_cached_graph(cache, exports, tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt")
    first = PixelPolicy(load_model(ckpt), runtime="onnx", dtype="float32")
    assert len(exports) == 1 and len(list(cache.glob("*.onnx"))) == 1
    assert [p.name for p in cache.iterdir()] == [p.name for p in cache.glob("*.onnx")]  # no temporary file left
    second = PixelPolicy(load_model(ckpt), runtime="onnx", dtype="float32")
    assert len(exports) == 1  # no second export
    a, b = _outputs(first), _outputs(second)
    for k in ("type_logits", "pointer_logits", "offsets"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k


def test_a_changed_checkpoint_is_a_new_key(cache, exports, tmp_path):
    ckpt = _checkpoint(tmp_path / "ckpt", seed=0)
    PixelPolicy(load_model(ckpt), runtime="onnx", dtype="float32")
    _checkpoint(tmp_path / "ckpt", seed=1)  # retrained in place: same folder, new weights
    changed = load_model(ckpt)
    pol = PixelPolicy(changed, runtime="onnx", dtype="float32")
    assert len(exports) == 2 and len(list(cache.glob("*.onnx"))) == 2
    ref = PixelPolicy(load_model(ckpt), runtime="torch", dtype="float32")
    obs = _obs()
    ref.reset(obs.instruction)
    with torch.inference_mode():
        want = ref.model(**ref.inputs(obs), text_cache=ref._cache)
    got = _outputs(pol)
    assert torch.allclose(got.pointer_logits, want.pointer_logits, atol=1e-4)  # the new weights' graph

    # a model changed after loading is a new key too; so is an int8 graph of the same weights
    m = load_model(ckpt)
    with torch.no_grad():
        next(m.parameters()).add_(0.5)
    f = runtime._FlatStep(m)
    args = ((), ["a"], ["b"], {}, False)
    k0 = runtime.export_key(runtime._FlatStep(load_model(ckpt)), *args)
    assert runtime.export_key(f, *args) != k0
    assert runtime.export_key(runtime._FlatStep(load_model(ckpt)), *args[:-1], True) != k0


def test_a_code_change_is_a_new_key(tmp_path, monkeypatch):
    m = load_model(_checkpoint(tmp_path / "ckpt"))
    args = (runtime._FlatStep(m), (), ["a"], ["b"], {}, False)
    k0 = runtime.export_key(*args)
    monkeypatch.setattr(runtime, "EXPORT_VERSION", runtime.EXPORT_VERSION + 1)
    assert runtime.export_key(*args) != k0
    monkeypatch.setattr(runtime, "EXPORT_VERSION", runtime.EXPORT_VERSION - 1)
    monkeypatch.setattr(runtime, "_code_digest", lambda module: b"other source")
    assert runtime.export_key(*args) != k0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_cache_file_is_exported_again(cache, exports, tmp_path, damage):
    ckpt = _checkpoint(tmp_path / "ckpt")
    PixelPolicy(load_model(ckpt), runtime="onnx", dtype="float32")
    (entry,) = cache.glob("*.onnx")
    good = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(good[:1000])
    else:  # one bit in the middle of the weights: a graph ONNX Runtime would load and run wrong
        entry.write_bytes(good[: len(good) // 2] + bytes([good[len(good) // 2] ^ 1]) + good[len(good) // 2 + 1:])
    pol = PixelPolicy(load_model(ckpt), runtime="onnx", dtype="float32")
    assert len(exports) == 2 and entry.read_bytes() == good  # exported again, and replaced
    assert _outputs(pol).pointer_logits.shape[0] == 1


def test_models_built_in_memory_and_a_turned_off_cache_write_nothing(cache, exports, tmp_path, monkeypatch):
    torch.manual_seed(0)
    PixelPolicy(PixelModel(PixelConfig.for_size("pixel-tiny")).eval(), runtime="onnx", dtype="float32")
    assert not cache.exists()
    monkeypatch.setenv("DW_ONNX_CACHE", "off")
    PixelPolicy(load_model(_checkpoint(tmp_path / "ckpt")), runtime="onnx", dtype="float32")
    assert not cache.exists() and len(exports) == 2


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch, exports):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "file"))
    monkeypatch.delenv("DW_ONNX_CACHE", raising=False)
    pol = PixelPolicy(load_model(_checkpoint(tmp_path / "ckpt")), runtime="onnx", dtype="float32")
    assert len(exports) == 1 and _outputs(pol).pointer_logits.shape[0] == 1


def test_entries_past_the_limit_go_least_recently_used_first(cache, monkeypatch):
    monkeypatch.setattr(runtime, "CACHE_ENTRIES", 2)
    import os
    import time

    cache.mkdir(parents=True)
    for i in range(3):
        (cache / f"{i}.onnx").write_bytes(b"x" + hashlib.sha256(b"x").digest())
        os.utime(cache / f"{i}.onnx", (time.time() - 100 + i, time.time() - 100 + i))
    assert runtime._cache_read(cache / "0.onnx") == b"x"  # used: now the most recent
    runtime._cache_write(cache / "3.onnx", b"x")
    assert sorted(p.name for p in cache.glob("*.onnx")) == ["0.onnx", "3.onnx"]  # 1 and 2 went
