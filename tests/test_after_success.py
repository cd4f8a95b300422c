"""Evaluation counts what a policy does after the task is done: an episode goes on for a window
after its first success (the world still rendering and reacting), the policy's actions other than
``wait`` and ``done`` are counted, and ``done`` ends it early."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.cli.main import main
from agent.desktops.virtual.evaluate import AFTER_SUCCESS_S, episode_specs, run_episode, summarise
from agent.loop import Agent
from policies.actions import Click, Done, Move, Wait
from policies.builtin import ScriptedPolicy
from tests.conftest import apps_world
from tests.fakes import FakeDesktop


class Then:
    """The scripted expert until the task succeeds, then ``after`` (a function of the step) in place
    of its wait and done; notes the frames it sees after the success."""

    name = "then"

    def __init__(self, after):
        self.expert = ScriptedPolicy()
        self.after = after
        self.n = 0
        self.frames_after = []

    def reset(self, instruction):
        self.expert.reset(instruction)

    def act(self, obs):
        acts = self.expert.act(obs)
        if acts and isinstance(acts[0], Wait | Done):
            self.n += 1
            self.frames_after.append(obs.frame.pixels)
            return self.after(self.n)
        return acts


def wiggle(n):
    return [Move(0.3 if n % 2 else 0.6, 0.5)]


def test_agent_window_counts_actions_and_outlives_max_steps():
    class Policy:
        name = "p"

        def reset(self, instruction):
            self.n = 0

        def act(self, obs):
            self.n += 1
            return [Click(0.5, 0.5)] if self.n == 1 else [Move(0.2, 0.2), Wait(0.05)]

    d = FakeDesktop(finish_after_clicks=1)  # success (and finished) at the first click
    res = Agent(d, Policy(), max_steps=3, after_success=1.0).run()
    assert res.success and res.success_step == 1 and res.reason == "finished"
    assert res.steps > 3  # max_steps bounds the steps before the success, not the window
    assert res.actions_after_success == res.steps - 1  # one move per step after the click; waits not counted
    assert d.now() - res.success_t >= 1.0
    j = res.to_json()
    assert j["actions_after_success"] == res.actions_after_success and j["success_step"] == 1

    res = Agent(FakeDesktop(finish_after_clicks=1), Policy(), max_steps=3, after_success=0).run()
    assert res.steps == 1 and res.actions_after_success == 0  # 0: the run ends at the success

    res = Agent(FakeDesktop(finish_after_clicks=1), Policy(), max_steps=3).run()
    assert res.steps == 1 and res.actions_after_success is None and "actions_after_success" not in res.to_json()


def test_done_ends_the_window_early():
    r = run_episode({**episode_specs(["click-button"], 1, [(640, 480, 1.0)], after_success=5.0)[0]}, ScriptedPolicy())
    assert r["success"] and r["reason"] == "success"
    assert r["actions_after_success"] == 0 and 0 < r["steps_after_success"] <= 5  # the expert's wait, then done


def test_a_policy_acting_on_after_success_is_counted_and_the_world_keeps_rendering():
    spec = episode_specs(["click-button"], 1, [(640, 480, 1.0)], after_success=AFTER_SUCCESS_S)[0]
    pol = Then(wiggle)
    r = run_episode(spec, pol)
    assert r["success"] and r["reason"] == "success"  # the first success stands
    n = r["actions_after_success"]
    assert n == r["steps_after_success"] and n >= 20  # 5 s of frames (10 fps, plus the moves' travel), a move each
    assert r["virtual_seconds"] >= AFTER_SUCCESS_S
    # the desktop went on reacting: the pointer the moves placed is drawn, so frames alternate
    f = pol.frames_after
    assert not np.array_equal(f[-1], f[-2]) and np.array_equal(f[-1], f[-3])

    s = summarise([r, run_episode({**spec, "seed": spec["seed"] + 1}, ScriptedPolicy())])
    assert s["mean_actions_after_success"] == pytest.approx(n / 2, abs=0.001)
    assert s["after_success_episodes"] == 2 and s["episodes_acting_after_success"] == 1
    assert s["tasks"]["click-button"]["640x480@1"]["mean_actions_after_success"] == pytest.approx(n / 2, abs=0.001)


def test_without_a_window_episodes_end_as_before():
    spec = episode_specs(["click-button"], 1, [(640, 480, 1.0)])[0]
    assert "after_success" not in spec
    r = run_episode(spec, Then(wiggle))
    assert r["actions_after_success"] is None and r["steps_after_success"] is None
    assert r["virtual_seconds"] < 5.0  # the 1.5 s tail ended it
    r0 = run_episode({**spec, "after_success": 0}, Then(wiggle))
    assert r0["success"] and r0["actions_after_success"] is None and r0["steps_after_success"] is None
    assert r0["steps"] == 1 and r0["virtual_seconds"] < r["virtual_seconds"]  # ended at the success


def test_dw_eval_reports_actions_after_success(capsys):
    from agent.cli.commands.eval import AFTER_SUCCESS_S as CLI_DEFAULT
    from agent.desktops.apps.evaluate import AFTER_SUCCESS_S as APPS_DEFAULT

    assert CLI_DEFAULT == APPS_DEFAULT == AFTER_SUCCESS_S
    base = ["eval", "--tasks", "click-button", "--episodes", "2", "--sizes", "640x480", "--policy", "scripted"]
    assert main([*base, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["after_success_s"] == AFTER_SUCCESS_S
    assert [e["actions_after_success"] for e in out["episodes"]] == [0, 0]
    assert out["summary"]["mean_actions_after_success"] == 0.0
    assert main([*base, "--after-success", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["mean_actions_after_success"] is None and out["after_success_s"] == 0.0
    assert main(base) == 0
    assert "actions after success: mean 0.00 per successful episode (5 s window; 0 of 2 acted)" in capsys.readouterr().out
    assert main([*base, "--after-success", "-1"]) == 2
    assert "--after-success" in capsys.readouterr().err
    assert main(["eval", "--suite", "miniwob", "--after-success", "2"]) == 2
    assert "--after-success applies to" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world():
    yield from apps_world("tk")


def test_apps_episodes_count_actions_after_success(world):
    from agent.desktops.apps.evaluate import run_episodes
    from agent.desktops.apps.evaluate import summarise as apps_summarise

    acting, done = run_episodes(["tk-button"], [5], Then(wiggle), world=world, after_success=2.0) + \
        run_episodes(["tk-button"], [5], ScriptedPolicy(), world=world, after_success=2.0)
    assert acting["success"] and acting["reason"] == "finished" and acting["actions_after_success"] >= 3
    assert done["success"] and done["reason"] == "done" and done["actions_after_success"] == 0
    s = apps_summarise([acting, done])
    assert s["mean_actions_after_success"] == pytest.approx(acting["actions_after_success"] / 2, abs=0.001)
    assert s["tasks"]["tk-button"]["mean_actions_after_success"] == s["mean_actions_after_success"]
