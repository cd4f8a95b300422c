"""``dw serve``: one desktop served over websockets to many clients (docs/protocol.md).

Shape of the server:

- one producer coroutine captures (``desktop.observe()`` on the *desktop thread*) and encodes (on the
  *encoder thread*) at the configured fps, once per frame for all clients: the video packet, and a
  JPEG picture only while some client asked for JPEG;
- every client has a sender task and two small queues: control messages (hello, ack, error, stats,
  applied actions) and frames (bounded, ``frame_queue`` deep). A client that cannot keep up loses
  frames, never the producer's time: video clients drop everything queued and wait for the next
  keyframe (which they request), JPEG clients keep the latest picture. Drops are counted per client
  and reported in ``stats``;
- actions from controller clients are validated with :func:`policies.actions.parse_action` and
  applied on the desktop thread (serialised with capture), then acknowledged and broadcast;
- static files of the browser viewer (``agent/web``) are served from ``/`` by ``process_request``.

Access: every websocket needs a token (controller or viewer), as ``Authorization: Bearer`` or
``?token=``; browser Origins must be same-origin or explicitly allowed; the Host header must name
this server (DNS-rebinding guard) when bound to a loopback address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import ipaddress
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.desktops import ActionRefused, Desktop, DesktopError
from agent.stats import percentiles
from agent.stream import protocol as P
from agent.stream.video import StreamEncoder, VideoUnavailable, jpeg_encode, open_stream_encoder
from capture import Frame
from policies.actions import Action, ActionError, parse_action

log = logging.getLogger("dw.stream")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8")}
WEB_DIR = Path(__file__).resolve().parent.parent / "web"  # package data of ``agent`` (pyproject: web/*)
WS_PATH = "/ws"
CONTROL_QUEUE = 512  # replies and broadcasts waiting for one client; past this it is closed as stuck
KEYFRAME_MIN_INTERVAL = 0.1  # seconds between forced keyframes, however many clients ask
STAT_WINDOW = 600  # timings kept per stage


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(eq=False)
class Client:
    ws: ServerConnection
    role: str
    id: int
    format: str = "video"
    synced: bool = False  # a video client can decode from here (it has received a keyframe)
    control: deque = field(default_factory=deque)
    frames: deque = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent_frames: int = 0
    sent_bytes: int = 0
    dropped: int = 0
    resyncs: int = 0
    dropped_control: int = 0
    actions: int = 0
    errors: int = 0
    closing: bool = False
    last_keyframe_request: float = 0.0
    joined: float = field(default_factory=time.monotonic)
    send_ns: deque = field(default_factory=lambda: deque(maxlen=STAT_WINDOW))

    def describe(self) -> dict:
        return {"id": self.id, "role": self.role, "format": self.format, "sent_frames": self.sent_frames,
                "sent_bytes": self.sent_bytes, "dropped": self.dropped, "resyncs": self.resyncs,
                "dropped_control": self.dropped_control, "queued": len(self.frames), "actions": self.actions,
                "errors": self.errors, "send": percentiles(list(self.send_ns)),
                "seconds": round(time.monotonic() - self.joined, 3)}


class StreamServer:
    """Serves ``desktop`` to websocket clients. Use :meth:`start`/:meth:`stop` inside a running loop,
    or :class:`ServerThread` to run it on its own thread."""

    def __init__(
        self,
        desktop: Desktop,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        viewer_token: str | None = None,
        fps: float = 10.0,
        allow_origins: tuple[str, ...] | list[str] = (),
        frame_queue: int = 2,
        max_message: int = P.MAX_MESSAGE_IN,
        video: bool = True,
        jpeg_quality: int = 80,
    ):
        if not (0 < fps <= 240):
            raise ValueError(f"fps must be within (0, 240], got {fps}")
        self.desktop = desktop
        self.host, self.port = host, port
        self.token = token or new_token()
        self.viewer_token = viewer_token or new_token()
        if hmac.compare_digest(self.token, self.viewer_token):
            raise ValueError("the controller and viewer tokens must differ")
        self.fps = float(fps)
        self.allow_origins = {o.rstrip("/") for o in allow_origins}
        self.frame_queue = max(1, int(frame_queue))
        self.max_message = int(max_message)
        self.want_video = video
        self.jpeg_quality = jpeg_quality
        self.clients: set[Client] = set()
        self._ids = itertools.count(1)
        self._desk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dw-desktop")
        self._enc = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dw-encode")
        self.encoder: StreamEncoder | None = None
        self.video_error: str | None = None
        self._server = None
        self._producer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._force_key = True
        self._last_forced = 0.0
        self._next_seq = 0  # the next capture's index (desktop thread only)
        self._blind = ""  # why the last capture failed ("" = it did not): actions wait for a frame
        self._local_users = 0  # in-process agents (serve --policy) that need frames without clients
        self._latest: tuple[Frame, int] | None = None  # (frame, seq) for in-process observers
        self._latest_cond = threading.Condition()
        self._state: dict[str, Any] = {}
        self.timings: dict[str, deque] = {s: deque(maxlen=STAT_WINDOW) for s in ("capture", "encode", "jpeg", "send")}
        self.counters = {"frames": 0, "keyframes": 0, "video_bytes": 0, "jpeg_bytes": 0, "connections": 0,
                         "refused_handshakes": 0, "actions": 0, "errors": 0, "dropped": 0, "clients_closed_stuck": 0}
        self.started = time.monotonic()
        self._closing = False

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.want_video:
            s = self.desktop.screen
            try:
                self.encoder = await self._loop.run_in_executor(
                    self._enc, open_stream_encoder, s.width, s.height, self.fps)
            except VideoUnavailable as e:
                self.video_error = str(e)
                log.warning("video unavailable, serving JPEG pictures only: %s", e)
        if self.encoder is not None and self.encoder.codec_string is None:
            # the codec string carries the level read from the first keyframe's parameter sets: prime it
            frame, _seq, _st = await self._loop.run_in_executor(self._desk, self._observe)
            pts = int(round(frame.t * 1000))
            await self._loop.run_in_executor(self._enc, lambda: self.encoder.encode(frame.pixels, pts, True))
        self._generation = self.encoder.generation if self.encoder is not None else 0
        self._state = await self._loop.run_in_executor(self._desk, self._snapshot)
        self._server = await serve(
            self._handler, self.host, self.port,
            process_request=self._process_request,
            compression=None,
            max_size=self.max_message,
            max_queue=16,
            write_limit=2**16,
            ping_interval=20, ping_timeout=20,
            server_header=None,
            logger=logging.getLogger("dw.stream.ws"),
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._producer = asyncio.create_task(self._produce())

    async def stop(self) -> None:
        self._closing = True
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._producer
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self.encoder is not None:
            await self._loop.run_in_executor(self._enc, self.encoder.close)
        self._desk.shutdown(wait=False)
        self._enc.shutdown(wait=False)
        with self._latest_cond:
            self._latest_cond.notify_all()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    # -- the handshake: static files, tokens, origins ----------------------------------------------
    def _refuse(self, status: HTTPStatus, text: str, extra: dict | None = None) -> Response:
        self.counters["refused_handshakes"] += 1
        headers = Headers({"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
                           "Connection": "close", **(extra or {})})
        body = (text + "\n").encode()
        headers["Content-Length"] = str(len(body))
        return Response(status.value, status.phrase, headers, body)

    def _host_ok(self, request: Request) -> bool:
        """Against DNS rebinding: on a loopback bind, the Host header must be a loopback name."""
        if not _is_loopback(self.host):
            return True
        host = request.headers.get("Host", "")
        name = urlsplit(f"//{host}").hostname or ""
        return _is_loopback(name)

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # non-browser clients send no Origin
        origin = origin.rstrip("/")
        if origin in self.allow_origins:
            return True
        host = request.headers.get("Host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def role_for(self, token: str | None) -> str | None:
        if not token:
            return None
        t = token.encode()
        is_ctl = hmac.compare_digest(t, self.token.encode())
        is_view = hmac.compare_digest(t, self.viewer_token.encode())
        return "controller" if is_ctl else "viewer" if is_view else None

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if not self._host_ok(request):
            return self._refuse(HTTPStatus.FORBIDDEN, "host not allowed")
        if not upgrade:
            return self._static(parts.path)
        if parts.path != WS_PATH:
            return self._refuse(HTTPStatus.NOT_FOUND, f"the websocket endpoint is {WS_PATH}")
        if not self._origin_ok(request):
            return self._refuse(HTTPStatus.FORBIDDEN, "origin not allowed (same-origin or --allow-origin only)")
        query = parse_qs(parts.query)
        token = None
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        elif query.get("token"):
            token = query["token"][0]
        if not token:
            return self._refuse(HTTPStatus.UNAUTHORIZED, "a token is required (Authorization: Bearer or ?token=)",
                                {"WWW-Authenticate": 'Bearer realm="dw"'})
        role = self.role_for(token)
        if role is None:
            return self._refuse(HTTPStatus.FORBIDDEN, "wrong token")
        fmt = (query.get("format") or [""])[0]
        if fmt and fmt not in P.FORMATS:
            return self._refuse(HTTPStatus.BAD_REQUEST, f"format must be one of {', '.join(P.FORMATS)}")
        connection.dw_role = role  # type: ignore[attr-defined]
        connection.dw_format = fmt or ("video" if self.encoder is not None else "jpeg")  # type: ignore[attr-defined]
        return None

    def _static(self, path: str) -> Response:
        entry = STATIC.get(path)
        if entry is None:
            return self._refuse(HTTPStatus.NOT_FOUND, "not found")
        name, ctype = entry
        body = (WEB_DIR / name).read_bytes()
        headers = Headers({"Content-Type": ctype, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                           "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                                                      "img-src 'self' blob:; style-src 'self' 'unsafe-inline'"})
        return Response(200, "OK", headers, body)

    # -- desktop thread ----------------------------------------------------------------------------
    def _snapshot(self) -> dict:
        d = self.desktop
        oracle = d.oracle
        return {"t": round(float(d.now()), 6), "cursor": list(d.cursor) if d.cursor is not None else None,
                "finished": bool(d.finished), "success": d.success, "instruction": d.instruction,
                "expert": oracle is not None and hasattr(oracle, "expert_actions"), "frame": self._next_seq}

    def _observe(self) -> tuple[Frame, int, dict]:
        try:
            frame = self.desktop.observe()
        except DesktopError as e:
            self._blind = str(e)
            raise
        self._blind = ""
        seq = self._next_seq
        self._next_seq += 1
        return frame, seq, self._snapshot()

    def _apply(self, action: Action) -> dict:
        if self._blind:  # nobody may act on a screen no one can see (the dead-man rule, served)
            raise ActionRefused(f"no fresh frame: {self._blind}")
        self.desktop.apply(action)
        return self._snapshot()

    def _expert(self) -> list[dict]:
        oracle = self.desktop.oracle
        if oracle is None or not hasattr(oracle, "expert_actions"):
            raise ActionRefused("this desktop has no expert (only virtual-desktop tasks do)")
        return [a.to_json() for a in oracle.expert_actions()]

    # -- producer ---------------------------------------------------------------------------------
    def request_keyframe(self) -> None:
        self._force_key = True

    def _encode(self, frame: Frame, seq: int, video: bool, jpeg: bool, key: bool, cap_us: int, cap_dur: int):
        out: list[tuple[bytes, bool, int]] = []
        pts = int(round(frame.t * 1000))
        if video and self.encoder is not None:
            t0 = time.perf_counter_ns()
            packets = self.encoder.encode(frame.pixels, pts, keyframe=key)
            dur = time.perf_counter_ns() - t0
            self.timings["encode"].append(dur)
            for data, _pts, is_key in packets:
                h = P.FrameHeader(P.KIND_VIDEO, is_key, seq, pts, cap_us, cap_dur // 1000, dur // 1000)
                out.append((h.pack() + data, is_key, P.KIND_VIDEO))
        if jpeg:
            t0 = time.perf_counter_ns()
            data = jpeg_encode(frame.pixels, self.jpeg_quality)
            dur = time.perf_counter_ns() - t0
            self.timings["jpeg"].append(dur)
            h = P.FrameHeader(P.KIND_JPEG, True, seq, pts, cap_us, cap_dur // 1000, dur // 1000)
            out.append((h.pack() + data, True, P.KIND_JPEG))
        return out

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        next_t = loop.time()
        while not self._closing:
            if not self.clients and not self._local_users:
                self._wake.clear()
                await self._wake.wait()
                next_t = loop.time()
                continue
            cap_us = time.time_ns() // 1000
            t0 = time.perf_counter_ns()
            try:
                frame, seq, state = await loop.run_in_executor(self._desk, self._observe)
            except DesktopError as e:
                log.error("capture failed: %s", e)
                self._broadcast({"type": "error", "field": "desktop", "message": f"capture failed: {e}"})
                await asyncio.sleep(1.0)
                continue
            cap_dur = time.perf_counter_ns() - t0
            self.timings["capture"].append(cap_dur)
            with self._latest_cond:
                self._latest = (frame, seq)
                self._latest_cond.notify_all()
            self._publish_state(state)
            video = any(c.format == "video" for c in self.clients) and self.encoder is not None
            jpeg = any(c.format == "jpeg" for c in self.clients)
            key = False
            now = time.monotonic()
            if video and self._force_key and now - self._last_forced >= KEYFRAME_MIN_INTERVAL:
                key, self._force_key, self._last_forced = True, False, now
            if video or jpeg:
                try:
                    msgs = await loop.run_in_executor(self._enc, self._encode, frame, seq, video, jpeg, key,
                                                      cap_us, cap_dur)
                except Exception as e:  # an encoder failure must not end the stream for JPEG clients
                    log.error("encoding failed: %s", e)
                    msgs = []
                    self._force_key = True
                self.counters["frames"] += 1
                if self.encoder is not None and self.encoder.generation != self._generation:
                    self._reconfigure()
                for data, is_key, kind in msgs:
                    if kind == P.KIND_VIDEO:
                        self.counters["video_bytes"] += len(data)
                        self.counters["keyframes"] += int(is_key)
                    else:
                        self.counters["jpeg_bytes"] += len(data)
                    self._distribute(data, is_key, kind)
            next_t += period
            delay = next_t - loop.time()
            if delay < -period:  # running behind: don't try to catch up with a burst
                next_t = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    def _distribute(self, data: bytes, is_key: bool, kind: int) -> None:
        want = "video" if kind == P.KIND_VIDEO else "jpeg"
        for c in self.clients:
            if c.format != want:
                continue
            if kind == P.KIND_VIDEO:
                if not c.synced:
                    if not is_key:
                        self.request_keyframe()
                        continue
                    c.synced = True
                if len(c.frames) >= self.frame_queue:
                    # too slow: everything queued is stale and the next delta can't be decoded without it
                    n = len(c.frames) + 1
                    c.frames.clear()
                    c.dropped += n
                    self.counters["dropped"] += n
                    c.resyncs += 1
                    c.synced = False
                    self.request_keyframe()
                    continue
            elif len(c.frames) >= self.frame_queue:
                c.frames.popleft()  # latest wins
                c.dropped += 1
                self.counters["dropped"] += 1
            c.frames.append(data)
            c.wake.set()

    def _reconfigure(self) -> None:
        """The encoder switched rungs mid-stream: video clients reconfigure and wait for its keyframe."""
        self._generation = self.encoder.generation
        msg = {"type": "video", "video": self.encoder.describe()}
        for c in self.clients:
            if c.format == "video":
                c.synced = False
                c.frames.clear()
            self._queue_control(c, msg)

    def _publish_state(self, state: dict) -> None:
        old = self._state
        self._state = state
        if (old.get("finished"), old.get("success"), old.get("instruction")) != (
                state["finished"], state["success"], state["instruction"]):
            self._broadcast({"type": "state", **state})

    # -- clients ----------------------------------------------------------------------------------
    def _queue_control(self, c: Client, msg: dict, droppable: bool = False) -> None:
        if len(c.control) >= CONTROL_QUEUE:
            if droppable:
                c.dropped_control += 1
                return
            if not c.closing:
                c.closing = True
                self.counters["clients_closed_stuck"] += 1
                asyncio.ensure_future(c.ws.close(1008, "not reading replies"))
            return
        c.control.append(P.dumps(msg))
        c.wake.set()

    def _broadcast(self, msg: dict) -> None:
        for c in list(self.clients):
            self._queue_control(c, msg, droppable=True)

    def _broadcast_applied(self, client_id: int, action: Action, state: dict) -> None:
        """Every client sees each applied action (the viewer's overlay); viewers never see typed text."""
        full = action.to_json()
        redacted = {**full, "text": f"<{len(full['text'])} characters>"} if "text" in full else full
        for c in list(self.clients):
            self._queue_control(c, {"type": "applied", "client": client_id,
                                    "action": full if c.role == "controller" else redacted,
                                    "cursor": state["cursor"], "t": state["t"]}, droppable=True)

    async def _sender(self, c: Client) -> None:
        ws = c.ws
        while True:
            await c.wake.wait()
            c.wake.clear()
            while c.control or c.frames:
                if c.control:
                    await ws.send(c.control.popleft())
                    continue
                data = c.frames.popleft()
                t0 = time.perf_counter_ns()
                await ws.send(data)
                dt = time.perf_counter_ns() - t0
                c.send_ns.append(dt)
                self.timings["send"].append(dt)
                c.sent_frames += 1
                c.sent_bytes += len(data)

    def hello(self, c: Client) -> dict:
        s = self.desktop.screen
        st = self._state
        return {
            "type": "hello", "protocol": P.PROTOCOL_VERSION, "role": c.role, "client": c.id,
            "format": c.format,
            "screen": s.to_json(), "fps": self.fps,
            "video": self.encoder.describe() if self.encoder is not None else None,
            "video_error": self.video_error,
            "jpeg": True,
            "desktop": {"info": _info(self.desktop), "instruction": st.get("instruction", ""),
                        "finished": st.get("finished", False), "success": st.get("success"),
                        "cursor": st.get("cursor"), "t": st.get("t", 0.0), "expert": st.get("expert", False)},
            "header": {"size": P.HEADER_SIZE, "magic": P.MAGIC.decode(), "version": P.PROTOCOL_VERSION},
            "limits": {"max_message_in": self.max_message, "frame_queue": self.frame_queue},
            "server_time_us": time.time_ns() // 1000,
        }

    async def _handler(self, ws: ServerConnection) -> None:
        c = Client(ws, getattr(ws, "dw_role", "viewer"), next(self._ids), getattr(ws, "dw_format", "none"))
        self.counters["connections"] += 1
        self._queue_control(c, self.hello(c))
        self.clients.add(c)
        self.request_keyframe()
        self._wake.set()
        sender = asyncio.create_task(self._sender(c))
        reader = asyncio.create_task(self._read(c))
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.clients.discard(c)
            for task in (sender, reader):
                task.cancel()
            for task in (sender, reader):
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                    await task
            c.frames.clear()
            c.control.clear()

    async def _read(self, c: Client) -> None:
        async for message in c.ws:
            if not isinstance(message, str):
                self._error(c, None, "message", "binary messages are not accepted from clients; send JSON text")
                continue
            try:
                msg = P.parse_client_message(message)
            except P.ProtocolError as e:
                self._error(c, None, e.field, str(e))
                continue
            await self._on_message(c, msg)

    def _error(self, c: Client, mid: Any, fieldname: str, message: str) -> None:
        c.errors += 1
        self.counters["errors"] += 1
        out = {"type": "error", "field": fieldname, "message": message}
        if mid is not None:
            out["id"] = mid
        self._queue_control(c, out)

    async def _on_message(self, c: Client, msg: dict) -> None:
        kind, mid = msg["type"], msg.get("id")
        loop = asyncio.get_running_loop()
        if kind == "keyframe":
            now = time.monotonic()
            if now - c.last_keyframe_request < 0.5:  # one client may not make everyone's stream all keyframes
                return
            c.last_keyframe_request = now
            self.request_keyframe()
            if c.format == "video":
                c.synced = False
                c.frames.clear()
        elif kind == "stats":
            self._queue_control(c, {"type": "stats", "id": mid, **self.stats(c)})
        elif kind == "state":
            self._queue_control(c, {"type": "state", "id": mid, **self._state})
        elif kind == "subscribe":
            fmt = msg.get("format")
            if fmt not in P.FORMATS:
                return self._error(c, mid, "format", f"must be one of {', '.join(P.FORMATS)}, got {str(fmt)[:40]!r}")
            if fmt == "video" and self.encoder is None:
                return self._error(c, mid, "format", f"video is unavailable on this server ({self.video_error}); "
                                   "subscribe to jpeg")
            c.format, c.synced = fmt, False
            c.frames.clear()
            if fmt == "video":
                self.request_keyframe()
            self._wake.set()
            self._queue_control(c, {"type": "subscribed", "id": mid, "format": fmt})
        elif kind in ("action", "expert"):
            if c.role != "controller":
                return self._error(c, mid, "role", f"a viewer cannot send {kind!r} (use the controller token)")
            if kind == "expert":
                try:
                    actions = await loop.run_in_executor(self._desk, self._expert)
                except ActionRefused as e:
                    return self._error(c, mid, "expert", str(e))
                except Exception as e:
                    return self._error(c, mid, "desktop", f"{type(e).__name__}: {e}")
                return self._queue_control(c, {"type": "expert", "id": mid, "actions": actions})
            try:
                action = parse_action(msg.get("action"))
            except ActionError as e:
                return self._error(c, mid, e.field if e.field == "action" else f"action.{e.field}", str(e))
            try:
                state = await loop.run_in_executor(self._desk, self._apply, action)
            except ActionRefused as e:
                return self._error(c, mid, "action", f"refused: {e}")
            except DesktopError as e:
                return self._error(c, mid, "desktop", str(e))
            except Exception as e:  # a desktop bug must not take the server down
                log.exception("apply failed")
                return self._error(c, mid, "desktop", f"{type(e).__name__}: {e}")
            c.actions += 1
            self.counters["actions"] += 1
            self._queue_control(c, {"type": "ack", "id": mid, **state})
            self._broadcast_applied(c.id, action, state)
            self._publish_state(state)

    # -- in-process use (serve --policy, tests) ------------------------------------------------------
    def apply_local(self, action: Action) -> dict:
        """Apply an action from this process (any thread), with the same ack semantics and broadcast."""
        state = self._desk.submit(self._apply, action).result()
        self.counters["actions"] += 1

        def announce() -> None:
            self._broadcast_applied(0, action, state)
            self._publish_state(state)

        self._loop.call_soon_threadsafe(announce)
        return state

    def expert_local(self) -> list[Action]:
        return [parse_action(a) for a in self._desk.submit(self._expert).result()]

    def wait_frame(self, after: int, timeout: float = 10.0) -> tuple[Frame, int]:
        """The first captured frame with index >= ``after`` (blocks; any thread)."""
        deadline = time.monotonic() + timeout
        with self._latest_cond:
            while self._latest is None or self._latest[1] < after:
                left = deadline - time.monotonic()
                if left <= 0 or self._closing:
                    raise DesktopError(f"no frame from the served desktop within {timeout} s")
                self._latest_cond.wait(left)
            return self._latest

    def hold(self, on: bool) -> None:
        """Keep capturing without clients (an in-process agent needs frames)."""
        def change() -> None:
            self._local_users += 1 if on else -1
            self._wake.set()

        self._loop.call_soon_threadsafe(change)

    @property
    def state(self) -> dict:
        return dict(self._state)

    # -- stats ------------------------------------------------------------------------------------
    def stats(self, you: Client | None = None) -> dict:
        up = time.monotonic() - self.started
        out = {
            "stages": {k: percentiles(list(v)) for k, v in self.timings.items()},
            "counters": dict(self.counters),
            "uptime_s": round(up, 3),
            "fps": self.fps,
            "clients": [c.describe() for c in sorted(self.clients, key=lambda c: c.id)],
            "video_bytes_per_s": round(self.counters["video_bytes"] / up, 1) if up > 0 else 0.0,
        }
        if you is not None:
            out["you"] = you.describe()
        return out


def _info(desktop: Desktop) -> dict:
    fn = getattr(desktop, "info", None)
    try:
        return dict(fn()) if callable(fn) else {}
    except Exception:
        return {}


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class ServerThread:
    """Runs a :class:`StreamServer` on its own thread and event loop (tests, benchmarks, ``serve --policy``)."""

    def __init__(self, server: StreamServer):
        self.server = server
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dw-serve", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.run_until_complete(_cancel_all())
        self.loop.close()

    def start(self, timeout: float = 120.0) -> StreamServer:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the stream server did not start in time")
        if self._error is not None:
            raise self._error
        return self.server

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(15)

    def __enter__(self) -> StreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
