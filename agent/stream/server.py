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
this server (DNS-rebinding guard) when bound to a loopback address. The checks are
:mod:`agent.stream.http`.

Limits (docs/protocol.md, Limits): a send timeout per client, reply and frame queues bounded in
bytes, caps on connections (total and per address), an idle timeout, an action rate limit and a
``wait`` cap for remote controllers. Every button and key a controller pressed is released when it
disconnects and when the server stops (``release_input`` where the desktop has it; elsewhere a
``mouse_up`` for every button a ``mouse_down`` left pressed).

An in-process policy (``dw serve --policy``) is steered with ``policy`` messages: a controller may
pause and resume it and change its instruction (:mod:`agent.stream.steering`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.desktops import ActionRefused, Desktop, DesktopError
from agent.desktops.executor import RateLimiter
from agent.stats import percentiles
from agent.stream import http as H
from agent.stream import protocol as P
from agent.stream.steering import PolicyControl, check_instruction
from agent.stream.video import StreamEncoder, VideoUnavailable, jpeg_encode, open_stream_encoder
from capture import Frame
from policies.actions import Action, ActionError, Click, Drag, Key, MouseDown, MouseUp, Wait, parse_action

log = logging.getLogger("dw.stream")

STATIC = H.STATIC
WEB_DIR = H.WEB_DIR
WS_PATH = H.WS_PATH
CONTROL_QUEUE = 512  # replies and broadcasts waiting for one client; past this it is closed as stuck
KEYFRAME_MIN_INTERVAL = 0.1  # seconds between forced keyframes, however many clients ask
STAT_WINDOW = 600  # timings kept per stage
STATS_CACHE_S = 0.1  # the server-wide part of a ``stats`` reply is computed at most this often

# Limits (docs/protocol.md, Limits); every one is a StreamServer keyword and a ``dw serve`` option.
SEND_TIMEOUT = 15.0  # s a single send may wait for a client to read; past it the client is dropped
CONTROL_QUEUE_BYTES = 256 << 10  # replies and broadcasts waiting for one client; past it: closed (1008)
FRAME_QUEUE_BYTES = 16 << 20  # frames waiting for one client (one frame is always let in)
MAX_CONNECTIONS = 64  # websockets at once
MAX_CONNECTIONS_PER_ADDRESS = 32  # websockets at once from one peer address
IDLE_TIMEOUT = 300.0  # s without a message from the client and without anything sent to it
ACTION_RATE = 60.0  # actions per second from all remote controllers together (any one-second window)
MAX_WAIT = 10.0  # s: the longest ``wait`` a remote controller may ask for


def new_token() -> str:
    return secrets.token_urlsafe(24)


_is_loopback = H.is_loopback


@dataclass(eq=False)
class Client:
    ws: ServerConnection
    role: str
    id: int
    format: str = "video"
    synced: bool = False  # a video client can decode from here (it has received a keyframe)
    address: str = ""
    control: deque = field(default_factory=deque)
    frames: deque = field(default_factory=deque)
    control_bytes: int = 0
    frame_bytes: int = 0
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
    last_in: float = field(default_factory=time.monotonic)  # a message arrived
    last_out: float = field(default_factory=time.monotonic)  # a send completed
    sending_since: float | None = None  # a send in progress began (monotonic)
    send_ns: deque = field(default_factory=lambda: deque(maxlen=STAT_WINDOW))

    def describe(self) -> dict:
        return {"id": self.id, "role": self.role, "format": self.format, "sent_frames": self.sent_frames,
                "sent_bytes": self.sent_bytes, "dropped": self.dropped, "resyncs": self.resyncs,
                "dropped_control": self.dropped_control, "queued": len(self.frames),
                "queued_bytes": self.frame_bytes + self.control_bytes, "actions": self.actions,
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
        send_timeout: float = SEND_TIMEOUT,
        control_queue_bytes: int = CONTROL_QUEUE_BYTES,
        frame_queue_bytes: int = FRAME_QUEUE_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
        idle_timeout: float | None = IDLE_TIMEOUT,
        action_rate: float | None = ACTION_RATE,
        max_wait: float = MAX_WAIT,
        ssl_context: Any = None,
        audit: Any = None,
    ):
        if not (0 < fps <= 240):
            raise ValueError(f"fps must be within (0, 240], got {fps}")
        for name, v in (("send_timeout", send_timeout), ("max_wait", max_wait)):
            if not (v >= 0 and v < float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {v}")
        if send_timeout <= 0:
            raise ValueError(f"send_timeout must be positive, got {send_timeout}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive (or None), got {idle_timeout}")
        if min(control_queue_bytes, frame_queue_bytes, max_connections, max_connections_per_address) < 1:
            raise ValueError("queue sizes and connection caps must be at least 1")
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
        self.send_timeout = float(send_timeout)
        self.control_queue_bytes = int(control_queue_bytes)
        self.frame_queue_bytes = int(frame_queue_bytes)
        self.max_connections = int(max_connections)
        self.max_connections_per_address = int(max_connections_per_address)
        self.idle_timeout = float(idle_timeout) if idle_timeout else None
        self.action_rate = float(action_rate) if action_rate else None
        self._limiter = RateLimiter(self.action_rate) if self.action_rate else None
        self.max_wait = float(max_wait)
        self.ssl_context = ssl_context
        self.audit = audit  # agent.stream.audit.AuditLog or None
        self.clients: set[Client] = set()
        self._by_address: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()  # background tasks (closes, restarts): kept until done
        self._stats_cache: tuple[float, dict] | None = None
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
        self._held: set[str] = set()  # mouse buttons a mouse_down left pressed (desktop thread only)
        self.policy: PolicyControl | None = None  # the in-process policy's switches (attach_policy)
        self.timings: dict[str, deque] = {s: deque(maxlen=STAT_WINDOW) for s in ("capture", "encode", "jpeg", "send")}
        self.counters = {"frames": 0, "keyframes": 0, "video_bytes": 0, "jpeg_bytes": 0, "connections": 0,
                         "refused_handshakes": 0, "actions": 0, "errors": 0, "dropped": 0, "clients_closed_stuck": 0,
                         "clients_closed_send_timeout": 0, "clients_closed_idle": 0, "rate_limited": 0,
                         "producer_errors": 0}
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
            ssl=self.ssl_context,
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
        self._start_producer()
        if self.audit is not None:
            self.audit.write("start", url=self.url, desktop=_info(self.desktop))

    def _background(self, coro) -> asyncio.Task:
        """A task the server keeps a reference to until it is done (the loop holds only weak ones)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_producer(self) -> None:
        self._producer = asyncio.create_task(self._produce())
        self._producer.add_done_callback(self._producer_done)

    def _producer_done(self, task: asyncio.Task) -> None:
        """The producer ends only when the server stops; if it dies anyway, say so and start it again."""
        if self._closing or task.cancelled():
            return
        e = task.exception()
        self.counters["producer_errors"] += 1
        log.error("the frame producer died (%s: %s); restarting it", type(e).__name__, e,
                  exc_info=(type(e), e, e.__traceback__) if e is not None else None)
        self._broadcast({"type": "error", "field": "desktop",
                         "message": f"frame producer failed: {type(e).__name__}: {e}; restarted"})
        self._loop.call_later(1.0, lambda: None if self._closing else self._start_producer())

    async def stop(self) -> None:
        self._closing = True
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._producer
        with contextlib.suppress(Exception):  # whatever the controllers held is let go
            await asyncio.wait_for(self._loop.run_in_executor(self._desk, self._release_input), 5)
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
        if self.audit is not None:
            self.audit.write("stop", counters=dict(self.counters))
            self.audit.close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'wss' if self.ssl_context else 'ws'}://{host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}/"

    # -- the handshake: static files, tokens, origins ----------------------------------------------
    def _refuse(self, status: HTTPStatus, text: str, extra: dict | None = None) -> Response:
        self.counters["refused_handshakes"] += 1
        headers = Headers({"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
                           "Connection": "close", **(extra or {})})
        body = (text + "\n").encode()
        headers["Content-Length"] = str(len(body))
        return Response(status.value, status.phrase, headers, body)

    def role_for(self, token: str | None) -> str | None:
        return H.role_for(token, self.token, self.viewer_token)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            return self._check_request(connection, request)
        except H.Refusal as r:
            if self.audit is not None:
                self.audit.write("refused", address=_peer(connection), status=r.status.value, reason=r.text,
                                 path=request.path.split("?", 1)[0][:200])
            return self._refuse(r.status, r.text, r.headers)
        except Exception:  # a bug here must be a 500 without a traceback to the client, and logged once
            log.exception("handshake check failed")
            return self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        H.check_host(headers.get("Host"), self.host)
        if "websocket" not in headers.get("Upgrade", "").lower():
            body, extra = H.static_file(request.path)
            return Response(200, "OK", Headers(extra), body)
        accepted = H.check_websocket(request.path, headers, bound_host=self.host, allow_origins=self.allow_origins,
                                     controller_token=self.token, viewer_token=self.viewer_token,
                                     formats=P.FORMATS)
        self._check_caps(_peer(connection))
        connection.dw_role = accepted.role  # type: ignore[attr-defined]
        connection.dw_format = accepted.format or ("video" if self.encoder is not None else "jpeg")  # type: ignore[attr-defined]
        return None

    def _check_caps(self, address: str) -> None:
        if len(self.clients) >= self.max_connections:
            raise H.Refusal(HTTPStatus.SERVICE_UNAVAILABLE,
                            f"too many connections (at most {self.max_connections})", {"Retry-After": "5"})
        if self._by_address.get(address, 0) >= self.max_connections_per_address:
            raise H.Refusal(HTTPStatus.TOO_MANY_REQUESTS,
                            f"too many connections from {address} (at most {self.max_connections_per_address})",
                            {"Retry-After": "5"})

    def _static(self, path: str) -> Response:
        try:
            body, extra = H.static_file(path)
        except H.Refusal as r:
            return self._refuse(r.status, r.text)
        return Response(200, "OK", Headers(extra), body)

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
        if isinstance(action, MouseDown):
            self._held.add(action.button)
        self.desktop.apply(action)
        if isinstance(action, MouseUp | Click | Drag):
            self._held.discard(action.button)
        return self._snapshot()

    def _release_input(self) -> list[str]:
        """Let go of every button and key held on the desktop: its own ``release_input`` (live screens),
        else a ``mouse_up`` where the pointer is for each button a ``mouse_down`` left pressed."""
        release = getattr(self.desktop, "release_input", None)
        held, self._held = sorted(self._held), set()
        try:
            if callable(release):
                return list(release() or [])
            if held:
                x, y = self.desktop.cursor or (0.5, 0.5)
                for button in held:
                    self.desktop.apply(MouseUp(min(1.0, max(0.0, x)), min(1.0, max(0.0, y)), button))
            return [f"mouse {b}" for b in held]
        except Exception as e:
            log.warning("releasing held input failed: %s: %s", type(e).__name__, e)
            return []

    @property
    def held_buttons(self) -> set[str]:
        """Buttons a ``mouse_down`` pressed and nothing has released yet (any action's source)."""
        return set(self._held)

    def _expert(self) -> list[dict]:
        oracle = self.desktop.oracle
        if oracle is None or not hasattr(oracle, "expert_actions"):
            raise ActionRefused("this desktop has no expert (only virtual-desktop tasks do)")
        return [a.to_json() for a in oracle.expert_actions()]

    # -- producer ---------------------------------------------------------------------------------
    def request_keyframe(self) -> None:
        self._force_key = True

    def _encode(self, frame: Frame, seq: int, video: bool, jpeg: bool, key: bool, cap_us: int, cap_dur: int):
        """On the encoder thread: the messages, and the stage timings (appended on the loop's thread)."""
        out: list[tuple[bytes, bool, int]] = []
        timings: list[tuple[str, int]] = []
        pts = int(round(frame.t * 1000))
        if video and self.encoder is not None:
            t0 = time.perf_counter_ns()
            packets = self.encoder.encode(frame.pixels, pts, keyframe=key)
            dur = time.perf_counter_ns() - t0
            timings.append(("encode", dur))
            for data, _pts, is_key in packets:
                h = P.FrameHeader(P.KIND_VIDEO, is_key, seq, pts, cap_us, cap_dur // 1000, dur // 1000)
                out.append((h.pack() + data, is_key, P.KIND_VIDEO))
        if jpeg:
            t0 = time.perf_counter_ns()
            data = jpeg_encode(frame.pixels, self.jpeg_quality)
            dur = time.perf_counter_ns() - t0
            timings.append(("jpeg", dur))
            h = P.FrameHeader(P.KIND_JPEG, True, seq, pts, cap_us, cap_dur // 1000, dur // 1000)
            out.append((h.pack() + data, True, P.KIND_JPEG))
        return out, timings

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.fps
        next_t = loop.time()
        failures = 0
        while not self._closing:
            if not self.clients and not self._local_users:
                self._wake.clear()
                await self._wake.wait()
                next_t = loop.time()
                continue
            try:
                await self._produce_one(loop)
                failures = 0
            except DesktopError as e:
                log.error("capture failed: %s", e)
                self._broadcast({"type": "error", "field": "desktop", "message": f"capture failed: {e}"})
                await asyncio.sleep(1.0)
                continue
            except Exception as e:  # any other bug: logged, told, and the stream goes on
                failures += 1
                self.counters["producer_errors"] += 1
                log.exception("frame producer error (%d in a row)", failures)
                self._broadcast({"type": "error", "field": "desktop",
                                 "message": f"frame producer error: {type(e).__name__}: {e}"})
                self._force_key = True
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))
                continue
            next_t += period
            delay = next_t - loop.time()
            if delay < -period:  # running behind: don't try to catch up with a burst
                next_t = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    async def _produce_one(self, loop: asyncio.AbstractEventLoop) -> None:
        cap_us = time.time_ns() // 1000
        t0 = time.perf_counter_ns()
        frame, seq, state = await loop.run_in_executor(self._desk, self._observe)
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
        if not (video or jpeg):
            return
        try:
            msgs, timings = await loop.run_in_executor(self._enc, self._encode, frame, seq, video, jpeg, key,
                                                       cap_us, cap_dur)
        except Exception as e:  # an encoder failure must not end the stream for JPEG clients
            log.error("encoding failed: %s", e)
            msgs, timings = [], []
            self._force_key = True
        for stage, dur in timings:
            self.timings[stage].append(dur)
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

    def _frames_full(self, c: Client, size: int) -> bool:
        """A client's frame queue is full by count, or by bytes (an empty queue always takes one frame)."""
        return len(c.frames) >= self.frame_queue or (
            bool(c.frames) and c.frame_bytes + size > self.frame_queue_bytes)

    def _distribute(self, data: bytes, is_key: bool, kind: int) -> None:
        want = "video" if kind == P.KIND_VIDEO else "jpeg"
        for c in self.clients:
            if c.format != want or c.closing:
                continue
            if kind == P.KIND_VIDEO:
                if not c.synced:
                    if not is_key:
                        if c.sending_since is None:  # a client stuck in a send asks for no keyframes
                            self.request_keyframe()
                        continue
                    c.synced = True
                if self._frames_full(c, len(data)):
                    # too slow: everything queued is stale and the next delta can't be decoded without it
                    n = len(c.frames) + 1
                    c.frames.clear()
                    c.frame_bytes = 0
                    c.dropped += n
                    self.counters["dropped"] += n
                    c.resyncs += 1
                    c.synced = False
                    if c.sending_since is None:
                        self.request_keyframe()
                    continue
            else:
                while c.frames and self._frames_full(c, len(data)):
                    c.frame_bytes -= len(c.frames.popleft())  # latest wins
                    c.dropped += 1
                    self.counters["dropped"] += 1
            c.frames.append(data)
            c.frame_bytes += len(data)
            c.wake.set()

    def _clear_frames(self, c: Client) -> None:
        c.frames.clear()
        c.frame_bytes = 0

    def _reconfigure(self) -> None:
        """The encoder switched rungs mid-stream: video clients reconfigure and wait for its keyframe."""
        self._generation = self.encoder.generation
        msg = {"type": "video", "video": self.encoder.describe()}
        for c in list(self.clients):
            if c.format == "video":
                c.synced = False
                self._clear_frames(c)
            self._queue_control(c, msg)

    def _publish_state(self, state: dict) -> None:
        old = self._state
        self._state = state
        if (old.get("finished"), old.get("success"), old.get("instruction")) != (
                state["finished"], state["success"], state["instruction"]):
            self._broadcast({"type": "state", **state})

    # -- clients ----------------------------------------------------------------------------------
    def _close_client(self, c: Client, code: int, reason: str, counter: str | None = None) -> None:
        if c.closing:
            return
        c.closing = True
        if counter:
            self.counters[counter] += 1
        log.warning("closing client %d (%s): %s", c.id, c.address, reason)
        if self.audit is not None:
            self.audit.write("close", client=c.id, address=c.address, code=code, reason=reason)
        self._background(c.ws.close(code, reason))

    def _queue_control(self, c: Client, msg: dict | str, droppable: bool = False) -> None:
        if c.closing:
            return
        text = msg if isinstance(msg, str) else P.dumps(msg)
        if len(c.control) >= CONTROL_QUEUE or (c.control and c.control_bytes + len(text) > self.control_queue_bytes):
            if droppable:
                c.dropped_control += 1
                return
            self._close_client(c, 1008, "not reading replies", "clients_closed_stuck")
            return
        c.control.append(text)
        c.control_bytes += len(text)
        c.wake.set()

    def _broadcast(self, msg: dict) -> None:
        text = P.dumps(msg)
        for c in list(self.clients):
            self._queue_control(c, text, droppable=True)

    def _broadcast_applied(self, client_id: int, action: Action, state: dict) -> None:
        """Every client sees each applied action (the viewer's overlay); viewers never see typed text or keys."""
        full = action.to_json()
        redacted = dict(full)
        if "text" in full:
            redacted["text"] = f"<{len(full['text'])} characters>"
        if isinstance(action, Key):
            redacted["keys"] = "<redacted>"
        base = {"type": "applied", "client": client_id, "cursor": state["cursor"], "t": state["t"]}
        texts = {"controller": P.dumps({**base, "action": full}), "viewer": P.dumps({**base, "action": redacted})}
        for c in list(self.clients):
            self._queue_control(c, texts["controller" if c.role == "controller" else "viewer"], droppable=True)

    async def _send(self, c: Client, data: str | bytes) -> None:
        c.sending_since = time.monotonic()
        await c.ws.send(data)
        c.sending_since = None
        c.last_out = time.monotonic()

    async def _sender(self, c: Client) -> None:
        while True:
            await c.wake.wait()
            c.wake.clear()
            while c.control or c.frames:
                if c.control:
                    text = c.control.popleft()
                    c.control_bytes -= len(text)
                    await self._send(c, text)
                    continue
                data = c.frames.popleft()
                c.frame_bytes -= len(data)
                t0 = time.perf_counter_ns()
                await self._send(c, data)
                dt = time.perf_counter_ns() - t0
                c.send_ns.append(dt)
                self.timings["send"].append(dt)
                c.sent_frames += 1
                c.sent_bytes += len(data)

    async def _watchdog(self, c: Client) -> None:
        """Drops a client that does not read (a send waiting past ``send_timeout``: the socket is aborted,
        since a close would wait behind the same full buffer) or is idle past ``idle_timeout``."""
        tick = min(1.0, self.send_timeout / 4, (self.idle_timeout or 60.0) / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            since = c.sending_since
            if since is not None and now - since > self.send_timeout:
                self.counters["clients_closed_send_timeout"] += 1
                log.warning("client %d (%s) read nothing for %.0f s: dropped", c.id, c.address, now - since)
                if self.audit is not None:
                    self.audit.write("close", client=c.id, address=c.address, reason="send timeout")
                c.closing = True
                transport = getattr(c.ws, "transport", None)
                if transport is not None:
                    transport.abort()
                return
            if (self.idle_timeout is not None and since is None
                    and now - max(c.last_in, c.last_out) > self.idle_timeout):
                self._close_client(c, 1001, f"idle for {self.idle_timeout:g} s", "clients_closed_idle")
                return

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
            "policy": self.policy.describe() if self.policy is not None else None,
            "header": {"size": P.HEADER_SIZE, "magic": P.MAGIC.decode(), "version": P.PROTOCOL_VERSION},
            "limits": self.limits(),
            "server_time_us": time.time_ns() // 1000,
        }

    def limits(self) -> dict:
        return {"max_message_in": self.max_message, "frame_queue": self.frame_queue,
                "frame_queue_bytes": self.frame_queue_bytes, "control_queue_bytes": self.control_queue_bytes,
                "send_timeout_s": self.send_timeout, "idle_timeout_s": self.idle_timeout,
                "max_connections": self.max_connections,
                "max_connections_per_address": self.max_connections_per_address,
                "action_rate": self.action_rate, "max_wait_s": self.max_wait}

    async def _handler(self, ws: ServerConnection) -> None:
        address = _peer(ws)
        c = Client(ws, getattr(ws, "dw_role", "viewer"), next(self._ids), getattr(ws, "dw_format", "none"),
                   address=address)
        try:  # the caps again: handshakes that raced past process_request together
            self._check_caps(address)
        except H.Refusal as r:
            self.counters["refused_handshakes"] += 1
            await ws.close(1013, r.text[:120])
            return
        self.counters["connections"] += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        if self.audit is not None:
            self.audit.write("connect", client=c.id, address=address, role=c.role, format=c.format)
        self._queue_control(c, self.hello(c))
        self.clients.add(c)
        self.request_keyframe()
        self._wake.set()
        tasks = {asyncio.create_task(self._sender(c)), asyncio.create_task(self._read(c)),
                 asyncio.create_task(self._watchdog(c))}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.clients.discard(c)
            left = self._by_address.get(address, 1) - 1
            if left > 0:
                self._by_address[address] = left
            else:
                self._by_address.pop(address, None)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                    await task
            self._clear_frames(c)
            c.control.clear()
            c.control_bytes = 0
            if c.role == "controller" and c.actions and not self._closing:
                # whatever this controller left pressed (a mouse_down, a key in progress) is let go
                with contextlib.suppress(Exception):
                    released = await asyncio.get_running_loop().run_in_executor(self._desk, self._release_input)
                    if released:
                        log.info("client %d disconnected: released %s", c.id, ", ".join(released))
            if self.audit is not None:
                self.audit.write("disconnect", client=c.id, address=address, role=c.role, actions=c.actions,
                                 errors=c.errors, sent_frames=c.sent_frames, dropped=c.dropped)

    async def _read(self, c: Client) -> None:
        async for message in c.ws:
            c.last_in = time.monotonic()
            if c.closing:
                continue
            if not isinstance(message, str):
                self._error(c, None, "message", "binary messages are not accepted from clients; send JSON text")
                continue
            try:
                msg = P.parse_client_message(message)
            except P.ProtocolError as e:
                self._error(c, None, e.field, str(e))
                continue
            except Exception as e:  # nothing a client sends may end its connection without a reply
                self._error(c, None, "message", f"{type(e).__name__}: {str(e)[:200]}")
                continue
            try:
                await self._on_message(c, msg)
            except (asyncio.CancelledError, ConnectionClosed):
                raise
            except Exception as e:
                log.exception("message from client %d failed", c.id)
                self._error(c, msg.get("id"), "message", f"{type(e).__name__}: {str(e)[:200]}")

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
                self._clear_frames(c)
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
            self._clear_frames(c)
            if fmt == "video":
                self.request_keyframe()
            self._wake.set()
            self._queue_control(c, {"type": "subscribed", "id": mid, "format": fmt})
        elif kind == "policy":
            self._on_policy(c, msg)
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
            except Exception as e:  # OverflowError, RecursionError ...: still the client's bad action
                return self._error(c, mid, "action", f"invalid action: {type(e).__name__}: {str(e)[:200]}")
            if isinstance(action, Wait) and float(action.seconds) > self.max_wait:
                return self._error(c, mid, "action.seconds",
                                   f"wait of {float(action.seconds):g} s is over this server's cap of {self.max_wait:g} s")
            if self._limiter is not None and not isinstance(action, Wait) and not self._limiter.take():
                self.counters["rate_limited"] += 1
                self._release_soon()
                return self._error(c, mid, "action", f"refused: rate limit: more than {self.action_rate:g} actions "
                                   "per second from remote controllers")
            try:
                if isinstance(action, Wait) and getattr(self.desktop, "realtime", False):
                    # a real wait must not hold the desktop thread: capture (and every viewer) goes on
                    await asyncio.sleep(float(action.seconds))
                    state = await loop.run_in_executor(self._desk, self._snapshot)
                else:
                    state = await loop.run_in_executor(self._desk, self._apply, action)
            except ActionRefused as e:
                return self._error(c, mid, "action", f"refused: {e}")
            except DesktopError as e:
                return self._error(c, mid, "desktop", str(e))
            except Exception as e:  # a desktop bug must not take the server down
                log.exception("apply failed")
                self._release_soon()
                return self._error(c, mid, "desktop", f"{type(e).__name__}: {e}")
            c.actions += 1
            self.counters["actions"] += 1
            self._queue_control(c, {"type": "ack", "id": mid, **state})
            self._broadcast_applied(c.id, action, state)
            self._publish_state(state)

    def _on_policy(self, c: Client, msg: dict) -> None:
        """A controller pauses, resumes or re-instructs the in-process policy (docs/protocol.md)."""
        mid = msg.get("id")
        if c.role != "controller":
            return self._error(c, mid, "role", "a viewer cannot steer the policy (use the controller token)")
        control = self.policy
        if control is None:
            return self._error(c, mid, "policy", "this server runs no policy (dw serve --policy P)")
        unknown = sorted(set(msg) - {"type", "id", "paused", "instruction"})
        if unknown:
            return self._error(c, mid, f"policy.{str(unknown[0])[:40]}", "unknown field; expected paused, instruction")
        paused, instruction = msg.get("paused"), msg.get("instruction")
        if paused is None and instruction is None:
            return self._error(c, mid, "policy", "give paused (true/false) and/or instruction (text)")
        if paused is not None and not isinstance(paused, bool):
            return self._error(c, mid, "policy.paused", f"must be true or false, got {type(paused).__name__}")
        if instruction is not None:
            try:
                instruction = check_instruction(instruction)
            except ValueError as e:
                return self._error(c, mid, "policy.instruction", str(e))
        if not control.running:
            return self._error(c, mid, "policy", f"the policy has stopped ({control.reason or 'ended'})")
        was_paused = control.paused
        control.update(paused, instruction)
        if paused and not was_paused:  # what the policy held (a drag under way) is let go before a person acts
            self._release_soon()
        if self.audit is not None:
            self.audit.write("policy", client=c.id, paused=paused,
                             instruction_chars=None if instruction is None else len(instruction))
        described = control.describe()
        self._queue_control(c, {"type": "policy", "id": mid, "policy": described})
        text = P.dumps({"type": "policy", "policy": described, "client": c.id})
        for other in list(self.clients):
            if other is not c:
                self._queue_control(other, text, droppable=True)

    def attach_policy(self, control: PolicyControl) -> None:
        """The in-process policy's switches (``dw serve --policy``): announced in ``hello`` and steered
        with ``policy`` messages. Call before :meth:`start`, or from the server's loop."""
        self.policy = control

        def stopped() -> None:  # from the policy's thread: every client hears that it stopped
            if self._loop is not None and not self._closing:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                    self._loop.call_soon_threadsafe(
                        lambda: self._broadcast({"type": "policy", "policy": control.describe(), "client": 0}))

        control.listener = stopped

    def _release_soon(self) -> None:
        """Release held input on the desktop thread (after a refusal the server made, or a desktop bug)."""
        with contextlib.suppress(RuntimeError):  # the executor is shut down: the server is stopping
            self._desk.submit(self._release_input)

    # -- in-process use (serve --policy, tests) ------------------------------------------------------
    def apply_local(self, action: Action) -> dict:
        """Apply an action from this process (any thread), with the same ack semantics and broadcast.
        While a controller has the in-process policy paused, its actions are refused (checked on the
        desktop thread, so a step already under way cannot act after the pause)."""
        state = self._desk.submit(self._apply_local, action).result()

        def announce() -> None:  # counters and clients belong to the loop's thread
            self.counters["actions"] += 1
            self._broadcast_applied(0, action, state)
            self._publish_state(state)

        self._loop.call_soon_threadsafe(announce)
        return state

    def _apply_local(self, action: Action) -> dict:
        if self.policy is not None and self.policy.paused:
            raise ActionRefused("the policy is paused by a controller")
        return self._apply(action)

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

        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped, nothing to keep
            self._loop.call_soon_threadsafe(change)

    @property
    def state(self) -> dict:
        return dict(self._state)

    # -- stats ------------------------------------------------------------------------------------
    def stats(self, you: Client | None = None) -> dict:
        """Per-stage timings, counters and clients. The server-wide part is computed at most every
        ``STATS_CACHE_S`` (a flood of ``stats`` requests costs one computation per window)."""
        now = time.monotonic()
        cached = self._stats_cache
        if cached is None or now - cached[0] >= STATS_CACHE_S:
            up = now - self.started
            cached = (now, {
                "stages": {k: percentiles(list(v)) for k, v in self.timings.items()},
                "counters": dict(self.counters),
                "uptime_s": round(up, 3),
                "fps": self.fps,
                "clients": [c.describe() for c in sorted(self.clients, key=lambda c: c.id)],
                "video_bytes_per_s": round(self.counters["video_bytes"] / up, 1) if up > 0 else 0.0,
            })
            self._stats_cache = cached
        out = dict(cached[1])
        if you is not None:
            out["you"] = you.describe()
        return out


def _peer(connection: Any) -> str:
    try:
        addr = connection.remote_address
        return str(addr[0]) if addr else "?"
    except Exception:
        return "?"


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
