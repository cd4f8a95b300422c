"""``dw run`` ends when the policy says ``done`` (input released, exit 0); ``--keep-running`` goes
on past it; ``--max-seconds`` counts from the command's start; ``--record`` stores ``cursor0``."""

from __future__ import annotations

import json
import time

import pytest

from agent.cli.main import main
from agent.loop import Agent
from agent.sessions.format import open_session
from policies.actions import Click, Done, MouseDown, Move
from tests.fakes import FakeDesktop


class Steps:
    """Plays a list of action batches, one per step, then nothing."""

    name = "steps"

    def __init__(self, steps, load_s: float = 0.0):
        self.steps = list(steps)
        self.i = 0
        time.sleep(load_s)  # as a policy that takes a while to load

    def reset(self, instruction):
        self.i = 0

    def act(self, obs):
        batch = self.steps[self.i] if self.i < len(self.steps) else []
        self.i += 1
        return list(batch)


class ClosingFake(FakeDesktop):
    closed = 0

    def close(self):
        type(self).closed += 1


def test_done_ends_the_loop_by_default_and_not_when_asked_to_keep_running(tmp_path):
    policy = [[Click(0.2, 0.2)], [Done()], [Click(0.3, 0.3)]]
    res = Agent(FakeDesktop(), Steps(policy), max_steps=10).run()
    assert res.reason == "done" and res.steps == 2 and res.done_ignored == 0

    from agent.sessions.format import SessionRecorder

    d = FakeDesktop()
    rec = SessionRecorder(tmp_path / "s", d.screen, d.fps)
    res = Agent(d, Steps(policy), recorder=rec, max_steps=5, stop_on_done=False).run()
    assert res.reason == "max-steps" and res.steps == 5 and res.done_ignored == 1
    assert [a.type for a in d.applied] == ["click", "click"]  # the click after done ran
    s = open_session(tmp_path / "s")
    assert [e.action.type for e in s.actions()] == ["click", "click"]  # done is not an executed action
    ignored = [e for e in s.events if e.raw.get("event") == "done_ignored"]
    assert len(ignored) == 1 and ignored[0].action.type == "done"


@pytest.fixture
def fake_run(monkeypatch):
    """``dw run`` on a :class:`ClosingFake` with a :class:`Steps` policy (what ``box`` holds)."""
    import agent.cli.commands.run as run_cmd
    import policies

    box = {"steps": [], "load_s": 0.0}
    ClosingFake.closed = 0
    monkeypatch.setattr(run_cmd, "make_desktop", lambda args: ClosingFake())
    monkeypatch.setattr(policies, "load_policy", lambda spec, seed=0: Steps(box["steps"], box["load_s"]))
    return box


def test_dw_run_exits_0_on_done_and_closes_the_desktop(fake_run, capsys):
    fake_run["steps"] = [[Move(0.4, 0.4)], [Click(0.5, 0.5)], [Done()], [Click(0.9, 0.9)]]
    assert main(["run", "--policy", "stub", "--json", "--max-steps", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reason"] == "done" and out["steps"] == 3 and out["actions"] == 3
    assert ClosingFake.closed == 1


def test_dw_run_keep_running_ignores_done(fake_run, capsys):
    fake_run["steps"] = [[Done()], [Click(0.5, 0.5)], [Done()]]
    assert main(["run", "--policy", "stub", "--max-steps", "6", "--keep-running"]) == 0
    err = capsys.readouterr().err
    assert "stopped: max-steps; 6 steps" in err and "2 done ignored (--keep-running)" in err


def test_max_seconds_counts_from_the_command_start(fake_run, capsys):
    fake_run["load_s"] = 0.4  # loading alone spends the budget
    assert main(["run", "--policy", "stub", "--json", "--max-seconds", "0.3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reason"] == "max-seconds" and out["steps"] == 0


def test_record_writes_cursor0(fake_run, tmp_path, capsys):
    fake_run["steps"] = [[Click(0.25, 0.75)], [Done()]]
    assert main(["run", "--policy", "stub", "--json", "--record", str(tmp_path / "s")]) == 0
    meta = json.loads((tmp_path / "s" / "session.json").read_text())
    assert meta["cursor0"] == [0.5, 0.5]  # FakeDesktop's pointer before any action
    assert open_session(tmp_path / "s").meta["cursor0"] == [0.5, 0.5]


@pytest.mark.xvfb
def test_live_run_ends_on_done_with_the_button_released(xvfb, monkeypatch, capsys):
    """The real live desktop: a button pressed, then ``done``: exit 0, reason done, nothing held."""
    from pyautogui import _pyautogui_x11 as px
    from Xlib.display import Display

    import policies
    from tests.test_input_release import held

    if px._display.get_display_name() != xvfb.display:
        px._display = Display(xvfb.display)
    monkeypatch.setattr(policies, "load_policy",
                        lambda spec, seed=0: Steps([[MouseDown(0.4, 0.4)], [Move(0.5, 0.5)], [Done()], [Click(0.1, 0.1)]]))
    rc = main(["run", "--policy", "stub", "--json", "--stop-hotkey", "", "--max-seconds", "30"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["reason"] == "done" and out["steps"] == 3, out
    assert held(xvfb) == ([], [])


class DamageFake(FakeDesktop):
    """Frames that say what changed since the last one, as the live X11 desktop's do: the square
    moves where a click lands, so a click at the same place again draws nothing."""

    def __init__(self):
        super().__init__()
        self._last = None

    def observe(self):
        from capture.incremental import ChangedFrame

        f = super().observe()
        moved = self._last is None or not (f.pixels == self._last).all()
        self._last = f.pixels
        changed = None if f.index == 0 else (((0, 0, f.width, f.height),) if moved else ())
        return ChangedFrame(f.pixels, f.t, f.index, f.screen, changed)


def test_the_same_action_with_no_effect_stops_a_stuck_run(tmp_path):
    from agent.sessions.format import SessionRecorder

    # the first click moves the square; every later one draws nothing (a model's repeats jitter a little)
    stuck = [[Click(0.2, 0.2)], [Click(0.203, 0.2)], [Click(0.2, 0.2015)]] * 7  # the same pixels here
    d = DamageFake()
    rec = SessionRecorder(tmp_path / "s", d.screen, d.fps)
    res = Agent(d, Steps(stuck), recorder=rec, max_steps=30, max_no_effect=4).run()
    assert res.reason == "no-effect" and len(d.applied) == 5, res  # the first click drew; 4 more did not
    event = next(e for e in open_session(tmp_path / "s").events if e.raw.get("event") == "no_effect")
    assert event.raw["repeats"] == 4 and event.raw["actions"] == [Click(0.203, 0.2).to_json()]
    # clicks that keep drawing, or that change, are not stuck; nor is a desktop whose frames say nothing
    moving = [[Click(0.2, 0.2)], [Click(0.21, 0.2)]] * 10  # 0.01 apart: another place
    assert Agent(DamageFake(), Steps(moving), max_steps=20, max_no_effect=4).run().reason == "max-steps"
    assert Agent(FakeDesktop(), Steps(stuck), max_steps=20, max_no_effect=4).run().reason == "max-steps"
    with pytest.raises(ValueError, match="max_no_effect"):
        Agent(FakeDesktop(), Steps(stuck), max_no_effect=1)


def test_dw_run_no_effect_option(fake_run, capsys):
    assert main(["run", "--policy", "stub", "--no-effect", "1", "--max-steps", "3"]) == 2
    assert "--no-effect must be 0 (never) or at least 2" in capsys.readouterr().err
    assert main(["run", "--policy", "stub", "--no-effect", "0", "--max-steps", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reason"] == "max-steps"
