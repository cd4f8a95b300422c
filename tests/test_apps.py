"""The apps suite: real Tk and GTK apps on a private Xvfb, driven through the live path.

The smoke test runs a few tasks of both toolkits with the scripted expert (fast); the whole suite,
the widget factory over AT-SPI and demos that replay are marked slow. Tests start their own Xvfb
(an :class:`AppWorld`) and skip with a reason where Xvfb or a toolkit cannot be installed.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess

import pytest

from agent.cli.main import main
from agent.desktops import DesktopError
from agent.desktops.apps import TASKS, TOOLKITS, AppDesktop, AppWorld
from agent.desktops.apps import desktop as apps_desktop
from agent.desktops.apps.evaluate import parse_tasks, run_episodes, summarise
from agent.errors import UserError
from policies.builtin import ScriptedPolicy
from tests.conftest import apps_world

SMOKE = ["tk-form", "tk-menu", "gtk-check", "gtk-dialog"]


def run_dw(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world():
    yield from apps_world("tk", "gtk")


def test_registry_covers_two_toolkits_and_twelve_tasks():
    assert len(TASKS) >= 12
    assert {t.toolkit for t in TASKS.values()} == set(TOOLKITS) == {"tk", "gtk"}
    for name, task in TASKS.items():
        assert name.startswith(task.toolkit + "-")
        phrasings = {task.episode(s).instruction.split(" ")[0] for s in range(40)}
        assert len({task.episode(s).instruction for s in range(40)}) >= 3, name
        assert phrasings, name


def test_episodes_are_seeded():
    for task in TASKS.values():
        assert task.episode(7) == task.episode(7)


def test_parse_tasks():
    assert parse_tasks("all") == list(TASKS)
    assert all(TASKS[t].toolkit == "tk" for t in parse_tasks("tk"))
    assert parse_tasks("gtk-form,tk-form") == ["gtk-form", "tk-form"]
    with pytest.raises(UserError, match="unknown apps task 'tk-nope'"):
        parse_tasks("tk-nope")


def test_unknown_task_is_one_line():
    rc, out, err = run_dw(["eval", "--suite", "apps", "--tasks", "no-such-task", "--policy", "scripted",
                           "--episodes", "1", "--json"])
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "unknown apps task 'no-such-task'" in err


def test_missing_toolkit_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(apps_desktop, "_PYTHONS", {})
    monkeypatch.setattr(apps_desktop, "SYSTEM_PYTHON", "/nonexistent/python3")
    monkeypatch.setitem(apps_desktop.NEEDS, "gtk", ("import no_such_module_dw", "python3-gi gir1.2-gtk-3.0"))
    rc, out, err = run_dw(["eval", "--suite", "apps", "--tasks", "gtk-form", "--policy", "scripted",
                           "--episodes", "1"])
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "apt-get install python3-gi gir1.2-gtk-3.0" in err


def test_missing_program_names_the_debian_package(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(apps_desktop.shutil, "which", lambda n: None if n == "gtk3-widget-factory" else real(n))
    rc, out, err = run_dw(["demos", "--suite", "apps", "--tasks", "gtk-factory-tab", "--episodes", "1",
                           "--out", "/tmp/dw-apps-never-written"])
    assert rc != 0 and len(err.strip().splitlines()) == 1
    assert "apt-get install gtk-3-examples" in err


def test_smoke_both_toolkits(world):
    """A few tasks of each toolkit x 2 episodes, scripted expert, through mss and pyautogui."""
    results = run_episodes(SMOKE, [11, 12], ScriptedPolicy(), world=world)
    summary = summarise(results)
    assert set(summary["toolkits"]) == {"tk", "gtk"}
    failed = [(r["task"], r["seed"], r["reason"], r["errors"]) for r in results if not r["success"]]
    assert not failed
    assert all(r["reason"] == "done" for r in results)  # the expert ends with done, after success


def test_wrong_answer_fails_at_once(world):
    """A decisive wrong step (another button) ends the episode as a failure."""
    from policies.actions import Click

    desk = AppDesktop("tk-button", 3, world)
    try:
        wrong = next(k for k in desk.state["targets"] if k.startswith("button:") and k != f"button:{desk.goal}")
        desk.apply(Click(*desk.point(desk.state["targets"][wrong])))
        assert desk.finished and desk.success is False
    finally:
        desk.close()


def test_atspi_bus_not_running(world):
    if shutil.which("gtk3-widget-factory") is None:
        pytest.skip("gtk3-widget-factory is not installed (apt-get install gtk-3-examples)")
    dead = AppWorld(display=world.display, bus="unix:path=/tmp/dw-no-such-bus")
    try:
        with pytest.raises(DesktopError, match="AT-SPI bus not running") as e:
            AppDesktop("gtk-factory-page", 1, dead)
        assert "\n" not in str(e.value)
    finally:
        dead._old_display = world.display  # leave DISPLAY on the module's world
        dead.close()


@pytest.mark.slow
def test_every_task_once(world):
    results = run_episodes(list(TASKS), [21], ScriptedPolicy(), world=world)
    failed = [(r["task"], r["reason"], r["errors"]) for r in results if not r["success"]]
    assert not failed


@pytest.mark.slow
def test_demos_replay_and_open_in_ffprobe(world, tmp_path, monkeypatch):
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed (apt-get install ffmpeg)")
    monkeypatch.setattr(apps_desktop, "AppWorld", lambda: world)  # record on the module's Xvfb
    monkeypatch.setattr(world, "close", lambda: None)
    rc, out, err = run_dw(["demos", "--suite", "apps", "--tasks", "tk-check,gtk-menu", "--episodes", "1",
                           "--out", str(tmp_path), "--json"])
    assert rc == 0, err
    assert json.loads(out)["recorded"] == 2
    sessions = sorted(p for p in tmp_path.iterdir() if (p / "session.json").exists())
    assert [p.name for p in sessions] == ["gtk-menu-s0", "tk-check-s0"]
    for s in sessions:
        meta = json.loads((s / "session.json").read_text())
        assert meta["desktop"]["kind"] == "apps" and meta["desktop"]["toolkit"] in ("tk", "gtk")
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height",
                                "-of", "json", str(s / "video.mkv")], capture_output=True, text=True)
        assert probe.returncode == 0 and json.loads(probe.stdout)["streams"], probe.stderr
        rc, out, err = run_dw(["replay", str(s), "--policy", "random", "--json"])
        assert rc == 0, err
        rep = json.loads(out)
        assert rep["frames_decoded"] > 0 and rep["recorded_actions"] >= 2
        actions = [json.loads(line) for line in (s / "events.jsonl").read_text().splitlines()]
        assert [e for e in actions if e.get("source") == "policy"][-1]["action"]["type"] == "done"


def test_input_goes_back_to_the_session_display_after_the_suite(xvfb):
    """pyautogui binds its X connection at import; after a suite's own Xvfb is gone, live input in
    the same process reaches the display that is current again."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    with AppWorld() as w:
        desk = AppDesktop("tk-radio", 5, w)
        desk.close()
    import pyautogui

    pyautogui.moveTo(33, 44)
    assert tuple(pyautogui.position()) == (33, 44)
    assert pyautogui.size() == (xvfb.width, xvfb.height)


def test_dagger_demos_keep_the_policys_episodes_with_the_experts_labels(world, tmp_path, monkeypatch):
    """``dw demos --suite apps --dagger``: the policy drives (here it only waits), the expert labels
    every state it reaches, the failed episode is kept, and training learns the labels."""
    from agent.desktops.apps.evaluate import record_demos
    from agent.sessions.format import open_session
    from agent.training.dataset import session_samples
    from policies.actions import Wait
    from policies.pixel import PixelConfig
    from policies.pixel.codec import LABEL_FIELDS

    class Waits:
        name = "waits"

        def reset(self, instruction):
            pass

        def act(self, observation):
            return [Wait(0.05)]

    results = record_demos(["tk-button"], 1, tmp_path, seed=4, max_steps=3, policy=Waits())
    assert [r["success"] for r in results] == [False]
    s = open_session(tmp_path / "tk-button-s4")
    assert [e.action.type for e in s.actions(("policy",))] == ["wait"] * 3
    labels = [e for e in s.events if e.raw.get("event") == "expert_label"]
    assert [e.action.type for e in labels] == ["click"] * 3  # the named button, at every state
    data = session_samples(tmp_path / "tk-button-s4", PixelConfig.for_size("pixel-tiny"))
    types = data["labels"][:, LABEL_FIELDS.index("type")]
    assert len(types) == 3 and len(set(types.tolist())) == 1  # the expert's clicks, not the waits

    monkeypatch.setattr(apps_desktop, "AppWorld", lambda: world)  # the command, on the module's Xvfb
    monkeypatch.setattr(world, "close", lambda: None)
    rc, out, err = run_dw(["demos", "--suite", "apps", "--tasks", "tk-button", "--episodes", "1", "--seed", "5",
                           "--dagger", "random", "--beta", "1", "--out", str(tmp_path / "cli"), "--json"])
    assert rc == 0, err
    assert json.loads(out) == {"suite": "apps", "out": str(tmp_path / "cli"), "episodes": 1, "recorded": 1,
                               "policy_successes": 1}  # beta 1: the expert's own steps
