"""MiniWoB++: Pix2Act's 59-task list and the DOM experts written for it.

Offline: the list itself, its coverage table and the experts' pure parts. Headless (skipped without
``miniwob``/``selenium``/Chromium): every expert of the list runs one seeded episode; a fast subset
runs unmarked, the whole batch (about 2 minutes on two cores) is ``slow``."""

from __future__ import annotations

import json

import pytest

from agent.desktops.miniwob.tasklists import NO_EXPERT, PIX2ACT59
from policies.actions import Click, Done
from tests.test_miniwob import _need_browser


def test_pix2act59_is_59_distinct_tasks_named_by_the_list():
    from agent.desktops.miniwob.evaluate import parse_tasks

    assert len(PIX2ACT59) == 59 and len(set(PIX2ACT59)) == 59
    assert parse_tasks("pix2act59") == list(PIX2ACT59)
    assert len(parse_tasks("all")) == 17  # the classic tasks the bundled checkpoints learned, as before


def test_every_pix2act59_name_is_a_task_of_the_installed_package():
    pytest.importorskip("miniwob", reason="pip install miniwob")
    from agent.desktops.miniwob.browser import task_names

    names = set(task_names())
    missing = [t for t in PIX2ACT59 if t not in names]
    # drag-item (OpenAI's original MiniWoB) is the one name Farama's package lacks; it is reported, not run
    assert missing == ["drag-item"]
    assert "not in the installed miniwob package" in NO_EXPERT["drag-item"]


def test_every_task_has_an_expert_or_a_reason():
    from agent.desktops.miniwob.experts import EXPERTS
    from agent.desktops.miniwob.tasklists import coverage

    for t in PIX2ACT59:
        c = coverage(t)
        assert (c["expert"] == t and t in EXPERTS and c["reason"] is None) or (c["expert"] is None and c["reason"])
    assert sum(t in EXPERTS for t in PIX2ACT59) == 58


def test_arithmetic_and_algebra_are_solved():
    from agent.desktops.miniwob.experts_pix2act import _solve

    assert _solve("7 x 8 = ") == 56 and _solve("3 - 9 = ") == -6 and _solve("2 + 2 = ") == 4
    assert _solve("x + 4 = 10") == 6 and _solve("x - 4 = 10") == 14
    assert _solve("4 + x = 10") == 6 and _solve("4 - x = 10") == -6


def test_shape_descriptions_match_as_shapes_js_does():
    from agent.desktops.miniwob.experts_pix2act import _matches

    big_red_e = {"tag": "text", "text": "e", "color": "red", "dim": 20}
    small_blue_circle = {"tag": "circle", "text": "", "color": "blue", "dim": 10}
    assert _matches(big_red_e, "large red item") and _matches(big_red_e, "e") and _matches(big_red_e, "letter")
    assert not _matches(big_red_e, "small item") and not _matches(big_red_e, "digit")
    assert _matches(small_blue_circle, "small blue circle") and _matches(small_blue_circle, "shape")
    assert not _matches(small_blue_circle, "red item")


def test_count_sides_reads_the_period_of_the_outline():
    import math

    from agent.desktops.miniwob.experts_pix2act import count_sides

    for n in range(3, 8):
        # distance from the centre to a regular n-gon's outline (circumradius 35), one value a degree
        r = [35 * math.cos(math.pi / n) / math.cos((math.radians(k) + 0.3) % (2 * math.pi / n) - math.pi / n)
             for k in range(360)]
        buttons = [{"sides": str(k), "x": 10.0 * k, "y": 150.0, "w": 8.0, "h": 8.0, "visible": True}
                   for k in range(3, 8)]
        (a,) = count_sides({"radius": r, "buttons": buttons}, "")
        assert a == Click((10.0 * n + 4) / 160, 154 / 210)


def test_tic_tac_toe_takes_a_win_and_blocks_a_loss():
    from agent.desktops.miniwob.experts_pix2act import tic_tac_toe

    def cells(board: str):
        cls = {"x": "mark-x", "o": "mark-o", ".": ""}
        return {"cells": [{"cls": cls[c], "x": 20.0 * (i % 3), "y": 60 + 20.0 * (i // 3), "w": 18.0, "h": 18.0,
                           "visible": True} for i, c in enumerate(board)]}

    (a,) = tic_tac_toe(cells("xx.oo...."), "")  # take the win at 2
    assert a == Click(49 / 160, 69 / 210)
    (a,) = tic_tac_toe(cells("oo.x....."), "")  # block at 2
    assert a == Click(49 / 160, 69 / 210)


FAST = ("click-tab-2-hard", "count-sides", "drag-items", "enter-date", "use-slider")
NEW = tuple(t for t in PIX2ACT59 if t not in NO_EXPERT and t not in {
    "click-button", "click-button-sequence", "click-checkboxes", "click-dialog", "click-dialog-2", "click-link",
    "click-option", "click-tab", "click-test", "click-test-2", "click-widget"})


def _one_episode(task: str, seed: int) -> dict:
    from agent.desktops.miniwob.evaluate import run_task
    from policies.builtin import ScriptedPolicy

    (r,) = run_task(task, [seed], ScriptedPolicy())
    return r


@pytest.mark.parametrize("task", FAST)
def test_new_experts_fast_subset(task):
    _need_browser()
    r = _one_episode(task, 100_000)
    assert r["success"], r


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in NEW if t not in FAST])
def test_new_experts_headless(task):
    _need_browser()
    r = _one_episode(task, 100_001)
    assert r["success"], r


def test_the_oracle_says_done_once_the_page_is_finished():
    _need_browser()
    from agent.desktops.miniwob import open_miniwob

    with open_miniwob("click-color", seed=7) as d:
        while not d.finished:
            acts = d.oracle.expert_actions()
            assert acts and not isinstance(acts[0], Done)
            for a in acts:
                d.apply(a)
        assert d.success and d.oracle.expert_actions() == [Done()]


@pytest.mark.slow
def test_dw_eval_pix2act59_reports_every_task(capsys, monkeypatch):
    """The JSON names all 59 tasks with their coverage, the one that cannot run included (two tasks run)."""
    _need_browser()
    from agent.cli.main import main
    from agent.desktops.miniwob import tasklists

    monkeypatch.setitem(tasklists.TASK_LISTS, "pix2act59", ("click-color", "drag-item", "grid-coordinate"))
    assert main(["eval", "--suite", "miniwob", "--tasks", "pix2act59", "--episodes", "1", "--policy", "scripted",
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert set(s["tasks"]) == {"click-color", "drag-item", "grid-coordinate"}
    assert s["tasks"]["drag-item"]["expert"] is None and not s["tasks"]["drag-item"]["available"]
    assert "scripted" not in s["tasks"]["drag-item"] and s["without_expert"].keys() == {"drag-item"}
    assert s["tasks"]["click-color"]["scripted"]["success_rate"] == 1.0 and s["covered"] == 2


def test_a_button_left_pressed_does_not_carry_into_the_next_episode():
    """An episode that ends mid-drag (its time or steps ran out) leaves the button down; the next
    episode on the same browser starts with it released."""
    _need_browser()
    from agent.desktops.miniwob.desktop import MiniWoBBrowser, open_miniwob
    from agent.loop import Agent
    from policies.actions import MouseDown, Move
    from policies.builtin import ScriptedPolicy

    with MiniWoBBrowser("drag-items-grid") as b:
        with open_miniwob("drag-items-grid", 5, browser=b) as d:
            d.apply(MouseDown(0.5, 0.4))
            d.apply(Move(0.5, 0.45))
        with open_miniwob("drag-items-grid", 6, browser=b) as d:
            r = Agent(d, ScriptedPolicy(), max_steps=10).run()
            assert r.success, r.reason
