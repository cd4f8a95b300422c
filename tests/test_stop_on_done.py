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
