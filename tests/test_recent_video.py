"""Recent video (``PixelConfig.recent``): the step also sees past global views, picked the same
way in training and in the policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capture import Frame, Screen
from policies.actions import Click
from policies.base import Observation
from policies.pixel import PixelConfig, PixelModel, PixelPolicy
from policies.pixel.processing import RecentViews
from policies.pixel.training import grow

LAGS = [0.5, 2.0]


def _view(v: int) -> np.ndarray:
    return np.full((40, 64, 3), v, np.uint8)


def _frame(t: float, index: int, box_at: int | None = None) -> Frame:
    px = np.full((480, 640, 4), 90, np.uint8)
    px[100:140, 200:320] = 30
    if box_at is not None:  # something that appeared: a pop-up
        px[box_at:box_at + 120, 300:560] = 230
    return Frame(px, t, index, Screen(640, 480))


def test_each_lag_sees_the_newest_view_old_enough():
    r = RecentViews(LAGS)
    cur = _view(255)
    assert (r.views(0.0, cur) == 255).all() and r.key(0.0) == (None, None)  # nothing kept: the current view
    for i, t in enumerate((0.0, 0.3, 0.6, 1.0, 2.1, 2.4)):
        r.add(t, _view(i))
    v = r.views(2.5, cur)
    assert v.shape == (2, 40, 64, 3)
    # 0.5 s back: the newest seen at 2.0 or before (t=1.0); 2 s back: at 0.5 or before (t=0.3; the
    # view of t=0.0 was dropped once t=0.3 was old enough for the longest lag)
    assert (v[0] == 3).all() and (v[1] == 1).all() and r.key(2.5) == (1.0, 0.3)


def test_a_young_episode_sees_its_first_frame_and_old_views_are_dropped():
    r = RecentViews(LAGS)
    r.add(0.0, _view(1))
    r.add(0.2, _view(2))
    assert r.key(0.4) == (0.0, 0.0)  # none 0.5 s old yet: the oldest, the episode's first frame
    for i in range(2, 30):
        r.add(i / 5, _view(3))
    assert [t for t, _ in r.kept][:2] == [3.8, 4.0]  # at 5.8: the newest view 2 s old, and later ones
    r.add(0.1, _view(9))  # another episode's clock starts afresh
    assert [t for t, _ in r.kept] == [0.1]


def test_config_checks_its_lags():
    assert PixelConfig.for_size("pixel-tiny").recent == []
    with pytest.raises(ValueError, match="increasing lags"):
        PixelConfig.for_size("pixel-tiny", recent=[2.0, 0.5])
    with pytest.raises(ValueError, match="increasing lags"):
        PixelConfig.for_size("pixel-tiny", recent=[0.0])


def _models():
    torch.manual_seed(0)
    one = PixelModel(PixelConfig.for_size("pixel-tiny")).eval()
    video = grow(one, PixelConfig.for_size("pixel-tiny", recent=LAGS)).eval()
    return one, video


def test_a_video_model_starts_as_the_one_frame_model_and_then_sees_change():
    one, video = _models()
    assert not video.recent_proj.weight.any()
    p1, pv = PixelPolicy(one, runtime="torch", dtype="float32"), PixelPolicy(video, runtime="torch", dtype="float32")
    obs = Observation(_frame(3.0, 5), "Click OK.", (0.5, 0.5), ())
    p1.reset(obs.instruction)
    pv.reset(obs.instruction)
    pv.recent.add(0.0, pv.arrays(Observation(_frame(0.0, 0, box_at=200), "Click OK.", None, ()))["global_view"][0])
    a = pv.arrays(obs)
    assert a["recent"].shape == (1, 2, 40, 64, 3) and (a["recent"][0, 0] != a["global_view"][0]).any()
    with torch.inference_mode():
        r1 = one(**p1.inputs(obs), text_cache=p1._cache)
        rv = video(**{k: torch.from_numpy(v) for k, v in a.items()}, text_cache=pv._cache)
        assert torch.allclose(r1.pointer_logits, rv.pointer_logits, atol=1e-5)  # zero start: no effect
        torch.nn.init.normal_(video.recent_proj.weight, std=0.05)
        changed = video(**{k: torch.from_numpy(v) for k, v in a.items()}, text_cache=pv._cache)
        same = {**a, "recent": np.repeat(a["global_view"][:, None], 2, 1)}
        still = video(**{k: torch.from_numpy(v) for k, v in same.items()}, text_cache=pv._cache)
    assert not torch.allclose(changed.pointer_logits, rv.pointer_logits, atol=1e-3)
    assert torch.allclose(still.pointer_logits, rv.pointer_logits, atol=1e-5)  # no change: as one frame
    with pytest.raises(ValueError, match="give recent"):
        video(**p1.inputs(obs), text_cache=p1._cache)


def test_the_policy_keeps_what_it_saw_and_onnx_agrees_with_torch():
    _, video = _models()
    torch.nn.init.normal_(video.recent_proj.weight, std=0.05)
    po = PixelPolicy(video, runtime="onnx", dtype="float32")
    pt = PixelPolicy(video, runtime="torch", dtype="float32")
    frames = [_frame(0.0, 0), _frame(0.4, 1, box_at=200), _frame(1.0, 2, box_at=200), _frame(2.5, 3)]
    for p in (po, pt):
        p.reset("Close the pop-up.")
    for f in frames:
        obs = Observation(f, "Close the pop-up.", (0.5, 0.5), (Click(0.1, 0.1),))
        a = po.arrays(obs)
        o = po._step(a)
        with torch.inference_mode():
            r = video(**pt.inputs(obs), text_cache=pt._cache)
        assert torch.allclose(o.pointer_logits, r.pointer_logits, atol=1e-4)
        assert [x.type for x in po.act(obs)] == [x.type for x in pt.act(obs)]
    assert [t for t, _ in po.recent.kept] == [0.4, 1.0, 2.5]  # 0.0 is beyond the 2 s the lags reach
    po.reset("Close the pop-up.")
    assert po.recent.kept == []


def test_training_samples_see_what_the_policy_would(tmp_path):
    """A recorded session's samples carry the past views a policy running it would have seen."""
    from agent.sessions.demos import record_demo
    from agent.sessions.format import open_session
    from agent.training.dataset import session_samples

    r = record_demo({"task": "dismiss-popup", "seed": 3, "size": [640, 480], "scale": 1.0, "human_like": False},
                    str(tmp_path))
    cfg = PixelConfig.for_size("pixel-tiny", recent=LAGS)
    data = session_samples(tmp_path / r["path"].split("/")[-1], cfg)
    s = open_session(tmp_path / r["path"].split("/")[-1])
    acts = s.actions(("policy",))
    assert data["recent"].shape == (len(acts), 2, 40, 64, 3)
    pol = PixelPolicy(PixelModel(cfg), runtime="torch", dtype="float32")
    pol.reset(s.instruction)
    want = {e.frame for e in acts}
    got = []
    for f in s.frames():
        if f.index in want:
            a = pol.arrays(Observation(f, s.instruction, None, ()))
            got.append(a["recent"][0])
            pol.recent.add(f.t, a["global_view"][0])
    assert np.array_equal(np.stack(got), data["recent"])
    assert (data["recent"][-1] != data["global_view"][-1][None]).any()  # the pop-up came and went

    from agent.training.dataset import _cache_key  # samples with past views are cached apart

    one = PixelConfig.for_size("pixel-tiny")
    assert _cache_key(tmp_path, one) != _cache_key(tmp_path, cfg)


def test_the_fleet_refuses_a_video_model():
    from agent.fleet import BatchedPixelStep

    _, video = _models()
    with pytest.raises(ValueError, match="one-frame models"):
        BatchedPixelStep(PixelPolicy(video, runtime="torch", dtype="float32"))
