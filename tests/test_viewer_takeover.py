"""Takeover in the browser viewer (#42): with the controller token a person's pointer and keyboard on the
canvas reach the desktop, and the in-process policy can be paused, resumed and re-instructed; with the
viewer token the page is watch-only and the server refuses actions; held buttons never stay pressed.

The protocol parts run without a browser; the rest drive headless Chromium through Playwright and skip
where it is missing (as tests/test_stream_browser.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

from agent.cli.commands.serve import _run_policy
from agent.desktops import ActionRefused
from agent.desktops.virtual import VirtualDesktop
from agent.stream import protocol as P
from agent.stream.server import ServerThread, StreamServer
from agent.stream.steering import PolicyControl
from policies.actions import MouseDown, Move
from tests.test_stream import _recv_json

CHROMIUM = os.environ.get("DW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SIZE = (640, 360)


def _server(task="click-button", seed=3, **kw) -> ServerThread:
    return ServerThread(StreamServer(VirtualDesktop(task, seed=seed, size=SIZE, fps=20.0), port=0, fps=20.0, **kw))


def _until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder:
    """A policy that does nothing and remembers what it was told and asked."""

    name = "recorder"

    def __init__(self):
        self.resets: list[str] = []
        self.seen: list[str] = []

    def reset(self, instruction):
        self.resets.append(instruction)

    def act(self, obs):
        self.seen.append(obs.instruction)
        return []


def _with_policy(policy) -> tuple[ServerThread, PolicyControl]:
    st = _server()
    control = PolicyControl(policy.name)
    st.server.attach_policy(control)
    return st, control


def _start_policy(srv, policy, control) -> threading.Thread:
    t = threading.Thread(target=_run_policy, args=(srv, policy, control), daemon=True)
    t.start()
    return t


# -- the protocol, without a browser ------------------------------------------------------------------------
def _ws(srv, token):
    ws = connect(f"{srv.url}?token={token}&format=none", compression=None, proxy=None, open_timeout=10,
                 max_size=P.MAX_MESSAGE_OUT).__enter__()
    return ws, _recv(ws, "hello")


def _recv(ws, kind=None, mid=None, timeout=10.0):
    return _recv_json(ws, kind, timeout, mid=mid)


def test_policy_messages_pause_resume_and_reinstruct_the_in_process_policy():
    policy = Recorder()
    st, control = _with_policy(policy)
    with st as srv:
        _start_policy(srv, policy, control)
        ctl, hello = _ws(srv, srv.token)
        view, vhello = _ws(srv, srv.viewer_token)
        try:
            assert hello["policy"] == {"name": "recorder", "running": True, "paused": False, "instruction": "",
                                       "reason": ""}
            assert vhello["policy"]["name"] == "recorder"  # viewers see the policy's state
            _until(lambda: len(policy.seen) > 2, what="the policy to act")
            ctl.send(json.dumps({"type": "policy", "id": 1, "paused": True}))
            reply = _recv(ctl, "policy", 1)
            assert reply["policy"]["paused"] is True and control.paused
            told = _recv(view, "policy")
            assert told["policy"]["paused"] is True and told["client"] == hello["client"]
            time.sleep(0.2)
            n = len(policy.seen)
            time.sleep(0.4)
            assert len(policy.seen) == n  # paused: the policy is not asked
            ctl.send(json.dumps({"type": "policy", "id": 2, "paused": False, "instruction": "  Click Apply "}))
            assert _recv(ctl, "policy", 2)["policy"] == {"name": "recorder", "running": True, "paused": False,
                                                        "instruction": "Click Apply", "reason": ""}
            _until(lambda: policy.seen and policy.seen[-1] == "Click Apply", what="the new instruction")
            assert policy.resets[-1] == "Click Apply"  # a new instruction is a fresh start
            ctl.send(json.dumps({"type": "policy", "id": 3, "instruction": ""}))  # the task's own again
            _recv(ctl, "policy", 3)
            _until(lambda: policy.seen[-1] == srv.state["instruction"], what="the task's instruction")
            # the viewer may not steer; bad requests name their field
            view.send(json.dumps({"type": "policy", "id": 9, "paused": True}))
            assert _recv(view, "error", 9)["field"] == "role"
            for mid, body, field in ((4, {"paused": "yes"}, "policy.paused"), (5, {"instruction": 3}, "policy.instruction"),
                                     (6, {"instruction": "a\x00b"}, "policy.instruction"),
                                     (7, {"instruction": "x" * 1001}, "policy.instruction"),
                                     (8, {}, "policy"), (10, {"speed": 2}, "policy.speed")):
                ctl.send(json.dumps({"type": "policy", "id": mid, **body}))
                assert _recv(ctl, "error", mid)["field"] == field, body
            assert not control.paused
        finally:
            ctl.close()
            view.close()


class Holder(Recorder):
    """Presses the left button once, then keeps moving: a drag under way."""

    name = "holder"

    def act(self, obs):
        super().act(obs)
        return [MouseDown(0.5, 0.5)] if len(self.seen) == 1 else [Move(0.4 + 0.01 * (len(self.seen) % 10), 0.5)]


def test_pausing_lets_go_of_what_the_policy_held_and_refuses_its_actions():
    policy = Holder()
    st, control = _with_policy(policy)
    with st as srv:
        _start_policy(srv, policy, control)
        _until(lambda: srv.held_buttons == {"left"} and srv.counters["actions"] > 3, what="the policy's drag")
        ws, _ = _ws(srv, srv.token)
        try:
            ws.send(json.dumps({"type": "policy", "id": 1, "paused": True}))
            _recv(ws, "policy", 1)
            _until(lambda: not srv.held_buttons and not srv.desktop._held, what="the release at the pause")
            with pytest.raises(ActionRefused, match="paused"):  # a step under way cannot act after the pause
                srv.apply_local(Move(0.1, 0.1))
            n = srv.counters["actions"]
            time.sleep(0.4)
            assert srv.counters["actions"] == n
        finally:
            ws.close()


def test_policy_message_without_a_policy_or_after_it_stopped():
    with _server() as srv:
        ws, hello = _ws(srv, srv.token)
        try:
            assert hello["policy"] is None
            ws.send(json.dumps({"type": "policy", "id": 1, "paused": True}))
            err = _recv(ws, "error", 1)
            assert err["field"] == "policy" and "--policy" in err["message"]
        finally:
            ws.close()
    control = PolicyControl("x")
    st = _server()
    st.server.attach_policy(control)
    with st as srv:
        ws, _ = _ws(srv, srv.token)
        try:
            control.finish("done")  # the runner's thread: everyone hears it
            told = _recv(ws, "policy")
            assert told["policy"]["running"] is False and told["policy"]["reason"] == "done"
            ws.send(json.dumps({"type": "policy", "id": 2, "paused": False}))
            assert "stopped (done)" in _recv(ws, "error", 2)["message"]
        finally:
            ws.close()


def test_a_controller_that_disconnects_mid_drag_leaves_no_button_held_on_a_virtual_desktop():
    with _server("drag-slider") as srv:
        ws, _ = _ws(srv, srv.token)
        ws.send(json.dumps({"type": "action", "id": 1, "action": {"type": "mouse_down", "x": 0.5, "y": 0.5}}))
        assert _recv(ws, "ack", 1)
        assert srv.held_buttons == {"left"} and srv.desktop._held == {"left"}
        ws.close()
        _until(lambda: not srv.held_buttons and not srv.desktop._held, what="the release on disconnect")


def test_dw_serve_with_a_policy_announces_it_and_a_controller_can_pause_it():
    token = "t" * 24
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", "--port", "0", "--screen", "320x240", "--fps", "10",
         "--policy", "random", "--token", token, "--viewer-token", "v" * 24],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines, url = [], None
        deadline = time.monotonic() + 60
        while not any("take over" in line for line in lines) and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "dw serve exited: " + "".join(lines)
            lines.append(line)
            m = re.search(r"(ws://\S+/ws)", line)
            url = url or (m.group(1) if m else None)
        assert url and any(f"#token={token}" in line for line in lines if "take over" in line), lines
        ws = connect(f"{url}?token={token}&format=none", compression=None, proxy=None, open_timeout=10).__enter__()
        try:
            hello = _recv(ws, "hello")
            assert hello["policy"]["name"] == "random"
            ws.send(json.dumps({"type": "policy", "id": 1, "paused": True}))
            reply = _recv(ws, mid=1)
            # random clicking may have ended the episode already; then the server says the policy stopped
            assert (reply["type"] == "policy" and reply["policy"]["paused"]) or "stopped" in reply["message"], reply
        finally:
            ws.close()
    finally:
        proc.terminate()
        proc.wait(10)


# -- the browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _open(browser, srv, token):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{srv.port}/#token={token}")
    page.wait_for_function("() => window.dwViewer && window.dwViewer.frames >= 1 "
                           "&& window.dwViewer.mode !== 'connecting'", timeout=20000)
    return page, errors


def _at(page, x, y):
    box = page.locator("#video").bounding_box()
    return box["x"] + x * box["width"], box["y"] + y * box["height"]


def _settle(srv, quiet=0.35, timeout=5.0):
    """Until no action has been applied for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    n, since = srv.counters["actions"], time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if srv.counters["actions"] != n:
            n, since = srv.counters["actions"], time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


KEYS = {"enter": "Enter", "tab": "Tab", "escape": "Escape", "backspace": "Backspace", "space": "Space",
        "ctrl": "Control", "alt": "Alt", "shift": "Shift"}


def _perform(page, a: dict) -> None:
    """One expert action done by a person on the canvas (mouse and keyboard, as Playwright drives them)."""
    kind = a["type"]
    if kind == "click":
        x, y = _at(page, a["x"], a["y"])
        if a.get("count", 1) == 2:
            page.mouse.dblclick(x, y)
        else:
            page.mouse.click(x, y, click_count=a.get("count", 1))
    elif kind == "drag":
        page.mouse.move(*_at(page, a["x"], a["y"]))
        page.mouse.down()
        page.mouse.move(*_at(page, a["x2"], a["y2"]), steps=6)
        time.sleep(0.1)  # the last move leaves (moves are sent at most every 50 ms)
        page.mouse.up()
    elif kind == "scroll":
        page.mouse.move(*_at(page, a["x"], a["y"]))
        page.mouse.wheel(a["dx"] * 100, a["dy"] * 100)
    elif kind == "type":
        page.keyboard.type(a["text"])
    elif kind == "key":
        page.keyboard.press("+".join(KEYS.get(k, k.upper() if len(k) > 1 else k) for k in a["keys"].split("+")))
    elif kind == "wait":
        time.sleep(min(1.0, a["seconds"]))
    else:
        raise AssertionError(f"no person's input for {a}")


@pytest.mark.parametrize("task", ["click-button", "double-click-icon", "enter-text", "drag-slider", "scroll-list"])
def test_a_person_with_the_controller_token_solves_the_task_from_the_canvas(browser, task):
    """The expert's plan, step by step, performed with the mouse and keyboard on the viewer's canvas."""
    with _server(task) as srv:
        page, errors = _open(browser, srv, srv.token)
        try:
            assert page.locator("#takeover").is_visible()
            assert not page.locator("#policy-box").is_visible()  # no in-process policy: nothing to steer
            assert not page.locator("#instruction-form").is_visible()
            page.click("#takeover")
            assert page.evaluate("() => window.dwViewer.takeover") is True
            for _step in range(12):
                if srv.state["success"]:
                    break
                plan = [a.to_json() for a in srv.expert_local()]
                for a in plan:
                    if a["type"] != "done":
                        _perform(page, a)
                _settle(srv)
            assert srv.state["success"] is True, (task, srv.state)
            assert srv.counters["actions"] > 0 and not srv.held_buttons
            page.wait_for_function("() => document.getElementById('instruction').textContent.includes('done')",
                                   timeout=5000)
            page.wait_for_function("() => /you: (mouse_down left|type)/.test(document.getElementById('log').textContent)",
                                   timeout=5000)
            state = page.evaluate("() => ({errors: window.dwViewer.errors, held: window.dwViewer.held})")
            assert not state["errors"] and not errors and state["held"] == [], (state, errors)
        finally:
            page.close()


def test_a_click_with_the_viewer_token_does_not_reach_the_desktop(browser):
    with _server() as srv:
        page, errors = _open(browser, srv, srv.viewer_token)
        try:
            assert page.locator("#controls").count() == 0  # watch-only: no controls in the page
            assert page.locator("#log").is_visible()  # but the log of what others do
            target = srv.expert_local()[0]
            before = srv.state
            page.evaluate("() => window.dwViewer.setTakeover(true)")  # refused by the page itself
            page.mouse.click(*_at(page, target.x, target.y))
            page.keyboard.type("abc")
            time.sleep(0.5)
            assert page.evaluate("() => window.dwViewer.takeover") is False
            assert srv.counters["actions"] == 0 and srv.state["success"] is None
            assert srv.state["cursor"] == before["cursor"]
            # and the server refuses a viewer's action, whatever the page does
            page.evaluate("() => window.dwViewer.send({type: 'action', id: 7, action: "
                          f"{{type: 'click', x: {target.x}, y: {target.y}}}}})")
            page.wait_for_function("() => window.dwViewer.errors.some((e) => e.startsWith('role:'))", timeout=5000)
            assert srv.counters["actions"] == 0 and srv.state["success"] is None
            page.wait_for_function("() => document.getElementById('log').textContent.includes('refused: role')",
                                   timeout=5000)
            assert not errors
        finally:
            page.close()


def test_a_viewer_sees_the_controllers_actions_in_its_log(browser):
    with _server() as srv:
        viewer, _ = _open(browser, srv, srv.viewer_token)
        ctl, _ = _open(browser, srv, srv.token)
        try:
            ctl.click("#takeover")
            ctl.mouse.click(*_at(ctl, 0.25, 0.75))
            viewer.wait_for_function("() => window.dwViewer.log.some((e) => e.text.startsWith('mouse_up'))",
                                     timeout=5000)
            entries = viewer.evaluate("() => window.dwViewer.log.map((e) => e.who + ': ' + e.text)")
            me = ctl.evaluate("() => window.dwViewer.hello.client")
            assert any(e.startswith(f"client {me}: mouse_down left (0.250, 0.750)") for e in entries), entries
        finally:
            viewer.close()
            ctl.close()


def test_held_buttons_are_released_when_takeover_ends_and_when_the_page_closes(browser):
    with _server("drag-slider") as srv:
        page, _ = _open(browser, srv, srv.token)
        page.click("#takeover")
        page.mouse.move(*_at(page, 0.5, 0.5))
        page.mouse.down()
        _until(lambda: srv.held_buttons == {"left"}, what="the press")
        page.evaluate("() => window.dwViewer.setTakeover(false)")  # Hand back while the button is down
        _until(lambda: not srv.held_buttons and not srv.desktop._held, what="the release at hand-back")
        page.mouse.up()
        page.evaluate("() => window.dwViewer.setTakeover(true)")
        page.mouse.down()
        _until(lambda: srv.held_buttons == {"left"}, what="the second press")
        page.close()  # the page goes with the button down
        _until(lambda: not srv.held_buttons and not srv.desktop._held, what="the release on close")


def test_pause_resume_instruction_and_takeover_from_the_page(browser):
    policy = Recorder()
    st, control = _with_policy(policy)
    with st as srv:
        _start_policy(srv, policy, control)
        page, errors = _open(browser, srv, srv.token)
        viewer, _ = _open(browser, srv, srv.viewer_token)
        try:
            assert page.locator("#policy-name").inner_text() == "recorder"
            assert page.locator("#policy-state").inner_text() == "running"
            page.click("#pause")
            _until(lambda: control.paused, what="the pause")
            page.wait_for_function("() => document.getElementById('pause').textContent === 'Resume'", timeout=5000)
            time.sleep(0.2)
            n = len(policy.seen)
            time.sleep(0.4)
            assert len(policy.seen) == n
            viewer.wait_for_function("() => document.getElementById('policy-state').textContent === 'paused'",
                                     timeout=5000)  # a viewer sees the policy's state, and has no switches
            assert viewer.locator("#pause").count() == 0 and viewer.locator("#instruction-input").count() == 0
            page.click("#pause")
            _until(lambda: not control.paused, what="the resume")
            page.fill("#instruction-input", "Click the Apply button.")
            page.press("#instruction-input", "Enter")
            _until(lambda: policy.seen and policy.seen[-1] == "Click the Apply button.", what="the new instruction")
            # taking over pauses the policy; handing back resumes it
            page.click("#takeover")
            _until(lambda: control.paused, what="the pause at takeover")
            page.click("#takeover")
            _until(lambda: not control.paused, what="the resume at hand-back")
            page.wait_for_function("() => ['paused the policy', 'resumed the policy', 'instruction \"Click the Apply']"
                                   ".every((t) => document.getElementById('log').textContent.includes(t))", timeout=5000)
            assert not errors
        finally:
            page.close()
            viewer.close()
