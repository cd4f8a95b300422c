"""`dw record` makes demonstrations to teach with: the done hotkey, cursor0, the ready line on stderr,
pointer moves (not at a click's own point; ``--move-hz``)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest

from agent.cli.commands import record as record_cmd
from agent.sessions import humanrec
from agent.sessions.format import open_session
from agent.sessions.humanrec import HumanInput, check_hotkeys, cursor_start
from capture import Screen
from tests.conftest import ROOT


class Sink:
    def __init__(self):
        self.out = []

    def __call__(self, t, action):
        self.out.append((t, action))

    def types(self):
        return [a.type for _, a in self.out]


def machine(**kw):
    sink = Sink()
    kw.setdefault("move_hz", 10)
    return HumanInput(Screen(100, 100), sink, **kw), sink


def press_combo(h, t, mods, char):
    for m in mods:
        h.key_down(t, "mod", m)
    h.key_down(t + 0.01, "char", char)
    for m in mods:
        h.key_up(t + 0.02, "mod", m)


# --- the done hotkey ---------------------------------------------------------------------------

def test_done_hotkey_flushes_pending_then_done_and_ignores_the_rest():
    calls = []
    h, sink = machine(ignore_combo="ctrl+alt+shift+q", done_combo="ctrl+alt+shift+d", on_done=lambda: calls.append(1))
    h.press(0.1, 10, 10, "left"); h.release(0.15, 10, 10, "left")  # noqa: E702 - a click still pending
    for i, c in enumerate("Ada"):
        h.key_down(0.5 + i * 0.05, "char", c)  # text still being typed
    press_combo(h, 0.8, ("ctrl", "alt", "shift"), "D")  # pynput reports the shifted letter
    assert calls == [1] and h.finished
    h.move(1.0, 50, 50); h.press(1.1, 50, 50, "left"); h.release(1.15, 50, 50, "left")  # noqa: E702
    h.key_down(1.2, "named", "enter")
    h.tick(5.0)
    h.flush()
    assert sink.types() == ["click", "type", "done"], sink.out
    assert sink.out[1][1].text == "Ada"
    assert sink.out[2][0] == pytest.approx(0.81)  # the moment the hotkey's key went down
    assert calls == [1]


def test_done_hotkey_keys_are_not_recorded_and_other_combos_are():
    h, sink = machine(done_combo="ctrl+alt+shift+d")
    press_combo(h, 0.0, ("ctrl", "alt"), "d")  # not the done hotkey (no shift): a key
    assert not h.finished
    press_combo(h, 1.0, ("ctrl", "alt", "shift"), "D")
    assert sink.types() == ["key", "done"] and sink.out[0][1].keys == "ctrl+alt+d"


def test_done_hotkey_named_key_and_aliases():
    h, sink = machine(done_combo="cmd+f9")  # cmd = super
    h.key_down(0.0, "mod", "super")
    h.key_down(0.1, "named", "f9")
    assert h.finished and sink.types() == ["done"]


def test_no_done_hotkey_means_no_done():
    h, sink = machine(done_combo=None)
    press_combo(h, 0.0, ("ctrl", "alt", "shift"), "D")
    h.flush()
    assert not h.finished and sink.types() == ["key"]


def test_check_hotkeys():
    check_hotkeys("ctrl+alt+shift+q", "ctrl+alt+shift+d")
    check_hotkeys(None, None)
    with pytest.raises(ValueError, match=r"are both shift\+ctrl\+alt\+q"):
        check_hotkeys("ctrl+alt+shift+q", "shift+ctrl+alt+q")
    with pytest.raises(ValueError, match="done hotkey") as e:
        check_hotkeys("ctrl+alt+shift+q", "ctrl+nosuchkey")
    assert "stop hotkey" not in str(e.value)


def test_cli_defaults_and_help():
    assert record_cmd.DEFAULT_DONE_HOTKEY == humanrec.DEFAULT_DONE_HOTKEY == "ctrl+alt+shift+d"
    r = subprocess.run([sys.executable, "-m", "agent.cli", "record", "--help"], cwd=ROOT, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    assert r.returncode == 0
    for word in ("--done-hotkey", "ctrl+alt+shift+d", "--move-hz", record_cmd.READY_PREFIX.strip()):
        assert word in r.stdout, word


@pytest.mark.parametrize("args, words", [
    (["--done-hotkey", "ctrl+nosuchkey"], "done hotkey"),
    (["--done-hotkey", "ctrl+alt+shift+q"], "both"),
    (["--move-hz", "-1"], "--move-hz"),
])
def test_cli_bad_options_are_one_line(tmp_path, args, words):
    # DISPLAY is set but never opened: the options are checked before anything starts
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "DISPLAY": ":987"}
    r = subprocess.run([sys.executable, "-m", "agent.cli", "record", "--out", str(tmp_path / "x"), *args],
                       env=env, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


# --- pointer moves ----------------------------------------------------------------------------

def test_no_move_at_a_click_point():
    h, sink = machine()
    h.move(0.0, 40, 40)  # a single jump, then a rest, then a click there
    h.tick(0.5)
    h.press(0.6, 40, 40, "left"); h.release(0.65, 40, 40, "left")  # noqa: E702
    h.tick(2.0)
    h.move(2.1, 20, 20)  # and again, with a path on the way
    for i in range(1, 6):
        h.move(2.1 + i * 0.06, 20 + i * 4, 20)
    h.tick(3.0)
    h.press(3.1, 40, 21, "left"); h.release(3.15, 40, 21, "left")  # noqa: E702 - within the slop of (40, 20)
    h.flush()
    assert sink.types()[0] == "click", sink.out
    moves = [(t, a) for t, a in sink.out if a.type == "move"]
    assert moves, "the path on the way is recorded"
    assert all(abs(a.x - 0.405) > 0.031 or abs(a.y - 0.205) > 0.031 for _, a in moves), moves
    assert all(b - a >= 0.1 - 1e-9 for (a, _), (b, _) in zip(moves, moves[1:], strict=False))
    assert sink.types()[-1] == "click"
    ts = [t for t, _ in sink.out]
    assert ts == sorted(ts)


def test_a_hover_is_written_once_the_pointer_goes_on_or_at_the_end():
    h, sink = machine()
    h.move(0.0, 40, 40)
    h.tick(3.0)
    assert sink.types() == []  # held: a click may still come there
    h.move(3.5, 60, 60)
    assert sink.out[0][1].type == "move" and sink.out[0][0] == 0.0
    h.key_down(4.0, "named", "enter")
    h.flush()
    assert sink.types() == ["move", "move", "key"]


def test_no_move_at_a_scroll_or_release_point():
    h, sink = machine()
    h.move(0.0, 30, 30)
    h.scroll(0.5, 30, 30, 0, -1)
    h.press(1.0, 30, 30, "left")
    h.move(1.2, 50, 50)
    h.move(1.4, 70, 70)
    h.move(1.45, 80, 80)
    h.release(1.6, 80, 80, "left")
    h.flush()
    assert sink.types() == ["scroll", "mouse_down", "move", "move", "mouse_up"], sink.out
    assert [a.x for _, a in sink.out if a.type == "move"] == [pytest.approx(0.505), pytest.approx(0.705)]


def test_move_hz_zero_records_no_moves():
    h, sink = machine(move_hz=0)
    for i in range(20):
        h.move(i * 0.2, 10 + i, 10)
    h.press(5.0, 29, 10, "left"); h.release(5.05, 29, 10, "left")  # noqa: E702
    h.press(6.0, 50, 50, "left")
    h.move(6.2, 60, 60)
    h.release(6.4, 70, 70, "left")
    h.flush()
    assert sink.types() == ["click", "mouse_down", "mouse_up"], sink.out
    assert sink.out[0][1].x == pytest.approx(0.295) and sink.out[2][1].x == pytest.approx(0.705)


def test_move_hz_limits_the_rate():
    h, sink = machine(move_hz=2)
    for i in range(50):
        h.move(i * 0.02, i, 0)
    h.key_down(2.0, "named", "enter")
    moves = [t for t, a in sink.out if a.type == "move"]
    path, rest = moves[:-1], moves[-1]
    assert path == [0.0, 0.5]  # at most 2 a second on the way
    assert rest == pytest.approx(0.98)  # and where the pointer came to rest, before the key (a key has no point)


# --- cursor0 ----------------------------------------------------------------------------------

def test_cursor_start():
    s = Screen(200, 100)
    assert cursor_start(0, 0, s) == [0.0025, 0.005]
    assert cursor_start(199, 99, s) == [0.9975, 0.995]
    assert cursor_start(-1, 0, s) is None and cursor_start(200, 0, s) is None
    right = Screen(200, 100, left=200)  # the second monitor
    assert cursor_start(100, 50, right) is None
    assert cursor_start(300, 50, right) == [0.5025, 0.505]
    retina = Screen(200, 100, scale=2.0)  # input in points, pixels at twice that
    assert cursor_start(50, 25, retina, input_scale=2.0) == pytest.approx([0.505, 0.51])  # the point's centre pixel


# --- on Xvfb: a script drives `dw record --json` -----------------------------------------------

def xdo(server, *args):
    subprocess.run(["xdotool", *args], env=server.env, check=True)


def lines(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


@pytest.mark.xvfb
def test_dw_record_ready_line_done_hotkey_cursor0(xvfb, tmp_path):
    out = tmp_path / "rec"
    W, H = xvfb.width, xvfb.height
    xdo(xvfb, "mousemove", "123", "45")
    time.sleep(0.1)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "record", "--json", "--out", str(out), "--fps", "10",
                             "--max-seconds", "60", "--instruction", "click twice, then say done"],
                            env={**xvfb.env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err: queue.Queue = queue.Queue()
    threading.Thread(target=lines, args=(proc.stderr, err), daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                line = err.get(timeout=0.2)
            except queue.Empty:
                continue
            assert line is not None, f"dw record ended before its ready line: {seen}"
            seen.append(line)
            if line.startswith(record_cmd.READY_PREFIX):
                break
        else:
            pytest.fail(f"no ready line: {seen}")
        assert seen[-1] == f"{record_cmd.READY_PREFIX}{out}; done with ctrl+alt+shift+d; " \
                           "stop with Ctrl+C or ctrl+alt+shift+q\n"
        # no sleep: input right after the ready line is recorded
        clicks = [(200, 150), (400, 300)]
        for x, y in clicks:
            xdo(xvfb, "mousemove", str(x), str(y))
            time.sleep(0.3)  # a rest before the click, as a person does
            xdo(xvfb, "click", "1")
            time.sleep(0.6)
        xdo(xvfb, "key", "ctrl+alt+shift+d")
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = []
    while (line := err.get(timeout=5)) is not None:
        rest.append(line)
    assert proc.returncode == 0, seen + rest
    res = json.loads(stdout)  # one JSON document, nothing else on stdout
    assert res["reason"] == "done" and res["counts"]["done"] == 1
    s = open_session(out)
    assert s.meta["closed"] and s.meta["end_reason"] == "done" and not s.damage
    assert s.meta["cursor0"] == pytest.approx([123.5 / W, 45.5 / H], abs=1e-6)
    assert s.meta["desktop"]["done_hotkey"] == "ctrl+alt+shift+d"
    acts = [e.action for e in s.events if e.source == "human"]
    assert [a.type for a in acts if a.type != "move"] == ["click", "click", "done"], acts
    assert acts[-1].type == "done"  # nothing after done, not the hotkey's keys either
    for (x, y), c in zip(clicks, [a for a in acts if a.type == "click"], strict=True):
        assert c.point == pytest.approx(((x + 0.5) / W, (y + 0.5) / H), abs=1e-6)
    for a, b in zip(acts, acts[1:], strict=False):  # no move at the click's own point right before it
        if b.type == "click" and a.type == "move":
            assert abs(a.x - b.x) * W > 3 or abs(a.y - b.y) * H > 3, (a, b)
    assert [e.raw.get("event") for e in s.events if e.source == "system"][-1] == "stop"
    assert all(b.t >= a.t for a, b in zip(s.events, s.events[1:], strict=False))
