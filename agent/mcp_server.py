"""One desktop as MCP tools (the Model Context Protocol, through the ``mcp`` SDK): ``dw mcp``.

Any MCP client (an LLM agent) sees the desktop as tools: ``screenshot``, ``click``,
``double_click``, ``drag``, ``move``, ``scroll``, ``type``, ``key``, ``wait``, ``state``,
``run_policy`` (hand a step to the fast policy: it runs the one loop until it says ``done``, the
task ends, or ``max_seconds`` pass) and, on the virtual desktop, ``reset``.

The action tools' input schemas are the actions' own JSON Schema
(:func:`policies.actions.action_json_schema`), and every call is parsed by
:func:`policies.actions.parse_action`: coordinates are normalised to [0, 1] over the screen, as
everywhere in the runtime. Actions go through the desktop's ``apply``, so a live desktop's safety
controls (allowed region, deny list, rate limit, dry run, failsafe, dead-man, stop hotkey) hold for
an MCP client exactly as for ``dw run``; a refused action is a tool error naming the rule. A stop
(the hotkey, the failsafe, a lost desktop) ends acting for good: every later action tool answers
with the reason. Tools run one at a time on a worker thread (a lock), never on the event loop.

Transports: stdio (the client started us; it is trusted as the user who ran it) and streamable HTTP
bound to 127.0.0.1, where every request needs ``Authorization: Bearer <token>``: the controller
token may act, the viewer token may only call ``screenshot`` and ``state`` (the rule of
``dw serve``).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.desktops import ActionRefused, DesktopError
from policies.actions import Action, ActionError, action_json_schema, parse_action

log = logging.getLogger("digital_worker.mcp")

WATCH_TOOLS = frozenset({"screenshot", "state"})
ROLE_CONTROLLER, ROLE_VIEWER = "controller", "viewer"
MAX_POLICY_SECONDS = 600.0
DEFAULT_POLICY_SECONDS = 30.0
DEFAULT_MAX_WIDTH = 1280
SERVER_NAME = "digital-worker"

# tool name -> (action type, description); the input schema is that action's own schema.
ACTION_TOOLS: dict[str, tuple[str, str]] = {
    "click": ("click", "Click at normalised (x, y): 0,0 is the screen's top-left, 1,1 its bottom-right."),
    "double_click": ("click", "Double-click at normalised (x, y)."),
    "drag": ("drag", "Press at (x, y), move to (x2, y2), release; all normalised."),
    "move": ("move", "Move the pointer to normalised (x, y) without clicking."),
    "scroll": ("scroll", "Scroll at normalised (x, y) by whole notches: dy > 0 down, dx > 0 right."),
    "type": ("type", "Type text into the focused control."),
    "key": ("key", "Press and release a key combo such as 'enter' or 'ctrl+shift+t'."),
    "wait": ("wait", "Wait this many seconds (the desktop keeps running)."),
}


def tool_schemas(*, virtual: bool) -> list[dict[str, Any]]:
    """Every tool's name, description and JSON input schema (annotations: read-only or not)."""
    tools: list[dict[str, Any]] = [
        {"name": "screenshot", "read_only": True,
         "description": "The screen now, as a PNG, with its geometry. Coordinates for the action tools "
                        "are normalised to [0, 1] over this picture, whatever its size.",
         "schema": {"type": "object", "additionalProperties": False, "properties": {
             "max_width": {"type": "integer", "minimum": 64, "maximum": 16384, "default": DEFAULT_MAX_WIDTH,
                           "description": "downscale the picture to at most this width (pixels)"}}}},
        {"name": "state", "read_only": True,
         "description": "The desktop's state: instruction, pointer, screen geometry, clock, whether the "
                        "task finished and how, the last actions, and whether acting was stopped.",
         "schema": {"type": "object", "additionalProperties": False, "properties": {}}},
    ]
    for name, (kind, desc) in ACTION_TOOLS.items():
        schema = action_json_schema(kind, with_type=False)
        if name == "double_click":
            schema["properties"] = {k: v for k, v in schema["properties"].items() if k != "count"}
        schema.pop("title", None)
        schema.pop("description", None)
        tools.append({"name": name, "read_only": False, "description": desc, "schema": schema})
    tools.append({
        "name": "run_policy", "read_only": False,
        "description": "Hand the next step to the fast on-screen policy: it watches the screen and acts "
                       "until it says done, the task ends, or max_seconds pass. Returns how it stopped.",
        "schema": {"type": "object", "additionalProperties": False, "properties": {
            "instruction": {"type": "string", "maxLength": 1000,
                            "description": "what to do, e.g. 'click the OK button' (default: the task's)"},
            "max_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_POLICY_SECONDS,
                            "default": DEFAULT_POLICY_SECONDS}}}})
    if virtual:
        tools.append({
            "name": "reset", "read_only": False,
            "description": "Start a new episode on the virtual desktop (a task and seed from the served list).",
            "schema": {"type": "object", "additionalProperties": False, "properties": {
                "task": {"type": "string"}, "seed": {"type": "integer", "minimum": 0}}}})
    return tools


class ToolError(Exception):
    """A tool call that failed in a way the client should read (refused, bad argument, stopped)."""


class DesktopTools:
    """The desktop behind the tools; every method is blocking and runs under one lock.

    ``load_policy``: ``() -> Policy`` for ``run_policy`` (called once, on first use).
    ``reset_desktop``: ``(task, seed) -> Desktop`` (virtual desktops only), ``tasks`` the allowed ones.
    """

    def __init__(self, desktop, *, load_policy: Callable[[], Any] | None = None,
                 reset_desktop: Callable[[str | None, int | None], Any] | None = None):
        self.desktop = desktop
        self._load_policy = load_policy
        self._policy = None
        self._reset_desktop = reset_desktop
        self._lock = threading.Lock()
        self._agent = None
        self.stopped: str | None = None
        self.history: deque[dict] = deque(maxlen=8)
        if hasattr(desktop, "on_stop"):
            desktop.on_stop = self.stop

    @property
    def virtual(self) -> bool:
        return self._reset_desktop is not None

    def stop(self, reason: str = "stopped") -> None:
        """Stop acting for good (the stop hotkey calls this); a running policy ends after its step."""
        self.stopped = self.stopped or reason
        agent = self._agent
        if agent is not None:
            agent.stop(reason)

    def close(self) -> None:
        self.desktop.close()

    # -- tools -----------------------------------------------------------------------------------
    def screenshot(self, max_width: int | None = DEFAULT_MAX_WIDTH) -> tuple[bytes, dict]:
        from PIL import Image

        with self._lock:
            frame = self._observe()
        rgb = Image.fromarray(frame.pixels[:, :, 2::-1])
        if max_width and rgb.width > max_width:
            rgb = rgb.resize((max_width, max(1, round(rgb.height * max_width / rgb.width))), Image.BILINEAR)
        buf = io.BytesIO()
        rgb.save(buf, format="PNG", compress_level=1)
        s = frame.screen
        meta = {"screen": {"width": s.width, "height": s.height, "scale": s.scale},
                "image": {"width": rgb.width, "height": rgb.height}, "t": frame.t, "frame": frame.index,
                "coordinates": "normalised: x = pixel_x / image_width, y = pixel_y / image_height"}
        return buf.getvalue(), meta

    def state(self) -> dict:
        with self._lock:
            return self._state()

    def act(self, tool: str, arguments: dict) -> dict:
        kind = ACTION_TOOLS[tool][0]
        args = dict(arguments)
        if tool == "double_click":
            if "count" in args:
                raise ToolError("count: double_click takes no count (use click with count)")
            args["count"] = 2
        try:
            action = parse_action({"type": kind, **args})
        except ActionError as e:
            raise ToolError(f"bad argument {e}") from None
        with self._lock:
            self._check_stopped()
            self._apply(action)
            return self._state()

    def run_policy(self, instruction: str | None = None, max_seconds: float = DEFAULT_POLICY_SECONDS) -> dict:
        from agent.cli.util import NO_EFFECT
        from agent.loop import Agent

        if instruction is not None and not isinstance(instruction, str):
            raise ToolError("instruction: must be a string")
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float) \
                or not 0 < max_seconds <= MAX_POLICY_SECONDS:
            raise ToolError(f"max_seconds: must be within (0, {MAX_POLICY_SECONDS:g}], got {max_seconds!r}")
        if self._load_policy is None:
            raise ToolError("no policy: this server was started without one")
        with self._lock:
            self._check_stopped()
            if self._policy is None:
                self._policy = self._load_policy()
            # a stuck policy (the same actions, nothing drawn) ends the step: reason "no-effect"
            agent = Agent(self.desktop, self._policy, instruction=instruction or None, max_seconds=max_seconds,
                          max_no_effect=NO_EFFECT)
            self._agent = agent
            try:
                res = agent.run()
            finally:
                self._agent = None
            if res.reason.startswith("desktop-error"):
                self.stopped = self.stopped or res.reason
            self.history.append({"run_policy": instruction or self.desktop.instruction, "reason": res.reason})
            out = res.to_json()
            out["policy"] = getattr(self._policy, "name", "?")
            out["state"] = self._state()
            return out

    def reset(self, task: str | None = None, seed: int | None = None) -> dict:
        if self._reset_desktop is None:
            raise ToolError("reset: only the virtual desktop can be reset")
        with self._lock:
            try:
                new = self._reset_desktop(task, seed)
            except ValueError as e:
                raise ToolError(str(e)) from None
            self.desktop.close()
            self.desktop = new
            self.history.clear()
            self.stopped = None
            return self._state()

    # -- under the lock --------------------------------------------------------------------------
    def _check_stopped(self) -> None:
        if self.stopped:
            raise ToolError(f"stopped: {self.stopped}; this server takes no more actions")

    def _observe(self):
        try:
            return self.desktop.observe()
        except DesktopError as e:
            self.stopped = self.stopped or f"desktop error: {e}"
            raise ToolError(f"desktop error: {e}") from None

    def _apply(self, action: Action) -> None:
        try:
            self.desktop.apply(action)
        except ActionRefused as e:
            self.history.append({"refused": action.to_json(), "reason": str(e)})
            raise ToolError(f"refused: {e}") from None
        except DesktopError as e:
            self.stopped = self.stopped or f"desktop error: {e}"
            raise ToolError(f"desktop error: {e}") from None
        self.history.append(action.to_json())

    def _state(self) -> dict:
        d = self.desktop
        s = d.screen
        cursor = d.cursor
        return {
            "instruction": d.instruction,
            "cursor": None if cursor is None else [round(cursor[0], 6), round(cursor[1], 6)],
            "screen": {"width": s.width, "height": s.height, "scale": s.scale},
            "t": round(d.now(), 6),
            "finished": bool(d.finished),
            "success": d.success,
            "desktop": d.info(),
            "last_actions": list(self.history),
            "stopped": self.stopped,
        }


# -- the MCP server --------------------------------------------------------------------------------

def build_server(tools: DesktopTools, *, http: bool = False):
    """The ``mcp`` low-level Server exposing ``tools``. With ``http``, each call's role is read from
    the HTTP request our token middleware marked; a call without one is treated as a viewer's."""
    import anyio.to_thread
    from mcp import types
    from mcp.server import Server

    specs = {t["name"]: t for t in tool_schemas(virtual=tools.virtual)}
    listed = [types.Tool(name=t["name"], description=t["description"], input_schema=t["schema"],
                         annotations=types.ToolAnnotations(read_only_hint=t["read_only"],
                                                           destructive_hint=not t["read_only"]))
              for t in specs.values()]

    def text(obj: Any) -> types.TextContent:
        return types.TextContent(type="text", text=obj if isinstance(obj, str) else json.dumps(obj))

    def error(msg: str) -> types.CallToolResult:
        return types.CallToolResult(content=[text(msg)], is_error=True)

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=listed)

    def call(name: str, args: dict) -> types.CallToolResult:
        if name == "screenshot":
            png, meta = tools.screenshot(args.get("max_width", DEFAULT_MAX_WIDTH))
            return types.CallToolResult(content=[
                types.ImageContent(type="image", data=base64.b64encode(png).decode(), mime_type="image/png"),
                text(meta)], structured_content=meta)
        if name == "state":
            out = tools.state()
        elif name in ACTION_TOOLS:
            out = tools.act(name, args)
        elif name == "run_policy":
            out = tools.run_policy(args.get("instruction"), args.get("max_seconds", DEFAULT_POLICY_SECONDS))
        elif name == "reset":
            out = tools.reset(args.get("task"), args.get("seed"))
        else:  # pragma: no cover - filtered below
            raise ToolError(f"unknown tool {name!r}")
        return types.CallToolResult(content=[text(out)], structured_content=out)

    async def on_call_tool(ctx, params) -> types.CallToolResult:
        name, args = params.name, params.arguments or {}
        if name not in specs:
            return error(f"unknown tool {name!r}; tools: {', '.join(specs)}")
        if not isinstance(args, dict):
            return error("arguments must be a JSON object")
        unknown = sorted(set(args) - set(specs[name]["schema"].get("properties", {})))
        if unknown:
            return error(f"{unknown[0]}: unknown argument for {name}")
        if http and name not in WATCH_TOOLS:
            scope = getattr(getattr(ctx, "request", None), "scope", None) or {}
            if scope.get("dw.role") != ROLE_CONTROLLER:
                return error(f"{name}: the viewer token may only watch (screenshot, state); "
                             "acting needs the controller token")
        try:
            return await anyio.to_thread.run_sync(call, name, args)
        except ToolError as e:
            return error(str(e))

    return Server(SERVER_NAME, version=_version(), on_list_tools=on_list_tools, on_call_tool=on_call_tool,
                  instructions="A computer desktop as tools. Take a screenshot, then act with normalised "
                               "coordinates (0..1 over the screen). run_policy hands a step to a fast local "
                               "policy.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digital-worker")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "0"


async def serve_stdio(tools: DesktopTools) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(tools)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


class TokenGate:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``; the token's role
    is written into the request scope (``dw.role``) for the tool handler. 401 otherwise."""

    def __init__(self, app, token: str, viewer_token: str):
        self.app = app
        self.roles = {token: ROLE_CONTROLLER, viewer_token: ROLE_VIEWER}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        role = next((r for t, r in self.roles.items() if given and secrets.compare_digest(given, t)), None)
        if role is None:
            body = b'{"error": "a token is required: Authorization: Bearer <controller or viewer token>"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        scope["dw.role"] = role
        await self.app(scope, receive, send)


async def serve_http(tools: DesktopTools, port: int, token: str, viewer_token: str,
                     on_ready: Callable[[str], None] | None = None) -> None:
    """Streamable HTTP at ``http://127.0.0.1:PORT/mcp`` (only this machine), behind the tokens."""
    import uvicorn

    server = build_server(tools, http=True)
    app = TokenGate(server.streamable_http_app(host="127.0.0.1"), token, viewer_token)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    userver = uvicorn.Server(config)

    async def announce() -> None:
        import anyio

        while not userver.started:
            await anyio.sleep(0.02)
        real = userver.servers[0].sockets[0].getsockname()[1]
        if on_ready is not None:
            on_ready(f"http://127.0.0.1:{real}/mcp")

    import anyio

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce)
        await userver.serve()
        tg.cancel_scope.cancel()
