"""The pixel-transformer family: sizes, Hugging Face round trip, preprocessing, action decoding."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from capture import Frame, Screen
from policies.actions import ACTION_TYPES, Action, Click, Drag, Key, Type
from policies.base import Observation
from policies.pixel import SIZES, TARGET_PARAMS, PixelConfig, PixelModel, PixelPolicy, Preprocessor
from policies.pixel.codec import action_label, decode, history_features, type_span


@pytest.mark.parametrize("name", list(SIZES))
def test_sizes_near_targets(name):
    cfg = PixelConfig.for_size(name)
    with torch.device("meta"):
        n = sum(p.numel() for p in PixelModel(cfg).parameters())
    assert 0.7 * TARGET_PARAMS[name] <= n <= 1.3 * TARGET_PARAMS[name], n


def _frame(w=640, h=480, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    px = np.full((h, w, 4), 90, np.uint8)
    for _ in range(12):
        x, y = int(rng.integers(0, w - 120)), int(rng.integers(0, h - 40))
        px[y:y + 30, x:x + 100] = rng.integers(0, 255, (30, 100, 4))
    return Frame(px, 0.0, 0, Screen(w, h, scale=scale))


def _tiny():
    torch.manual_seed(0)
    return PixelModel(PixelConfig.for_size("pixel-tiny")).eval()


def test_round_trip_through_automodel(tmp_path):
    from transformers import AutoModel

    m = _tiny()
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    m2 = AutoModel.from_pretrained(tmp_path).eval()
    assert type(m2) is PixelModel
    p1, p2 = PixelPolicy(m), PixelPolicy(m2)
    obs = Observation(_frame(), 'Click the "OK" button.', (0.5, 0.5), ())
    p1.reset(obs.instruction)
    p2.reset(obs.instruction)
    i1 = p1.inputs(obs)
    with torch.inference_mode():
        o1 = m(**i1, text_cache=p1._cache)
        o2 = m2(**p2.inputs(obs), text_cache=p2._cache)
    for k in ("type_logits", "pointer_logits", "offsets", "span_start"):
        assert torch.allclose(getattr(o1, k), getattr(o2, k), atol=1e-5), k
    a1, a2 = p1.act(obs), p2.act(obs)
    assert [a.type for a in a1] == [a.type for a in a2]
    for x, y in zip(a1, a2, strict=True):  # equal up to float rounding of the offset head
        if x.point is not None:
            assert np.allclose(x.point, y.point, atol=1e-6)


def test_automodel_in_a_plain_python_session(tmp_path):
    _tiny().save_pretrained(tmp_path)
    code = (
        "import policies.pixel\nfrom transformers import AutoModel\n"
        f"m = AutoModel.from_pretrained({str(tmp_path)!r})\nprint(type(m).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("PixelModel")


def test_text_cache_matches_full_forward():
    m = _tiny()
    pol = PixelPolicy(m, dtype="float32")  # exact comparison: the trimmed cache only drops masked keys
    obs = Observation(_frame(), "Type \"maple\" into the text field.", None, (Click(0.2, 0.3),))
    pol.reset(obs.instruction)
    inp = pol.inputs(obs)
    from policies.pixel.processing import encode_text

    ids = torch.from_numpy(encode_text(obs.instruction, m.config.max_text)[0])[None]
    with torch.inference_mode():
        a = m(**inp, text_cache=pol._cache)
        b = m(**inp, text_ids=ids)
    assert torch.allclose(a.type_logits, b.type_logits, atol=1e-5)


def test_padding_columns_change_nothing():
    """encode_text drops the columns that are padding in every row: a short instruction gives
    the same outputs alone as beside a longer one in a batch (where its padding is kept)."""
    from policies.pixel.processing import encode_text

    m = _tiny()
    short, long_ = "Click OK.", 'Type "maple syrup" into the second text field, then press Submit.'
    ids = torch.from_numpy(np.stack([encode_text(t, m.config.max_text)[0] for t in (short, long_)]))
    pol = PixelPolicy(m, dtype="float32")
    obs = Observation(_frame(), short, (0.5, 0.5), ())
    pol.reset(short)
    assert pol._cache.mask.shape[1] == len(short)  # trimmed to the instruction
    inp = {k: torch.cat([v, v]) for k, v in pol.inputs(obs).items()}
    with torch.inference_mode():
        both = m(**inp, text_ids=ids)
        alone = m(**{k: v[:1] for k, v in inp.items()}, text_ids=ids[:1])
    assert torch.allclose(both.type_logits[:1], alone.type_logits, atol=1e-5)
    assert torch.allclose(both.pointer_logits[:1], alone.pointer_logits, atol=1e-5)
    assert torch.allclose(both.span_start[:1, :len(short)], alone.span_start, atol=1e-5)


def test_inference_dtype_choice(monkeypatch):
    from policies.pixel import inference_dtype

    monkeypatch.delenv("DW_PIXEL_DTYPE", raising=False)
    assert inference_dtype("cpu", "float32") is torch.float32
    assert inference_dtype("cpu", "bfloat16") is torch.bfloat16
    assert inference_dtype("cpu", "auto") in (torch.float32, torch.bfloat16)  # bf16 only on native-bf16 CPUs
    monkeypatch.setenv("DW_PIXEL_DTYPE", "float32")
    assert inference_dtype("cpu") is torch.float32
    monkeypatch.setenv("DW_PIXEL_DTYPE", "float8")
    with pytest.raises(ValueError, match="unknown dtype"):
        inference_dtype("cpu")


def test_bf16_policy_points_where_fp32_does():
    """Pointer boxes stay float32 under bf16, so a point is off by at most the offset's rounding."""
    torch.manual_seed(1)
    cfg = PixelConfig.for_size("pixel-tiny")
    m32, m16 = PixelModel(cfg).eval(), PixelModel(cfg).eval()
    m16.load_state_dict(m32.state_dict())
    p32, p16 = PixelPolicy(m32, dtype="float32"), PixelPolicy(m16, dtype="bfloat16")
    assert next(p16.model.parameters()).dtype is torch.bfloat16
    obs = Observation(_frame(1920, 1080), 'Click the "OK" button.', (0.5, 0.5), ())
    p32.reset(obs.instruction)
    p16.reset(obs.instruction)
    with torch.inference_mode():
        o32 = m32(**p32.inputs(obs), text_cache=p32._cache)
        o16 = m16(**p16.inputs(obs), text_cache=p16._cache)
    assert o16.boxes.dtype is torch.float32
    assert torch.equal(o16.boxes, o32.boxes)
    tok = int(o32.pointer_logits[0, 0].argmax())
    b = o32.boxes[0, tok]
    d = (o16.offsets[0, 0, tok].float() - o32.offsets[0, 0, tok]).abs() * (b[2:] - b[:2]) * torch.tensor([1920, 1080])
    assert float(d.max()) < 4.0  # pixels, inside a 64-point glimpse or a global patch


def test_onnx_step_matches_torch():
    """The ONNX Runtime step computes what the PyTorch forward pass computes, for instructions of
    any length (the text axis is dynamic), with history, and acts the same."""
    m_onnx, m_torch = _tiny(), _tiny()
    for m in (m_onnx, m_torch):  # the span heads as learned (they start at zero)
        torch.manual_seed(2)
        for layer in (m.span_local, m.span_cond):
            torch.nn.init.normal_(layer.weight, std=0.3)
    po = PixelPolicy(m_onnx, runtime="onnx", dtype="float32")  # float32 throughout: no int8 products
    pt = PixelPolicy(m_torch, runtime="torch", dtype="float32")
    assert po.runtime == "onnx" and pt.runtime == "torch" and po.dtype is torch.float32
    for text, hist in (("Click OK.", ()), ('Type "maple syrup" into the second field, then press Submit.',
                                           (Click(0.2, 0.3), Type("maple"), Key("tab")))):
        obs = Observation(_frame(1920, 1080, seed=len(text)), text, (0.4, 0.6), hist)
        po.reset(text)
        pt.reset(text)
        o = po._step(po.arrays(obs))
        with torch.inference_mode():
            r = m_torch(**pt.inputs(obs), text_cache=pt._cache)
        for k in ("type_logits", "key_logits", "pointer_logits", "offsets", "span_start", "span_end", "boxes"):
            assert torch.allclose(getattr(o, k), getattr(r, k), atol=1e-4), k
        a1, a2 = po.act(obs), pt.act(obs)
        assert [a.type for a in a1] == [a.type for a in a2]
        for x, y in zip(a1, a2, strict=True):
            if x.point is not None:
                assert np.allclose(x.point, y.point, atol=1e-5)


def test_runtime_choice(monkeypatch):
    from policies.pixel.runtime import choose_runtime

    monkeypatch.delenv("DW_PIXEL_RUNTIME", raising=False)
    monkeypatch.delenv("DW_PIXEL_DTYPE", raising=False)
    assert choose_runtime("cpu") == "onnx"  # onnxruntime is a dependency
    assert choose_runtime("cpu", hidden_size=256) == "onnx"  # pixel-small
    assert choose_runtime("cpu", hidden_size=448) == "torch"  # pixel-base: bf16 PyTorch is faster
    assert choose_runtime("cuda") == "torch"
    assert choose_runtime("cpu", dtype="bfloat16") == "torch"  # a dtype asked for: PyTorch honours it
    assert choose_runtime("cpu", "torch") == "torch"
    monkeypatch.setenv("DW_PIXEL_RUNTIME", "torch")
    assert choose_runtime("cpu") == "torch"
    monkeypatch.setenv("DW_PIXEL_RUNTIME", "auto")
    monkeypatch.setenv("DW_PIXEL_DTYPE", "float32")
    assert choose_runtime("cpu") == "torch"
    with pytest.raises(ValueError, match="runs on the CPU"):
        choose_runtime("cuda", "onnx")
    with pytest.raises(ValueError, match="unknown runtime"):
        choose_runtime("cpu", "tensorrt")


@pytest.mark.parametrize("w,h,scale", [(640, 480, 1.0), (1920, 1080, 1.0), (5120, 2880, 2.0), (1366, 768, 1.25)])
def test_preprocess_logical_geometry(w, h, scale):
    cfg = PixelConfig.for_size("pixel-tiny")
    pre = Preprocessor(cfg)
    v = pre(_frame(w, h, scale))
    assert v.global_view.shape == (cfg.global_h, cfg.global_w, 3)
    assert v.glimpses.shape == (cfg.max_glimpses, cfg.glimpse_px, cfg.glimpse_px, 3)
    assert v.mask.any()
    b = v.boxes[v.mask]
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 0] >= 0).all() and (b[:, 2] <= 1.0 + 1e-6).all()
    # a glimpse covers tile_pt logical points whatever the screen: its physical width is tile_pt * scale
    full = b[(b[:, 2] < 0.999)]
    if len(full):
        assert np.allclose((full[:, 2] - full[:, 0]) * w, cfg.tile_pt * scale, atol=1.0)


@pytest.mark.parametrize("w,h,scale", [(640, 480, 1.0), (1366, 768, 1.0), (1920, 1080, 1.25), (5120, 2880, 2.0)])
def test_glimpses_equal_one_resize_per_crop(w, h, scale):
    """Same-size crops are resized stacked, in one call: the result is what one resize per crop
    gives, bit for bit (edge tiles of other sizes included)."""
    import cv2

    cfg = PixelConfig.for_size("pixel-small")
    f = _frame(w, h, scale, seed=3)
    v = Preprocessor(cfg)(f)
    assert v.mask.sum() > 1
    g = cfg.glimpse_px
    for i in np.flatnonzero(v.mask):
        x0, y0, x1, y1 = (int(round(float(c))) for c in v.boxes[i] * (w, h, w, h))
        ref = cv2.resize(f.pixels[y0:y1, x0:x1], (g, g), interpolation=cv2.INTER_AREA)[:, :, :3]
        assert np.array_equal(v.glimpses[i], ref), i


def test_decoding_gives_valid_actions():
    m = _tiny()
    cfg = m.config
    pol = PixelPolicy(m)
    obs = Observation(_frame(), 'Type "maple" into the "Name" field and press Enter.', (0.1, 0.9), ())
    pol.reset(obs.instruction)
    with torch.no_grad():
        pol._cache = m.encode_text(pol._cache.mask.new_zeros(1, 1).long() + 65)
        out = m(**pol.inputs(obs), text_cache=pol._cache)
    raw = obs.instruction.encode()
    for t in range(len(cfg.action_types)):  # force every action type through the decoder
        out.type_logits[:] = -10
        out.type_logits[0, t] = 10
        acts = decode(cfg, out, raw)
        assert all(isinstance(a, Action) for a in acts)
        for a in acts:
            assert a.type in ACTION_TYPES
            if a.point:
                assert 0 <= a.point[0] <= 1 and 0 <= a.point[1] <= 1


def test_a_typed_span_ends_inside_its_quotes():
    """A span that starts inside a quoted string ends before its closing quote, whatever the end
    logits say; one that starts outside quotes is decoded as the logits say."""
    m = _tiny()
    cfg = m.config
    raw = b'Type "ada" into the "Name" field and press Enter.'
    out = m(**PixelPolicy(m).inputs(Observation(_frame(), raw.decode(), None, ())),
            text_ids=torch.zeros(1, cfg.max_text, dtype=torch.long))
    out.type_logits[:] = -10
    out.type_logits[0, cfg.action_types.index("type")] = 10

    def typed(start: int, end: int) -> str:
        out.span_start[:] = -10
        out.span_end[:] = -10
        out.span_start[0, start] = 10
        out.span_end[0, end] = 10
        out.span_end[0, start:end] = torch.linspace(-5, -1, end - start)  # the later the better
        return decode(cfg, out, raw)[0].text

    assert typed(6, 8) == "ada"
    assert typed(6, 12) == "ada"  # 'ada" in' would cross the closing quote
    assert typed(6, 7) == "ad"  # an end short of it is the model's
    assert typed(0, 3) == "Type"  # outside quotes: as the logits say
    assert typed(28, 40) == raw[28:41].decode()


def test_span_heads_start_as_the_model_without_them_and_the_end_follows_the_start(tmp_path):
    """The span keys' byte neighbours and the end's look from the start begin at zero, also when a
    checkpoint saved before them loads; once learned, the end depends on where the span starts:
    the labelled start in training, the likeliest one otherwise."""
    from safetensors.torch import load_file, save_file

    from policies.pixel.codec import LABEL_FIELDS

    m = _tiny()
    new = ("span_local.", "span_cond.")
    assert all(not p.any() for n, p in m.named_parameters() if n.startswith(new))
    m.save_pretrained(tmp_path)
    w = {k: v for k, v in load_file(str(tmp_path / "model.safetensors")).items() if not k.startswith(new)}
    save_file(w, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    old = PixelModel.from_pretrained(tmp_path)
    assert all(not p.any() for n, p in old.named_parameters() if n.startswith(new))

    torch.manual_seed(1)
    for layer in (m.span_local, m.span_cond):
        torch.nn.init.normal_(layer.weight, std=0.3)
    raw = 'Type "ada" into the "Name" field and press Enter.'
    from policies.pixel.processing import encode_text

    ids = torch.from_numpy(encode_text(raw, m.config.max_text)[0])[None]
    inp = PixelPolicy(m).inputs(Observation(_frame(), raw, None, ()))
    with torch.no_grad():
        free = m(**inp, text_ids=ids)
        start = int(free.span_start.argmax())

        def end_logits(s: int) -> torch.Tensor:
            labels = torch.full((1, len(LABEL_FIELDS)), -1, dtype=torch.long)
            labels[0, LABEL_FIELDS.index("type")] = 0
            labels[0, LABEL_FIELDS.index("span_start")] = s
            return m(**inp, text_ids=ids, labels=labels, target_offsets=torch.zeros(1, 2, 2)).span_end

        assert torch.allclose(end_logits(start), free.span_end, atol=1e-5)
        assert not torch.allclose(end_logits((start + 7) % len(raw)), free.span_end, atol=1e-3)


def test_labels_point_inside_their_box_and_type_spans():
    cfg = PixelConfig.for_size("pixel-tiny")
    v = Preprocessor(cfg)(_frame())
    raw = b'Type "pepper" into the field.'
    lab, off = action_label(cfg, Click(0.3, 0.4), v.boxes, v.mask, raw)
    assert lab["type"] == cfg.action_types.index("click") and lab["ptr0"] >= 0
    assert (0 <= off).all() and (off <= 1).all()
    lab, _ = action_label(cfg, Drag(0.1, 0.5, 0.6, 0.5), v.boxes, v.mask, raw)
    assert lab["ptr1"] >= 0
    # "pe" occurs in "Type" too: the copy comes from inside the quotes
    assert type_span(raw, "pe") == (6, 7)
    assert type_span(raw, "pp", prev_end=7) == (8, 9)
    lab, _ = action_label(cfg, Key("enter"), v.boxes, v.mask, raw)
    assert lab["key"] == cfg.keys.index("enter")
    types, pts = history_features(cfg, [Type("pe"), Key("enter")], raw)
    assert types[-1] == cfg.action_types.index("key") and pts[-2, 2] == 1.0


def test_glimpses_prefer_real_content_over_lines_and_shift_the_grid():
    cfg = PixelConfig.for_size("pixel-tiny", max_glimpses=1)
    px = np.full((480, 640, 4), 200, np.uint8)
    px[300, :] = 20  # a long line (a window border) crossing many tiles: many edge cells, one direction
    px[100:112, 400:440] = 20  # a small box (a button): edges in both directions
    v = Preprocessor(cfg)(Frame(px, 0.0, 0, Screen(640, 480)))
    x0, y0, x1, y1 = v.boxes[0] * np.array([640, 480, 640, 480])
    assert v.mask[0] and x0 <= 400 and x1 >= 440 and y0 <= 100 and y1 >= 112
    cfg = PixelConfig.for_size("pixel-tiny")
    a = Preprocessor(cfg)(_frame())
    b = Preprocessor(cfg, shift=(4, 2))(_frame())
    edges = b.boxes[b.mask][:, 0] * 640
    assert set(np.round(edges).astype(int)) - {0} <= set(range(32, 640, 64))  # grid moved 4 cells (32 pt)
    assert not np.array_equal(a.boxes, b.boxes)
