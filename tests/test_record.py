"""`dw record` on a private Xvfb while xdotool plays the human; the HumanInput state machine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agent.sessions.format import open_session
from agent.sessions.humanrec import HumanInput
from capture import Screen
from tests.conftest import ROOT
from tests.make_fixture_record import play_and_record


def near(a, b, server, px=1.0):
    return abs(a[0] - b[0]) <= px / server.width and abs(a[1] - b[1]) <= px / server.height


@pytest.mark.xvfb
def test_dw_record_with_xdotool_human(xvfb, tk_app, tmp_path):
    out = tmp_path / "rec"
    played = play_and_record(xvfb, tk_app, out)
    assert played["rc"] == 0, played["stderr"]
    assert "stopped: signal SIGINT" in played["stderr"]
    s = open_session(out)
    assert s.meta["closed"] and s.meta["end_reason"] == "signal SIGINT" and not s.damage
    assert s.meta["policy"] == "human" and s.meta["desktop"]["kind"] == "live"
    human = [e for e in s.events if e.source == "human"]
    assert human and all(e.action is not None for e in human)
    acts = [e.action for e in human]
    norm = lambda p: ((p[0] + 0.5) / xvfb.width, (p[1] + 0.5) / xvfb.height)  # noqa: E731
    clicks = [a for a in acts if a.type == "click"]
    assert len(clicks) == 3, acts
    assert near(clicks[0].point, norm(played["button"]), xvfb) and clicks[0].count == 1
    assert near(clicks[1].point, norm(played["entry"]), xvfb) and clicks[1].count == 1
    assert near(clicks[2].point, norm(played["double"]), xvfb) and clicks[2].count == 2
    types = [a for a in acts if a.type == "type"]
    assert [a.text for a in types] == [played["word"]]
    assert any(a.type == "key" and a.keys == "enter" for a in acts)
    scrolls = [a for a in acts if a.type == "scroll"]
    assert scrolls and scrolls[0].dy == 1 and near(scrolls[0].point, norm(played["double"]), xvfb)
    moves = [a for a in acts if a.type == "move"]
    assert any(near(m.point, norm((100, 100)), xvfb) for m in moves)
    # the order the human did things in
    order = [a.type for a in acts if a.type != "move"]
    assert order == ["click", "click", "type", "key", "click", "scroll"]
    # frames and events share one clock; each event names the last frame before it
    n = s.count_frames()
    assert n >= 20 and all(-1 <= e.frame < n for e in s.events)
    assert all(b.t >= a.t for a, b in zip(s.events, s.events[1:], strict=False))
    # the app really received the human's input
    assert any(e["ev"] == "entry" and e["text"] == played["word"] for e in tk_app.events())


def test_dw_record_without_display_is_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    for cmd in (["record", "--out", str(tmp_path / "x")], ["run", "--dry-run"]):
        r = subprocess.run([sys.executable, "-m", "agent.cli", *cmd], env=env, cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2
        assert r.stderr.strip().count("\n") == 0 and "no display" in r.stderr, r.stderr


class Sink:
    def __init__(self):
        self.out = []

    def __call__(self, t, action):
        self.out.append((t, action))


def machine(**kw):
    sink = Sink()
    return HumanInput(Screen(100, 100), sink, move_hz=10, **kw), sink.out


def test_human_input_click_double_drag_type_combo():
    h, out = machine(ignore_combo="ctrl+alt+shift+q")
    h.move(0.0, 10, 10)
    h.press(0.1, 10, 10, "left"); h.release(0.15, 10, 10, "left")  # noqa: E702
    h.press(0.3, 11, 10, "left"); h.release(0.35, 11, 10, "left")  # noqa: E702
    h.tick(1.0)
    h.press(1.1, 50, 50, "left")
    h.move(1.2, 60, 60)
    h.move(1.25, 70, 70)
    h.release(1.4, 80, 80, "left")
    for i, c in enumerate("Hi there"):
        h.key_down(2.0 + i * 0.05, "char", c)
    h.key_down(2.6, "named", "enter")
    h.key_down(2.7, "mod", "ctrl"); h.key_down(2.71, "mod", "shift"); h.key_down(2.72, "char", "T")  # noqa: E702
    h.key_up(2.8, "mod", "ctrl"); h.key_up(2.8, "mod", "shift")  # noqa: E702
    for k in ("ctrl", "alt", "shift"):
        h.key_down(3.0, "mod", k)
    h.key_down(3.01, "char", "Q")  # the stop hotkey is not recorded
    h.scroll(3.5, 5, 5, 0, -2)
    h.flush()
    kinds = [(a.type, a.to_json()) for _, a in out]
    types = [k for k, _ in kinds]
    # the move to (10, 10) is not written: the click there carries the point
    assert types == ["click", "mouse_down", "move", "move", "mouse_up", "type", "key", "key", "scroll"], kinds
    assert kinds[0][1]["count"] == 2 and kinds[0][1]["x"] == pytest.approx(0.105)
    assert kinds[5][1]["text"] == "Hi there"
    assert kinds[6][1]["keys"] == "enter" and kinds[7][1]["keys"] == "ctrl+shift+t"
    assert kinds[8][1]["dy"] == 2
    ts = [t for t, _ in out]
    assert ts == sorted(ts)
