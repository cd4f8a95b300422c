"""Read windows (a grounding's ``window``): four per glimpse, each centred on a quarter of its tile
and naming the word centred in it, so a word longer than a tile is still read whole."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch

from agent.cli.util import parse_window
from agent.errors import UserError
from policies.pixel import PixelConfig, PixelModel, Preprocessor
from policies.pixel import reader as R
from policies.pixel.processing import READS, centred_word, crop_padded, window_origins
from policies.pixel.training import TrainError, load_reader_weights
from policies.pixel.words import decode_word
from tests.test_pixel_model import _frame

SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "stem_channels": 8, "max_glimpses": 8, "tile_pt": 32}
WINDOW = (64, 32, 64, 32)  # points, then pixels


def test_the_four_windows_are_centred_on_the_quarters_of_the_tile():
    assert window_origins(32, 64, 32) == [(-24, -8), (-8, -8), (-24, 8), (-8, 8)]
    # at scale 2 the same in pixels: a 64-pixel tile, 128x64-pixel windows
    assert window_origins(64.0, 128, 64) == [(-48, -16), (-16, -16), (-48, 16), (-16, 16)]


def test_crop_padded_is_black_beyond_the_frame():
    px = np.arange(5 * 6 * 4, dtype=np.uint8).reshape(5, 6, 4)
    inside = crop_padded(px, 1, 1, 3, 2)
    assert np.shares_memory(inside, px) and np.array_equal(inside, px[1:3, 1:4])
    out = crop_padded(px, -2, 3, 5, 4)
    assert out.shape == (4, 5, 4)
    assert np.array_equal(out[:2, 2:], px[3:5, 0:3]) and not out[:, :2].any() and not out[2:].any()
    assert not crop_padded(px, 10, 10, 3, 3).any()


def test_a_window_names_the_one_word_centred_in_its_middle_cell():
    # a 64x32 window at (0, 0); its middle cell (16 wide: half a 32-point tile) spans x 24..40, y 8..24
    assert centred_word([("Submit", (10, 10, 54, 22)), ("Cancel", (56, 10, 90, 22))], 0, 0, 64, 32, 16) == "Submit"
    assert centred_word([("Submit", (-4, 10, 60, 22))], 0, 0, 64, 32, 16) == ""  # centred, but cut
    assert centred_word([("Cancel", (44, 10, 70, 22))], 0, 0, 64, 32, 16) == ""  # whole? no: none centred
    assert centred_word([("ab", (26, 10, 31, 22)), ("cd", (33, 10, 38, 22))], 0, 0, 64, 32, 16) is None
    # the middle cell is half-open: a centre on its right edge belongs to the next window
    assert centred_word([("x", (38, 14, 42, 18))], 0, 0, 64, 32, 16) == ""
    assert centred_word([("x", (38, 14, 42, 18))], 16, 0, 64, 32, 16) == "x"


def test_every_word_centred_in_a_tile_is_named_by_exactly_one_of_its_windows():
    rng = random.Random(0)
    tile, (ww, wh) = 32, (64, 32)
    for _ in range(300):
        tx, ty = rng.randrange(0, 200, 32), rng.randrange(0, 200, 32)
        w, h = rng.uniform(3, 48), rng.uniform(6, 15)
        cx, cy = tx + rng.uniform(0, tile), ty + rng.uniform(0, tile)
        word = ("word", (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        named = [centred_word([word], tx + dx, ty + dy, ww, wh, tile / 2)
                 for dx, dy in window_origins(tile, ww, wh)]
        assert named.count("word") == 1 and named.count("") == 3, (word, named)


# (tile, window in points, frame, scale, whether the windows come from one resized region per tile)
GEOMETRIES = [(32, (64, 32), 640, 480, 1.0, False), (32, (64, 32), 1000, 700, 1.25, False),  # windows grow
              (32, (64, 32), 2880, 1800, 2.0, True),
              (64, (128, 64), 1920, 1080, 1.0, True), (64, (128, 64), 1366, 768, 1.0, True),  # pixel-small's
              (64, (128, 64), 2560, 1440, 1.5, True), (64, (128, 64), 5120, 2880, 2.0, True),
              (64, (128, 64), 1500, 1000, 1.1, False)]  # offsets off the resize's cells: one by one


@pytest.mark.parametrize("tile,window,w,h,scale,regions", GEOMETRIES)
def test_the_preprocessor_cuts_each_glimpses_four_windows(tile, window, w, h, scale, regions, monkeypatch):
    """Each window (and each whole tile's glimpse) is its own crop resized, bit for bit, whether it
    was resized alone or cut from its tile's resized region (the regions of a busy frame resized in
    two threads)."""
    from policies.pixel import processing

    cfg = PixelConfig(**{**SMALL, "tile_pt": tile, "max_glimpses": 24},  # enough to split in two
                      grounding={"window": list(window), "window_px": [96, 48]}, glimpse_px=48 * tile // 64)
    assert READS == 4 and cfg.read_px == (48, 96) and cfg.read_window == (window, (96, 48))
    fr = _frame(w, h, scale)
    pre = Preprocessor(cfg)
    split, in_two, threads = [], processing._in_two, cv2.getNumThreads()
    monkeypatch.setattr(processing, "_in_two", lambda *a: (split.append(1), in_two(*a)))
    cv2.setNumThreads(2)
    try:
        v = pre(fr)
    finally:
        cv2.setNumThreads(threads)
    assert (pre.window_geometry[-1] is not None) == regions
    assert v.mask.sum() >= processing.PARALLEL_MIN and bool(split) == regions
    k, g = cfg.max_glimpses, cfg.glimpse_px
    assert v.read_glimpses.shape == (4 * k, 48, 96, 3) and v.mask.sum() > 0
    ww, wh = round(window[0] * scale), round(window[1] * scale)
    for i in np.flatnonzero(v.mask):
        x0, y0, x1, y1 = (v.boxes[i] * [w, h, w, h]).round().astype(int)
        for p, (dx, dy) in enumerate(window_origins(tile * scale, ww, wh)):
            crop = crop_padded(fr.pixels, int(x0) + dx, int(y0) + dy, ww, wh)
            want = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR), (96, 48), interpolation=cv2.INTER_AREA)
            assert np.array_equal(v.read_glimpses[p * k + i], want)
        tile_px = cv2.cvtColor(fr.pixels[y0:y1, x0:x1], cv2.COLOR_BGRA2BGR)
        assert np.array_equal(v.glimpses[i], cv2.resize(tile_px, (g, g), interpolation=cv2.INTER_AREA))
    assert not v.read_glimpses[~np.tile(v.mask, 4)].any()
    assert (pre.glimpse_side > 0) == regions and not v.glimpses[~v.mask].any()


def test_synthetic_windows_name_what_the_rule_names():
    words = ["Submit", "Cancel"]
    tiles, targets, texts = R.batch(random.Random(0), 200, words, R.font_faces(), 32, 48, WINDOW)
    assert tiles.shape == (200, 32, 64, 3) and tiles.dtype == torch.uint8
    named = [t for t in texts if t]
    assert 0.5 < len(named) / len(texts) < 0.95  # mostly a centred word, sometimes none (or a cut one)
    assert all(len(t) <= R.MAX_CHARS for t in named)
    assert [decode_word(t.clamp(min=0).tolist()) for t in targets[:20]] == texts[:20]
    again = R.batch(random.Random(0), 200, words, R.font_faces(), 32, 48, WINDOW)
    assert torch.equal(again[0], tiles) and again[2] == texts


def test_option_columns_stack_one_word_a_row_behind_the_same_indicator():
    """A column of options (radio buttons, check boxes, a list): its words start at one x, a row
    apart, and each row but the list's has an indicator left of its word."""
    from PIL import Image, ImageDraw

    font = R._font(None, 13)
    line = font.getbbox("Hg", anchor="ls")
    marked = 0
    for seed in range(40):
        rng = random.Random(seed)
        img = Image.new("RGB", (200, 200), (255, 255, 255))
        put_at: list[tuple[float, float]] = []
        R._option_rows(rng, ImageDraw.Draw(img), lambda w, x, y, at=put_at: at.append((x, y)) or x + 30,
                       lambda: "Word", font, 100.0, 100.0, line, (255, 255, 255), (0, 0, 0), 1.0)
        assert all(x == 100.0 for x, _ in put_at) and 100.0 not in [y for _, y in put_at]  # the centred row is the caller's
        text_h = line[3] - line[1]
        steps = {round(abs(y - 100.0), 6) for _, y in put_at}
        if steps:  # one pitch of 1.3 to 2.2 text heights: each row one or two pitches from the centred one
            fits = [p for p in (min(steps), min(steps) / 2) if 1.3 * text_h - 1e-6 <= p <= 2.2 * text_h + 1e-6
                    and all(min(abs(d - p), abs(d - 2 * p)) < 1e-4 for d in steps)]
            assert fits, (seed, steps, text_h)
        left_of_text = np.asarray(img)[:, :100]
        rows_with_ink = {int(y) for y in np.nonzero(left_of_text.min(axis=(1, 2)) < 128)[0]}
        assert not rows_with_ink or min(abs(r - 100) for r in rows_with_ink) < 2 * text_h  # the centred row's indicator
        marked += bool(rows_with_ink)
    assert 15 <= marked <= 38  # circles and boxes, and some lists without any


def _window_model(**over) -> PixelModel:
    """A model whose reader grounding reads WINDOW with a 4-channel reader of a 32-wide head."""
    grounding = {"window": list(WINDOW[:2]), "window_px": list(WINDOW[2:]), "reader": {"channels": 4, "head": 32}}
    return PixelModel(PixelConfig(**{**SMALL, **over}, grounding=grounding))


def test_a_window_reader_trains_loads_and_fits_a_window_grounding(tmp_path):
    out = tmp_path / "r"
    summary = R.pretrain_reader(out, channels=4, head_width=32, steps=2, batch_size=4, val_tiles=4, words=["Save"],
                                tile_pt=32, window=WINDOW, log=lambda s: None)
    assert summary["window"] == [64, 32] and summary["window_px"] == [64, 32]
    cfg, rd = R.load_reader(out)
    assert rd(torch.zeros(3, 32, 64, 3, dtype=torch.uint8)).shape == (3, R.MAX_CHARS + 1, R.END + 1)
    m = _window_model()
    load_reader_weights(m, out)
    assert all(torch.equal(m.grounding.reader.state_dict()[k], v) for k, v in rd.state_dict().items())
    with pytest.raises(TrainError, match="does not fit"):  # windows of other pixels: other weights' shapes
        load_reader_weights(PixelModel(PixelConfig(**SMALL, grounding={
            "window": [64, 32], "window_px": [96, 48], "reader": {"channels": 4, "head": 32}})), out)
    # going on from it as a tile reader: the convolutions carry over (lr 0 keeps them), the head starts afresh
    logged = []
    R.pretrain_reader(tmp_path / "t", steps=1, lr=0.0, batch_size=4, val_tiles=4, words=["Save"], tile_pt=32,
                      init=out, log=logged.append)
    cfg_t, tile_reader = R.load_reader(tmp_path / "t")
    assert R._window(cfg_t) is None and any("stem is kept" in line for line in logged)
    assert torch.equal(tile_reader.stem[0].weight, rd.stem[0].weight)
    assert tile_reader.head[0].weight.shape != rd.head[0].weight.shape
    with pytest.raises(TrainError, match="does not fit"):  # a tile reader is no window reader
        load_reader_weights(_window_model(), tmp_path / "t")


def test_a_reader_of_other_tiles_or_windows_is_refused(tmp_path):
    R.pretrain_reader(tmp_path, channels=4, head_width=32, steps=1, batch_size=4, val_tiles=4, words=["Save"],
                      tile_pt=32, window=WINDOW, log=lambda s: None)
    with pytest.raises(TrainError, match="32-point tiles"):
        load_reader_weights(_window_model(tile_pt=64), tmp_path)
    with pytest.raises(TrainError):
        load_reader_weights(PixelModel(PixelConfig(**SMALL, grounding={
            "window": [128, 64], "window_px": [64, 32], "reader": {"channels": 4, "head": 32}})), tmp_path)
    with pytest.raises(TrainError):  # a reader's weights, run with ReLU where it learned GELU
        load_reader_weights(PixelModel(PixelConfig(**SMALL, grounding={
            "window": [64, 32], "reader": {"stem": "reader-relu", "channels": 4, "head": 32}})), tmp_path)


def test_desktop_windows_are_labelled_by_the_rule():
    from agent.desktops.virtual.reading import scene, scene_windows

    rng = random.Random(5)
    pixels, scale, words = scene(rng, held_out=True)
    cut = scene_windows(rng, pixels, scale, words, 40, 32, WINDOW)
    assert len(cut) >= 20
    assert all(t.shape == (32, 64, 3) for t, _ in cut)
    assert sum(bool(w) for _, w in cut) >= len(cut) // 2  # placed around words: most name one
    known = {w for w, _ in words}
    assert all(w in known for _, w in cut if w)


def test_window_flags_are_checked():
    assert parse_window(None, None, 32) is None
    assert parse_window("64x32", None, 32) == (64, 32, 64, 32)
    assert parse_window("64x32", "96x48", 32) == (64, 32, 96, 48)
    with pytest.raises(UserError, match="needs --window"):
        parse_window(None, "64x32", 32)
    with pytest.raises(UserError, match="at least 16 points"):
        parse_window("64x12", None, 32)
    with pytest.raises(UserError, match="without a scale"):
        parse_window("64x32@2", None, 32)


def test_a_forked_process_preprocesses_with_a_pool_of_its_own():
    """The resizing thread of a process that forks is not in the child: the child starts its own
    (without, its first busy frame would wait for that thread forever)."""
    import os
    import signal

    from policies.pixel import processing

    cfg = PixelConfig(**{**SMALL, "tile_pt": 64, "max_glimpses": 24},
                      grounding={"window": [128, 64], "window_px": [96, 48]})
    fr = _frame(1920, 1080, 1.0)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        want = Preprocessor(cfg)(fr).read_glimpses.copy()
        assert processing._pool is not None and processing._pool[0] == os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: a busy frame within 20 s, the same windows
            signal.alarm(20)
            os._exit(0 if np.array_equal(Preprocessor(cfg)(fr).read_glimpses, want) else 3)
        _, status = os.waitpid(pid, 0)
    finally:
        cv2.setNumThreads(threads)
    assert os.waitstatus_to_exitcode(status) == 0
