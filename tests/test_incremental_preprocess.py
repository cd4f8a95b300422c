"""Preprocessing only what changed: a frame that carries its ``changed`` rectangles (the
incremental capture's :class:`capture.incremental.ChangedFrame`) gives the model the same inputs,
bit for bit, as preprocessing the whole frame; and the live benchmark's change-click stand-in
decides the same from changed regions as from whole frames."""

from __future__ import annotations

import numpy as np
import pytest

from capture import Frame, Screen
from capture.incremental import ChangedFrame
from policies.pixel import PixelConfig, Preprocessor
from tests.test_pixel_model import _frame
from tests.test_pixel_windows import GEOMETRIES, SMALL

FIELDS = ("global_view", "glimpses", "boxes", "mask", "screen", "read_glimpses")


def _config(tile: int | None, window) -> PixelConfig:
    if tile is None:
        return PixelConfig.for_size("pixel-tiny")  # no read windows
    return PixelConfig(**{**SMALL, "tile_pt": tile}, grounding={"window": list(window), "window_px": [96, 48]},
                       glimpse_px=48 * tile // 64)


def _paint(rng, px: np.ndarray) -> tuple[int, int, int, int]:
    h, w = px.shape[:2]
    rw, rh = int(rng.integers(1, min(w, 300))), int(rng.integers(1, min(h, 200)))
    x, y = int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1))
    if rng.random() < 0.5:  # noise (edges everywhere: tiles enter and leave the top K) or a flat fill
        px[y:y + rh, x:x + rw] = rng.integers(0, 256, (rh, rw, 4), dtype=np.uint8)
    else:
        px[y:y + rh, x:x + rw] = rng.integers(0, 256, 4, dtype=np.uint8)
    return x, y, rw, rh


@pytest.mark.parametrize("tile,window,w,h,scale", [(None, None, 640, 480, 1.0), (None, None, 1920, 1080, 1.0),
                                                   *[g[:5] for g in GEOMETRIES]])
def test_changed_regions_give_the_inputs_of_a_full_pass(tile, window, w, h, scale):
    cfg = _config(tile, window)
    rng = np.random.default_rng(w + h)
    px = _frame(w, h, scale).pixels.copy()
    inc, full = Preprocessor(cfg), Preprocessor(cfg)
    for index in range(12):
        rects = tuple(_paint(rng, px) for _ in range(int(rng.integers(0, 4)))) if index else None
        frame = ChangedFrame(px.copy(), 0.0, index, Screen(w, h, scale=scale), rects)
        a, b = inc(frame), full.pixels(frame.pixels, scale)
        for name in FIELDS:
            assert np.array_equal(getattr(a, name), getattr(b, name)), (index, name)
    assert inc._kept, "the tracked preprocessor keeps its tiles' work between frames"
    # whole cells are exact pixel blocks at these sizes: only the changed cells are averaged again
    assert (inc.cell_px > 0) == ((w, h, scale) in {(640, 480, 1.0), (1920, 1080, 1.0),
                                                   (5120, 2880, 2.0)})


def test_a_frame_that_does_not_follow_is_done_in_full():
    """A skipped grab (another consumer took a frame in between) or a frame of another source:
    its ``changed`` is relative to a frame this preprocessor never saw, so it is not trusted."""
    cfg = _config(64, (128, 64))
    w, h = 1920, 1080
    px = _frame(w, h).pixels.copy()
    inc, full = Preprocessor(cfg), Preprocessor(cfg)
    inc(ChangedFrame(px.copy(), 0.0, 0, Screen(w, h), None))
    px[100:400, 200:900] = 17  # changed in a grab this preprocessor did not see ...
    lying = ChangedFrame(px.copy(), 0.0, 2, Screen(w, h), ())  # ... so index 2 says "nothing" of it
    a, b = inc(lying), full.pixels(px, 1.0)
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    plain = Frame(px.copy(), 0.0, 3, Screen(w, h))  # a plain frame: full, and nothing kept for it
    fresh = Preprocessor(cfg)
    fresh(plain)
    assert not fresh._kept and fresh._last is None
    # an untracked frame between two tracked ones (its work overwrites the buffers) changes nothing
    inc.pixels(_frame(w, h, seed=7).pixels, 1.0)
    a, b = inc(ChangedFrame(px.copy(), 0.0, 3, Screen(w, h), ())), full.pixels(px, 1.0)
    for name in FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_another_sources_next_index_does_not_follow():
    """Two sources whose frames carry consecutive indices: a frame of the other source is done in
    full, whatever its ``changed`` says."""
    cfg = _config(64, (128, 64))
    w, h = 1920, 1080
    a_px, b_px = _frame(w, h, seed=1).pixels.copy(), _frame(w, h, seed=2).pixels.copy()
    inc, full = Preprocessor(cfg), Preprocessor(cfg)
    inc(ChangedFrame(a_px, 0.0, 5, Screen(w, h), None, source=1))
    b = ChangedFrame(b_px, 0.0, 6, Screen(w, h), (), source=2)  # "nothing changed" since b's own frame 5
    assert not b.follows((1, 5)) and b.follows((2, 5))
    got, want = inc(b), full.pixels(b_px, 1.0)
    for name in FIELDS:
        assert np.array_equal(getattr(got, name), getattr(want, name)), name


def test_change_click_decides_the_same_from_changed_regions():
    from agent.bench.live import ChangeClickPolicy
    from policies.base import Observation

    class Idle:
        name = "idle"

        def reset(self, instruction):
            pass

        def act(self, observation):
            return []

    w, h = 1280, 720
    rng = np.random.default_rng(1)
    base = _frame(w, h).pixels.copy()
    tracked, plain = ChangeClickPolicy(Idle()), ChangeClickPolicy(Idle())
    tracked.reset("")
    plain.reset("")
    px = base.copy()
    clicks = []
    for index in range(30):
        rects = None
        if index and index % 5 == 0:
            px[:] = base  # back to the reference
            rects = ((0, 0, w, h),)
        elif index:
            rects = (_paint(rng, px),)
        a = tracked.act(Observation(ChangedFrame(px.copy(), 0.0, index, Screen(w, h), rects)))
        b = plain.act(Observation(Frame(px.copy(), 0.0, index, Screen(w, h))))
        assert a == b, index
        clicks += a
    assert len(clicks) >= 10  # it clicked on most changes


def test_a_still_frame_gives_the_last_actions_without_a_pass(monkeypatch):
    """PixelPolicy on a frame that says nothing changed, with the same instruction, cursor and
    history: the previous step's actions, and no forward pass; anything else runs the model."""
    import torch

    from policies.actions import Click
    from policies.base import Observation
    from policies.pixel import PixelModel, PixelPolicy

    torch.manual_seed(0)
    policy = PixelPolicy(PixelModel(PixelConfig.for_size("pixel-tiny")).eval(), runtime="torch")
    passes = []
    run = policy.run
    monkeypatch.setattr(policy, "run", lambda arrays: passes.append(1) or run(arrays))
    w, h = 640, 480
    px = _frame(w, h).pixels.copy()

    def act(index, changed, cursor=(0.5, 0.5), history=()):
        frame = ChangedFrame(px.copy(), 0.0, index, Screen(w, h), changed)
        return policy.act(Observation(frame, "Click OK", cursor, history))

    first = act(0, None)
    assert act(1, ()) == first and act(2, ()) == first and len(passes) == 1
    act(3, (), cursor=(0.1, 0.1))  # the cursor moved: a pass
    act(4, (), cursor=(0.1, 0.1), history=(Click(0.1, 0.1),))  # an action was applied: a pass
    assert len(passes) == 3
    px[10:60, 10:200] = 255
    act(5, ((10, 10, 190, 50),), cursor=(0.1, 0.1), history=(Click(0.1, 0.1),))  # the screen changed
    act(7, (), cursor=(0.1, 0.1), history=(Click(0.1, 0.1),))  # a frame skipped: not trusted
    assert len(passes) == 5
    policy.reset("Click Cancel")
    act(8, (), cursor=(0.1, 0.1), history=(Click(0.1, 0.1),))
    assert len(passes) == 6


@pytest.mark.parametrize("task", ["click-button", "enter-text", "drag-slider", "click-menu", "wait-spinner",
                                  "dismiss-popup", "scroll-list", "fill-form"])
def test_virtual_desktop_frames_say_what_changed(task):
    """Between two frames of the virtual desktop, every pixel outside ``changed`` is the same (the
    expert working the task, pointer moves included); the first frame says None."""
    from agent.desktops.virtual import VirtualDesktop

    d = VirtualDesktop(task, seed=3, size=(800, 600), theme="mixed", human_like=True)
    prev = d.observe()
    assert prev.changed is None and prev.follows(None) is False
    checked = 0
    for _ in range(60):
        for a in d.oracle.expert_actions():
            d.apply(a)
        f = d.observe()
        assert f.follows((prev.source, prev.index))
        outside = np.ones(f.pixels.shape[:2], bool)
        for x, y, w, h in f.changed or ():
            outside[y:y + h, x:x + w] = False
        if f.changed is not None:
            assert np.array_equal(f.pixels[outside], prev.pixels[outside]), (task, f.index)
            checked += 1
        prev = f
        if d.finished:
            break
    assert checked >= 3
