"""``dw replay`` of a session with no desktop to rebuild (a live screen): the policy sees the cursor
as training does (``cursor0``, then each recorded pointer action's point), and a pointer action
agrees within a tolerance in logical points."""

from __future__ import annotations

import json

import pytest

from agent.cli.main import main
from agent.loop import Agent
from agent.sessions.format import SessionRecorder, open_session
from agent.sessions.replay import replay_session
from capture import Screen
from policies.actions import Click, Drag, Key, Move, parse_action
from tests.fakes import FakeDesktop

PLAN = [[Click(0.25, 0.5)], [], [Key("enter")], [Drag(0.1, 0.1, 0.75, 0.25)], [], [Move(0.5, 0.125)], [Click(0.5, 0.5)]]


class Plan:
    name = "plan"

    def reset(self, instruction):
        self.i = 0

    def act(self, obs):
        batch = PLAN[self.i] if self.i < len(PLAN) else []
        self.i += 1
        return list(batch)


def record(path, scale=1.0, cursor0=(0.5, 0.5)):
    d = FakeDesktop(320, 240)
    d.screen = Screen(320, 240, 0, 0, scale)
    extra = {"cursor0": list(cursor0)} if cursor0 is not None else None
    rec = SessionRecorder(path, d.screen, d.fps, instruction="do it", policy="plan", desktop=d.info(), extra=extra)
    Agent(d, Plan(), recorder=rec, max_steps=len(PLAN) + 1).run()
    return open_session(path)


class Shifted:
    """Answers each frame with the action recorded there, its points moved ``dx`` physical pixels
    right; notes the cursor it was given."""

    name = "shifted"

    def __init__(self, session, dx: float):
        self.by_frame = {e.frame: e.action for e in session.actions()}
        self.w = session.screen.width
        self.dx = dx
        self.cursors = []

    def reset(self, instruction):
        pass

    def act(self, obs):
        self.cursors.append(obs.cursor)
        a = self.by_frame.get(obs.frame.index)
        if a is None:
            return []
        j = a.to_json()
        for k in ("x", "x2"):
            if k in j:
                j[k] = min(1.0, j[k] + self.dx / self.w)
        return [parse_action(j)]


def test_the_policy_gets_cursor0_then_each_pointer_actions_point(tmp_path):
    s = record(tmp_path / "s")
    pol = Shifted(s, 0)
    replay_session(s, pol)
    frames = {e.frame: e.action for e in s.actions()}
    want, cur = [], (0.5, 0.5)
    for i in range(len(pol.cursors)):
        want.append(cur)
        a = frames.get(i)
        if isinstance(a, Drag):
            cur = (a.x2, a.y2)
        elif a is not None and a.point is not None:
            cur = a.point
    assert pol.cursors == want
    assert pol.cursors[0] == (0.5, 0.5) and (0.75, 0.25) in pol.cursors and (0.5, 0.125) in pol.cursors


def test_without_cursor0_there_is_no_cursor_until_the_first_pointer_action(tmp_path):
    s = record(tmp_path / "s", cursor0=None)
    pol = Shifted(s, 0)
    replay_session(s, pol)
    first = min(e.frame for e in s.actions())
    assert pol.cursors[: first + 1] == [None] * (first + 1)
    assert pol.cursors[first + 1] == (0.25, 0.5)


@pytest.mark.parametrize(("scale", "dx", "agree"), [(1.0, 0, True), (1.0, 6, True), (1.0, 12, False),
                                                    (2.0, 12, True), (2.0, 20, False)])
def test_pointer_actions_agree_within_the_tolerance_in_points(tmp_path, scale, dx, agree):
    s = record(tmp_path / "s", scale=scale)
    r = replay_session(s, Shifted(s, dx))
    n = r["recorded_actions"]
    assert r["compared_actions"] == n  # a policy's own moves are all compared
    pointer = sum(1 for e in s.actions() if e.action.point is not None)
    assert r["tolerance_pt"] == 8.0 and r["type_accuracy"] == 1.0
    assert r["agreement"] == pytest.approx(1.0 if agree else (n - pointer) / n, abs=1e-6)
    assert r["exact"] == pytest.approx(1.0 if dx == 0 else (n - pointer) / n, abs=1e-6)
    assert r["click_distance_pt"]["max"] == pytest.approx(dx / scale, abs=0.01)
    tight = replay_session(s, Shifted(s, dx), tolerance_pt=dx / scale / 2) if dx else r
    assert tight["agreement"] == pytest.approx((n - pointer) / n if dx else 1.0, abs=1e-6)


def test_dw_replay_shows_the_tolerance(tmp_path, capsys):
    record(tmp_path / "s")
    assert main(["replay", str(tmp_path / "s"), "--policy", "random", "--json", "--tolerance", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tolerance_pt"] == 3.0 and "agreement" in out and "exact" in out
    assert main(["replay", str(tmp_path / "s"), "--policy", "random"]) == 0
    assert "within 8 pt" in " ".join(capsys.readouterr().out.split())
    assert main(["replay", str(tmp_path / "s"), "--tolerance", "-1"]) == 2
    assert "--tolerance" in capsys.readouterr().err


def test_a_persons_moves_on_the_way_are_skipped_as_training_skips_them(tmp_path):
    """Moves a person made on the way to a click (training's moves="intent" drops them) are not
    compared and do not move the cursor; a move that comes to rest (before a key, or at the end) is."""
    from agent.training.dataset import redundant_moves

    d = FakeDesktop(320, 240)
    rec = SessionRecorder(tmp_path / "h", d.screen, d.fps, instruction="do it", policy="human", desktop=d.info(),
                          extra={"cursor0": [0.5, 0.5]})
    plan = {1: Move(0.1, 0.1), 2: Move(0.2, 0.2), 3: Click(0.25, 0.25), 4: Move(0.6, 0.6), 5: Key("enter"),
            6: Move(0.9, 0.9)}
    for i in range(8):
        f = d.observe()
        rec.add_frame(f)
        if i in plan:
            rec.add_event(f.t, "human", plan[i])
    rec.close("finished")
    s = open_session(tmp_path / "h")
    assert redundant_moves(s.actions()) == {0, 1}  # replay's rule is training's
    pol = Shifted(s, 0)
    r = replay_session(s, pol)
    assert r["moves_skipped"] == 2 and r["recorded_actions"] == 6 and r["compared_actions"] == 4
    assert r["agreement"] == 1.0
    assert r["spurious_actions"] == 0  # the skipped moves' frames count neither way
    assert pol.cursors == [(0.5, 0.5)] * 4 + [(0.25, 0.25)] + [(0.6, 0.6)] * 2 + [(0.9, 0.9)]
