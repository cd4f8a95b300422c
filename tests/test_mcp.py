"""``dw mcp``: an MCP client from the ``mcp`` SDK drives a virtual task through the server, over stdio
and over streamable HTTP (where the viewer token may only watch)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

from agent.desktops.virtual import VirtualDesktop  # noqa: E402
from agent.mcp_server import ACTION_TOOLS, tool_schemas  # noqa: E402
from policies.actions import action_json_schema  # noqa: E402
from policies.base import Observation  # noqa: E402
from policies.builtin import ScriptedPolicy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"screenshot", "click", "double_click", "drag", "move", "scroll", "type", "key", "wait", "state",
         "run_policy", "reset"}


def expert_click(task: str, seed: int, size=(1280, 720)) -> dict:
    """Where the scripted expert clicks on this task and seed (the same desktop the server renders)."""
    d = VirtualDesktop(task, seed=seed, size=size)
    p = ScriptedPolicy()
    p.reset(d.instruction)
    (action,) = p.act(Observation(d.observe(), d.instruction, d.cursor, (), d.oracle))
    return {"x": action.x, "y": action.y}


def payload(result) -> dict:
    return json.loads(result.content[-1].text)


def test_tool_schemas_come_from_the_action_types():
    tools = {t["name"]: t for t in tool_schemas(virtual=True)}
    assert set(tools) == TOOLS
    for name, (kind, _) in ACTION_TOOLS.items():
        props = action_json_schema(kind, with_type=False)["properties"]
        if name == "double_click":
            props = {k: v for k, v in props.items() if k != "count"}
        assert tools[name]["schema"]["properties"] == props
    assert "reset" not in {t["name"] for t in tool_schemas(virtual=False)}


def test_stdio_lists_tools_screenshots_and_clicks_the_right_button():
    async def main():
        params = StdioServerParameters(
            command=sys.executable, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)},
            args=["-m", "agent.cli", "mcp", "--desktop", "virtual", "--tasks", "click-button", "--policy", "scripted"])
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            assert tools["click"].input_schema["properties"]["x"]["maximum"] == 1

            shot = await session.call_tool("screenshot", {})
            assert not shot.is_error
            from PIL import Image

            img = Image.open(io.BytesIO(base64.b64decode(shot.content[0].data)))
            assert img.size == (1280, 720) and shot.content[0].mime_type == "image/png"
            assert payload(shot)["screen"] == {"width": 1280, "height": 720, "scale": 1.0}

            state = payload(await session.call_tool("state", {}))
            assert state["instruction"] == VirtualDesktop("click-button", seed=0, size=(1280, 720)).instruction
            assert state["success"] is None

            bad = await session.call_tool("click", {"x": 1.5, "y": 0.5})
            assert bad.is_error and "x" in bad.content[0].text

            clicked = await session.call_tool("click", expert_click("click-button", 0))
            assert not clicked.is_error, clicked.content[0].text
            assert payload(clicked)["success"] is True
            assert payload(clicked)["last_actions"][-1]["type"] == "click"

            # a new episode, handed to the fast policy
            reset = await session.call_tool("reset", {"seed": 3})
            assert payload(reset)["desktop"]["seed"] == 3 and payload(reset)["success"] is None
            ran = await session.call_tool("run_policy", {"max_seconds": 10})
            assert not ran.is_error, ran.content[0].text
            assert payload(ran)["success"] is True and payload(ran)["policy"] == "scripted"

    asyncio.run(asyncio.wait_for(main(), 60))


def _start_http(*extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "mcp", "--desktop", "virtual", "--tasks", "click-button",
         "--policy", "scripted", "--http", "0", "--http-token", "controller-secret",
         "--http-viewer-token", "viewer-secret", *extra],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"(http://127\.0\.0\.1:\d+/mcp)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("dw mcp --http did not start: " + "".join(lines))


def test_http_viewer_token_cannot_act_and_no_token_is_refused():
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    proc, url = _start_http()
    try:
        async def connect(token: str | None, calls):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with create_mcp_http_client(headers=headers) as http, \
                    streamable_http_client(url, http_client=http) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                return [await session.call_tool(name, args) for name, args in calls]

        async def main():
            target = expert_click("click-button", 0)
            shot, click, state = await connect("viewer-secret",
                                               [("screenshot", {"max_width": 320}), ("click", target), ("state", {})])
            assert not shot.is_error and payload(shot)["image"]["width"] == 320
            assert click.is_error and "viewer" in click.content[0].text
            assert payload(state)["success"] is None and payload(state)["last_actions"] == []

            (click,) = await connect("controller-secret", [("click", target)])
            assert not click.is_error and payload(click)["success"] is True

            async with httpx2.AsyncClient() as raw:
                r = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                assert r.status_code == 401
                r = await raw.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                   headers={"Authorization": "Bearer wrong-token"})
                assert r.status_code == 401

        asyncio.run(asyncio.wait_for(main(), 60))
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_flags_end_in_one_line():
    from agent.cli.main import main

    assert main(["mcp", "--desktop", "virtual", "--tasks", "no-such-task", "--policy", "scripted"]) == 2
    assert main(["mcp", "--desktop", "ftp://x", "--policy", "scripted"]) == 2
    assert main(["mcp", "--confirm", "--policy", "scripted"]) == 2
    assert main(["mcp", "--http", "0", "--http-token", "short", "--policy", "scripted"]) == 2


@pytest.mark.xvfb
def test_live_screen_keeps_the_safety_controls(xvfb):
    """Over MCP the live desktop refuses what `dw run` refuses, and the stop hotkey ends acting."""
    from agent.desktops.live import LiveDesktop
    from agent.mcp_server import DesktopTools, ToolError

    desktop = LiveDesktop(dry_run=True, fps=20, region=(0, 0, 0.5, 0.5), stop_hotkey="ctrl+alt+shift+q")
    tools = DesktopTools(desktop)
    try:
        assert tools.act("move", {"x": 0.25, "y": 0.25})["last_actions"][-1]["type"] == "move"
        with pytest.raises(ToolError, match="refused.*region"):
            tools.act("click", {"x": 0.9, "y": 0.9})
        with pytest.raises(ToolError, match="refused"):
            tools.act("key", {"keys": "alt+f4"})
        with pytest.raises(ToolError, match="no policy"):
            tools.run_policy("anything", 1)
        subprocess.run(["xdotool", "key", "ctrl+alt+shift+q"], env=xvfb.env, check=True)
        deadline = time.monotonic() + 5
        while tools.stopped is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tools.stopped and "stop-hotkey" in tools.stopped
        with pytest.raises(ToolError, match="stopped: stop-hotkey"):
            tools.act("move", {"x": 0.25, "y": 0.25})
        png, meta = tools.screenshot()  # watching goes on
        assert png[:4] == b"\x89PNG" and tools.state()["stopped"] == tools.stopped
    finally:
        tools.close()
