"""Reading pretraining (synthetic UI text, desktop tiles): the reader a reader grounding carries,
its reader-relu variant distilled from it, and ``dw reader``'s settings from a recipe."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from policies.pixel import PixelConfig, PixelModel
from policies.pixel import reader as R
from policies.pixel.vision import reader_stem
from policies.pixel.words import decode_word

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8}
QUIET = {"words": ["Submit", "Cancel"], "val_tiles": 16, "log": lambda s: None}


def test_tiles_are_seeded_glimpses_holding_their_word():
    faces = R.font_faces()
    a = [R.render_tile(random.Random(3), ["Submit"], faces) for _ in range(2)]
    assert np.array_equal(a[0][0], a[1][0]) and a[0][1] == a[1][1]
    tiles, targets, words = R.batch(random.Random(0), 64, ["Submit", "Cancel"], faces, 64, 48)
    assert tiles.shape == (64, 48, 48, 3) and tiles.dtype == torch.uint8
    assert all(len(w) <= R.MAX_CHARS for w in words) and any(w in ("Submit", "Cancel") for w in words)
    assert [decode_word(t.clamp(min=0).tolist()) for t in targets] == words
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
    assert R.word_accuracy(model, x, texts) == pytest.approx(summary["val_word_acc"], abs=5e-5)  # reported to 4 places


def _convs(stem: torch.nn.Sequential) -> list[torch.nn.Conv2d]:
    return [m for m in stem if isinstance(m, torch.nn.Conv2d)]


def test_a_reader_relu_keeps_every_layer_of_the_reader_it_starts_from(reader, tmp_path):
    full, n_full = reader_stem("reader", 8, 32, 64)
    relu, n_relu = reader_stem("reader-relu", 8, 32, 64)
    assert [c.stride for c in _convs(full)] == [(2, 2), (1, 1), (2, 2), (2, 2), (2, 2)] == [c.stride for c in _convs(relu)]
    assert [type(m) for m in relu if not isinstance(m, torch.nn.ReLU)] == \
        [type(m) for m in full if not isinstance(m, torch.nn.GELU)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in relu) == 5 and not any(isinstance(m, torch.nn.GELU) for m in relu)
    x = torch.zeros(2, 3, 32, 64)
    assert n_full == n_relu and full(x).shape == relu(x).shape
    with pytest.raises(ValueError, match="unknown reader stem 'reader-lite'"):
        reader_stem("reader-lite", 8, 32, 64)
    out, _, _ = reader
    s0 = R.pretrain_reader(tmp_path / "r0", stem="reader-relu", init=out, teacher=out, steps=1, lr=0.0, batch_size=8,
                           **QUIET)
    _, src = R.load_reader(out)
    cfg, got = R.load_reader(tmp_path / "r0")
    assert cfg["stem"] == "reader-relu" and cfg["teacher"] == str(out) and cfg["stem_channels"] == 8
    got_params = dict(got.named_parameters())  # lr 0: as they came (a step moves batch-norm statistics only)
    assert all(torch.equal(got_params[k], v) for k, v in src.named_parameters())
    assert 0.0 <= s0["val_agreement"] <= 1.0
    # the loss is the teacher's KL divergence: zero against itself, and it falls as the student trains
    with torch.no_grad():
        logits = src(torch.zeros(3, 48, 48, 3, dtype=torch.uint8))
    assert float(R.distill_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(R.distill_loss(torch.zeros_like(logits), logits)) > 0.0
    s = R.pretrain_reader(tmp_path / "r", stem="reader-relu", init=out, teacher=out, steps=20, lr=3e-3, batch_size=8,
                          **QUIET)
    assert s["history"][-1]["loss"] < s["start_loss"] and "val_agreement" in s["history"][-1]
    # a reader-relu does not start a reader, and a teacher of other tiles is refused
    with pytest.raises(R.ReaderError, match="cannot start a reader one"):
        R.pretrain_reader(tmp_path / "y", stem="reader", init=tmp_path / "r0", steps=1, batch_size=4, **QUIET)
    with pytest.raises(R.ReaderError, match="must read the same"):
        R.pretrain_reader(tmp_path / "x", stem="reader-relu", teacher=out, steps=1, batch_size=4, tile_pt=32, **QUIET)


def test_a_reader_relu_grounding_loads_and_keeps_its_stem(tmp_path):
    from policies.pixel.training import load_reader_weights

    R.pretrain_reader(tmp_path / "r", stem="reader-relu", channels=4, head_width=32, steps=1, batch_size=4,
                      window=(96, 48, 64, 32), **QUIET)
    _, rd = R.load_reader(tmp_path / "r")
    m = PixelModel(PixelConfig(**SMALL, grounding={"window": [96, 48], "window_px": [64, 32],
                                                   "reader": {"stem": "reader-relu", "channels": 4, "head": 32}}))
    load_reader_weights(m, tmp_path / "r")
    m.save_pretrained(tmp_path / "policy")
    again = PixelModel.from_pretrained(tmp_path / "policy")
    assert again.config.grounding["reader"]["stem"] == "reader-relu"
    assert sum(isinstance(x, torch.nn.ReLU) for x in again.grounding.reader.stem) == 5
    assert all(torch.equal(again.grounding.reader.state_dict()[k], v) for k, v in rd.state_dict().items())


def test_dw_reader_rejects_bad_settings(tmp_path, capsys):
    from agent.cli.main import main

    def reader(table: str, *extra: str) -> int:
        """``dw reader`` with a recipe whose [reader] table is ``table``."""
        recipe = tmp_path / "r.toml"
        recipe.write_text(f"[reader]\n{table}\n")
        return main(["reader", "--recipe", str(recipe), "--out", str(tmp_path / "r"), *extra])

    assert reader('size = "pixel-huge"') == 2
    assert "size 'pixel-huge'" in capsys.readouterr().err
    assert reader("", "--steps", "0") == 2
    assert "steps" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert reader("channels = 8\nbogus = 1") == 2
    assert "unknown key(s) bogus" in capsys.readouterr().err
    assert reader("desktop_share = 1.0") == 2
    assert "desktop_share" in capsys.readouterr().err
    assert reader('stem = "bogus"') == 2
    assert "stem 'bogus': choose one of reader, reader-relu, reader-ctc" in capsys.readouterr().err
    assert reader(f"init = {json.dumps(str(tmp_path / 'none'))}") == 2
    err = capsys.readouterr().err
    assert "init" in err and "not a reader folder" in err
    assert reader(f"teacher = {json.dumps(str(tmp_path / 'none'))}") == 2
    err = capsys.readouterr().err
    assert "teacher" in err and "not a reader folder" in err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    junk = json.dumps(str(tmp_path / "junk.npz"))
    assert reader(f"bank = [{junk}]") == 2
    assert "not a tile bank" in capsys.readouterr().err
    assert reader(f"bank = [{junk}]\ndesktop_share = 0.0") == 2
    assert "would go unused" in capsys.readouterr().err
    assert reader(f'bank = [{junk}]\ndesktop_tasks = ["drag-slider"]') == 2
    assert "not both" in capsys.readouterr().err
    assert reader("window = [16, 16]") == 2
    assert "at least 32 points" in capsys.readouterr().err
    assert reader("window_px = [64, 32]") == 2
    assert "window_px needs window" in capsys.readouterr().err
    assert reader('desktop_tasks = ["drag-sliders"]') == 2
    assert "desktop_tasks: unknown task 'drag-sliders'" in capsys.readouterr().err
    assert reader('desktop_tasks = ["drag-slider"]\ndesktop_share = 0.0') == 2
    assert "would go unused" in capsys.readouterr().err
    assert reader('desktop_looks = "plaid"') == 2
    assert "desktop_looks 'plaid': one of classic, mixed" in capsys.readouterr().err
    assert reader('desktop_looks = ["classic", 3]') == 2
    assert "desktop_looks 3: one of classic, mixed" in capsys.readouterr().err
    assert reader('desktop_looks = []') == 2
    assert "desktop_looks []" in capsys.readouterr().err
    assert reader(f'bank = [{junk}]\ndesktop_looks = "mixed"') == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


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


def test_mixed_desktop_scenes_come_in_many_looks_classic_ones_in_one(monkeypatch):
    from agent.desktops.virtual import reading

    made = []
    real = reading.VirtualDesktop

    def spy(*a, **kw):
        made.append(real(*a, **kw))
        return made[-1]

    def looks_of(looks) -> set:
        rng, out = random.Random(3), set()
        for _ in range(12):
            pixels, _, words = reading.scene(rng, looks=looks)
            assert pixels.ndim == 3 and words
            out.add((made[-1].look.theme.name, made[-1].look.face, made[-1].look.size))
        return out

    monkeypatch.setattr(reading, "VirtualDesktop", spy)
    classic, mixed, both = looks_of("classic"), looks_of("mixed"), looks_of(["classic", "mixed"])
    assert len(classic) == 1 and len(mixed) >= 4
    assert len(both) >= 3 and both & classic  # some scenes classic, the others drawn
    with pytest.raises(ValueError, match="looks 'plaid'"):
        reading.scene(random.Random(0), looks="plaid")


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


def test_a_window_on_a_dark_ground_is_read_as_its_inverse():
    """Light text on a dark theme reaches the reader as dark text on light: the reader's output for
    a dark-ground window is its output for the inverted window; a light-ground window is read as it is."""
    from policies.pixel.vision import Reader, light_ground, stem_input

    torch.manual_seed(0)
    reader = Reader("reader-relu", 8, 48, 64, width_px=96).eval()
    rng = np.random.default_rng(0)
    dark = np.full((2, 48, 96, 3), 45, np.uint8)
    dark[:, 20:28, 10:60] = rng.integers(180, 256, (2, 8, 50, 3))  # strokes: well under half the window
    light = 255 - dark
    with torch.no_grad():
        assert torch.allclose(reader(torch.from_numpy(dark)), reader(torch.from_numpy(light)), atol=1e-5)
        x = stem_input(torch.from_numpy(light), torch.float32)
        assert torch.equal(light_ground(torch.from_numpy(light), x), x)
        mixed = torch.from_numpy(np.concatenate([dark[:1], light[:1]]))
        y = light_ground(mixed, stem_input(mixed, torch.float32))
        assert torch.allclose(y[0], x[0]) and torch.allclose(y[1], x[0])


def test_the_dark_ground_grey_is_opencvs_on_every_device():
    """A window's ground is judged on OpenCV's integer grey: OpenCV's own conversion on a CPU, the
    same integers in torch elsewhere (every one of the 2**24 colours agrees)."""
    import cv2

    from policies.pixel import vision
    from policies.pixel.vision import dark_ground, grey_of

    colours = torch.arange(1 << 24, dtype=torch.int32)
    bgr = torch.stack([colours >> 16, (colours >> 8) & 255, colours & 255], -1).to(torch.uint8).view(4096, 4096, 3)
    want = torch.from_numpy(cv2.cvtColor(bgr.numpy(), cv2.COLOR_BGR2GRAY))
    assert torch.equal(grey_of(bgr), want) and torch.equal(grey_of(bgr, fast=False), want)
    windows = torch.full((3, 4, 6, 3), 200, dtype=torch.uint8)
    windows[0] = 30
    windows[1, :2] = 30  # half dark: not more than half
    windows[2, :3] = 30
    assert dark_ground(windows).tolist() == [True, False, True]
    # OpenCV counts on a CPU; torch's count of the same greys is the reference
    rng = np.random.default_rng(0)
    many = torch.from_numpy(rng.integers(0, 256, (64, 1, 1, 3)) + rng.integers(-40, 40, (64, 8, 12, 3))).clamp(0, 255)
    many = many.to(torch.uint8)
    want = (grey_of(many, fast=False).flatten(1) < vision.DARK_GROUND).sum(1) * 2 > 8 * 12
    assert torch.equal(dark_ground(many), want) and 0 < int(want.sum()) < 64
    assert dark_ground(many[:0]).shape == (0,)


def test_the_bundled_reader_reads_a_dark_theme_better_inverted(monkeypatch):
    """On adwaita-dark desktop windows the bundled pixel-small's reader names more words with dark
    grounds inverted than without (the measure behind :data:`~policies.pixel.vision.DARK_GROUND`)."""
    from agent.desktops.virtual import VirtualDesktop
    from agent.desktops.virtual.reading import paint_scene, scene_windows
    from policies.pixel import load_model, vision

    model = load_model("pixel-small", "cpu")
    g = model.config.grounding
    win = (*g["window"], *g["window_px"])
    rng, tiles, words = random.Random(5), [], []
    for i, task in enumerate(("click-checkboxes", "enter-text", "type-field", "click-menu", "click-button", "drag-slider")):
        desk = VirtualDesktop(task, seed=300 + i, size=(1280, 720), theme="adwaita-dark", font="dejavu-serif")
        desk.observe()
        pixels, scene_words = paint_scene(desk)
        desk.close()
        for t, w in scene_windows(rng, pixels, 1.0, scene_words, 40, model.config.tile_pt, win):
            tiles.append(t)
            words.append(w)
    x = torch.from_numpy(np.stack(tiles))
    reader = model.grounding.reader.eval()
    inverted = R.word_accuracy(reader, x, words)
    monkeypatch.setattr(vision, "light_ground", lambda windows, y: y)
    plain = R.word_accuracy(reader, x, words)
    assert len(words) >= 200 and inverted > plain + 0.02, (inverted, plain)


def test_a_policy_checkpoints_reader_is_a_reader_to_go_on_from(tmp_path):
    """``init`` (and ``load_reader``) take a checkpoint with a reader grounding, a bundled name or a
    folder: its reader is the one inside it, so a bundled policy's reader can learn more words."""
    from safetensors.torch import load_file

    from policies.checkpoints import bundled_checkpoint

    cfg, model = R.load_reader("pixel-small")
    inside = load_file(str(bundled_checkpoint("pixel-small") / "model.safetensors"))
    assert all(torch.equal(v, inside[f"grounding.reader.{k}"].float()) for k, v in model.state_dict().items())
    assert (cfg["window"], cfg["window_px"], cfg["stem"]) == ([128, 64], [96, 48], "reader-relu")
    summary = R.pretrain_reader(tmp_path / "more", steps=2, batch_size=4, val_tiles=8, init="pixel-small",
                                window=(128, 64, 96, 48), log=lambda s: None)
    assert summary["stem"] == "reader-relu" and summary["stem_channels"] == 16 and summary["head_width"] == 256
    with pytest.raises(R.ReaderError, match="not a reader folder"):
        R.load_reader(tmp_path)  # neither a reader folder nor a checkpoint
