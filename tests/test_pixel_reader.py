"""Reading pretraining (synthetic UI text) and a policy built on the pretrained stem."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from agent.sessions.demos import demo_specs, record_demo
from policies.pixel import reader as R
from policies.train import TrainConfig, TrainError, train

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8}


def test_tiles_are_seeded_glimpses_holding_their_word():
    faces = R.font_faces()
    a = [R.render_tile(random.Random(3), ["Submit"], faces) for _ in range(2)]
    assert np.array_equal(a[0][0], a[1][0]) and a[0][1] == a[1][1]
    tiles, targets, words = R.batch(random.Random(0), 64, ["Submit", "Cancel"], faces, 64, 48)
    assert tiles.shape == (64, 48, 48, 3) and tiles.dtype == torch.uint8
    assert all(len(w) <= R.MAX_CHARS for w in words) and any(w in ("Submit", "Cancel") for w in words)
    assert [R.decode_word(t.clamp(min=0).tolist()) for t in targets] == words
    assert R.encode_word("OK").tolist()[:4] == [R.CHARS.index("O"), R.CHARS.index("K"), R.END, -1]
    # a tile with its word is not a blank: the word's pixels differ from the background
    i = next(j for j, w in enumerate(words) if w)
    assert tiles[i].float().std() > 5


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    out = tmp_path_factory.mktemp("reader")
    logs: list[str] = []
    summary = R.pretrain_reader(out, channels=8, steps=40, batch_size=16, lr=3e-3, val_tiles=32,
                                words=["Submit", "Cancel"], log=logs.append)
    return out, summary, logs


def test_pretraining_lowers_the_reading_loss_and_saves_the_stem(reader):
    out, summary, _ = reader
    assert summary["steps"] == 40 and (out / R.READER_FILE).is_file()
    cfg, weights = R.load_reader_stem(out)
    assert cfg["stem"] == "reader" and cfg["stem_channels"] == 8
    assert set(weights) == set(R.Reader("reader", 8, 48).stem.state_dict())
    # from uniform over 96 classes (ln 96 = 4.56) the loss falls within 40 steps
    assert summary["start_loss"] > 4.0
    assert summary["history"][-1]["loss"] < summary["start_loss"] - 0.5
    assert 0.0 <= summary["val_word_acc"] <= 1.0
    with pytest.raises(R.ReaderError, match="not a reader folder"):
        R.load_reader_stem(out / "missing")
    # the whole reader (stem and head) loads back and reads as it did when saved
    _, model = R.load_reader(out)
    x, _, texts = R.batch(random.Random(1_000_003), 32, ["Submit", "Cancel"], R.font_faces(), 64, 48)
    assert R.word_accuracy(model, x, texts) == summary["val_word_acc"]


def test_a_policy_trained_over_the_reader_stem(reader, tmp_path):
    from safetensors.torch import load_file

    from policies.pixel import load_pixel_policy

    out, _, _ = reader
    demos = tmp_path / "demos"
    for spec in demo_specs(["click-button"], 1, [(640, 480, 1.0)], seed=0):
        record_demo(spec, str(demos))
    base = TrainConfig(size="pixel-tiny", epochs=1, batch_size=8, max_steps=1, val_fraction=0.0, warmup_steps=1,
                       lr=0.0, weight_decay=0.0, overrides=SMALL)
    train([demos], tmp_path / "base", base, cache_dir=tmp_path / "cache", progress=False, log=lambda s: None)
    tc = TrainConfig(epochs=1, batch_size=8, max_steps=1, val_fraction=0.0, warmup_steps=1, lr=0.0, weight_decay=0.0,
                     init=str(tmp_path / "base"), reader=str(out))
    s = train([demos], tmp_path / "ft", tc, cache_dir=tmp_path / "cache", progress=False, log=lambda s: None)
    assert s["steps"] == 1
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["stem"] == "reader" and cfg["training"]["reader"] == str(out)
    a, b = load_file(str(tmp_path / "base" / "model.safetensors")), load_file(str(tmp_path / "ft" / "model.safetensors"))
    _, stem = R.load_reader_stem(out)
    # lr 0: the reader's stem (its batch-norm statistics follow the new data), the init's other
    # weights, a fresh glimpse projection
    learned = [k for k in stem if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert learned and all(torch.equal(b[f"stem.{k}"], stem[k]) for k in learned)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith(("stem.", "glimpse_proj.")))
    assert not torch.equal(b["glimpse_proj.weight"], a["glimpse_proj.weight"])  # fresh
    pol = load_pixel_policy(str(tmp_path / "ft"))  # exports and runs the step with the new stem
    from agent.desktops.virtual import VirtualDesktop
    from policies.base import Observation

    desk = VirtualDesktop("click-button", seed=1, size=(640, 480))
    pol.reset(desk.instruction)
    assert len(pol.act(Observation(desk.observe(), desk.instruction))) >= 1
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / R.READER_CONFIG).write_text(json.dumps({"stem": "reader", "stem_channels": 8, "glimpse_px": 32}))
    (wrong / R.READER_FILE).write_bytes((out / R.READER_FILE).read_bytes())
    tc.reader = str(wrong)
    with pytest.raises(TrainError, match="32-pixel glimpses"):
        train([demos], tmp_path / "bad", tc, cache_dir=tmp_path / "cache", progress=False, log=lambda s: None)


def test_dw_reader_rejects_bad_arguments(tmp_path, capsys):
    from agent.cli.main import main

    assert main(["reader", "--size", "pixel-huge", "--out", str(tmp_path / "r")]) == 2
    assert "unknown --size 'pixel-huge'" in capsys.readouterr().err
    assert main(["reader", "--steps", "0", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    assert main(["reader", "--desktop-share", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--desktop-share" in capsys.readouterr().err
    assert main(["reader", "--init", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "not a reader folder" in err
    assert main(["reader", "--teacher", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and "not a reader folder" in err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["reader", "--bank", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "r")]) == 2
    assert "not a tile bank" in capsys.readouterr().err
    assert main(["reader", "--bank", str(tmp_path / "junk.npz"), "--desktop-share", "0", "--out", str(tmp_path / "r")]) == 2
    assert "would go unused" in capsys.readouterr().err
    assert main(["reader", "--tile-pt", "4", "--out", str(tmp_path / "r")]) == 2
    assert "--tile-pt" in capsys.readouterr().err
    assert main(["reader", "--desktop-tasks", "drag-sliders", "--out", str(tmp_path / "r")]) == 2
    assert "--desktop-tasks: unknown task 'drag-sliders'" in capsys.readouterr().err
    assert main(["reader", "--desktop-tasks", "drag-slider", "--desktop-share", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--desktop-share above 0" in capsys.readouterr().err


def test_desktop_scenes_are_painted_as_the_desktop_paints_them_with_every_visible_word():
    from agent.desktops.virtual import VirtualDesktop
    from agent.desktops.virtual.reading import paint_scene

    desk = VirtualDesktop("click-button", seed=7, size=(800, 600), scale=1.25)
    frame = desk.observe()
    pixels, words = paint_scene(desk)
    tx, ty = desk.cursor_px
    same = np.ones(pixels.shape[:2], bool)
    same[ty:ty + 40, tx:tx + 40] = False  # the cursor is drawn over the desktop's frame only
    assert np.array_equal(pixels[same], frame.pixels[:, :, :3][same])
    target = desk.oracle.target.label
    assert target in [w for w, _ in words]
    for _, (x0, y0, x1, y1) in words:  # each word's box lies on the screen and holds ink
        assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 600
        assert pixels[int(y0):int(y1) + 1, int(x0):int(x1) + 1].std() > 10
    desk.close()


def test_a_word_painted_over_is_not_visible():
    from PIL import Image

    from agent.desktops.virtual.reading import _Recorder
    from agent.desktops.virtual.render import Rect

    p = _Recorder(Image.new("RGBA", (200, 100)), 1.0)
    p.text(10, 20, "Hidden word:", 13.0)
    p.rect(Rect(0, 0, 200, 40), fill=(255, 255, 255))
    p.text(10, 60, "Shown", 13.0)
    assert [w for _, w, _ in p.words] == ["Hidden", "word", "Shown"]
    assert len(p.fills) == 1 and p.fills[0][0] == 2  # painted after the first text's words, before the last


def _title_words() -> set[str]:
    from agent.desktops.virtual.reading import word_of
    from agent.desktops.virtual.tasks import WINDOW_TITLES

    return {word_of(w) for t in WINDOW_TITLES for w in t.split()}


def test_desktop_tiles_name_the_one_whole_word_inside():
    from agent.desktops.virtual.reading import desktop_tiles, word_of

    assert [word_of(t) for t in ("Name:", "Budget.xlsx", "(Save)", "-", "e-mail", "42")] == \
        ["Name", "Budget", "Save", "", "e-mail", "42"]
    tiles, words = desktop_tiles(random.Random(0), 48)
    again, words2 = desktop_tiles(random.Random(0), 48)
    assert tiles.shape == (48, 48, 48, 3) and tiles.dtype == np.uint8 and len(words) == 48
    assert np.array_equal(tiles, again) and words == words2  # seeded
    assert sum(bool(w) for w in words) > 24 and all(len(w) <= R.MAX_CHARS for w in words)
    held, _ = desktop_tiles(random.Random(0), 8, held_out=True)
    assert not np.array_equal(held, tiles[:8])
    # tiles from the chosen tasks' screens only: a slider's screen names its value, a number
    _, slider = desktop_tiles(random.Random(1), 48, tasks=["drag-slider"])
    assert any(w.isdigit() for w in slider)
    assert {w for w in slider if w} <= {"Submit", "Volume", "Brightness", "Opacity", "Zoom", "Speed", "Contrast",
                                       "Balance"} | {str(v) for v in range(101)} | _title_words()


def test_reader_training_goes_on_from_a_reader_with_desktop_tiles(reader, tmp_path):
    from agent.desktops.virtual.reading import desktop_tiles

    out, _, _ = reader
    logs: list[str] = []
    summary = R.pretrain_reader(tmp_path / "more", channels=99, steps=3, batch_size=8, val_tiles=16, init=out,
                                desktop=desktop_tiles, desktop_share=0.5, log=logs.append)
    assert summary["stem_channels"] == 8 and summary["init"] == str(out) and summary["desktop_share"] == 0.5
    assert 0.0 <= summary["val_desktop_word_acc"] <= 1.0 and "val_desktop_word_acc" in logs[-1]
    _, model = R.load_reader(tmp_path / "more")
    _, before = R.load_reader(out)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values(), strict=True))
