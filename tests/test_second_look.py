"""PixelPolicy's second look: a pointing step run again with the tile grid centred on its point;
a retried attempt's: the median of four passes with its point at each quarter of a tile."""

from __future__ import annotations

import torch

from policies.actions import Click, Key
from policies.base import Observation
from policies.pixel import PixelPolicy
from policies.pixel.policy import CENTRE, POINTED, RETRY_PHASES
from tests.test_pixel_model import _frame, _tiny


def _policy(second_look: bool) -> PixelPolicy:
    torch.manual_seed(0)
    pol = PixelPolicy(_tiny(), runtime="torch", second_look=second_look)
    pol.reset('Click the "OK" button.')
    return pol


def test_the_point_comes_from_a_grid_centred_on_the_first_point():
    pol = _policy(True)
    frame = _frame(640, 480)
    obs = Observation(frame, pol.instruction, (0.5, 0.5), ())
    assert (pol.cfg.tile_pt, pol.cfg.cell_pt) == (64, 8)
    # 80 points right and 70 down: 16 and 6 points into their 64-point tiles. Shifted by 2 and 3
    # cells of 8 points, the tiles span 48-112 and 40-104: the point is at (or within 2 points of)
    # a tile's centre.
    first = Click(80 / 640, 70 / 480, button="right", count=2)
    out = pol._look_again(obs, first, CENTRE)
    assert list(pol._shifted) == [(2, 3)]
    (a,) = out
    assert isinstance(a, Click) and (a.button, a.count) == ("right", 2)  # only the point may move
    assert 0.0 <= a.x <= 1.0 and 0.0 <= a.y <= 1.0


def test_a_point_already_at_a_tile_centre_and_other_actions_are_left_alone():
    pol = _policy(True)
    obs = Observation(_frame(640, 480), pol.instruction, (0.5, 0.5), ())
    centred = Click(96 / 640, 160 / 480)  # 32 points into its tiles on both axes
    assert pol._look_again(obs, centred, CENTRE) == [centred] and pol._shifted == {}
    assert not isinstance(Key("enter"), POINTED)  # act() looks again only at these


def test_off_by_default_and_on_from_the_environment(monkeypatch):
    monkeypatch.delenv("DW_PIXEL_SECOND_LOOK", raising=False)
    assert PixelPolicy(_tiny(), runtime="torch").second_look is False
    monkeypatch.setenv("DW_PIXEL_SECOND_LOOK", "1")
    assert PixelPolicy(_tiny(), runtime="torch").second_look is True
    # a step with it on acts like any other: at most one valid action
    pol = _policy(True)
    acts = pol.act(Observation(_frame(640, 480), pol.instruction, (0.5, 0.5), ()))
    assert len(acts) <= 1


def test_a_retried_attempt_looks_twice_until_the_next_reset(monkeypatch):
    pol = _policy(False)
    looked = []
    monkeypatch.setattr(pol, "_look_again", lambda obs, first, phases: looked.append((first, phases)) or [first])
    monkeypatch.setattr("policies.pixel.policy.decode", lambda *a: [Click(0.3, 0.4)])  # a pointing step
    obs = lambda: Observation(_frame(640, 480), pol.instruction, (0.5, 0.5), ())  # noqa: E731
    pol.act(obs())
    assert looked == []
    pol.retry(2)  # the workflow's step failed its check once: this attempt looks again
    pol.act(obs())
    assert looked == [(Click(0.3, 0.4), RETRY_PHASES)]
    pol.reset(pol.instruction)  # the next step or a new run: one look again
    pol.act(obs())
    assert len(looked) == 1


def test_a_retry_takes_the_median_of_passes_at_each_quarter_of_a_tile(monkeypatch):
    pol = _policy(False)
    obs = Observation(_frame(640, 480), pol.instruction, (0.5, 0.5), ())
    # each pass answers a point that says which grid it saw: its shift, in cells
    answers = iter([Click(0.1, 0.5), Click(0.3, 0.1), Click(0.2, 0.4), Key("enter")])
    monkeypatch.setattr("policies.pixel.policy.decode", lambda *a: [next(answers)])
    first = Click(80 / 640, 70 / 480)  # 16 and 6 points into their tiles
    (a,) = pol._look_again(obs, first, RETRY_PHASES)
    # the point at 16, 48, 16, 48 points (x) and 16, 48, 48, 16 (y) of its tile: one grid per phase
    assert sorted(pol._shifted) == [(0, 1), (0, 5), (4, 1), (4, 5)]
    # the pass that chose another kind of action has no say; the median of the other three
    assert (a.x, a.y) == (0.2, 0.4)
