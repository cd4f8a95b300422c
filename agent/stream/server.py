"""``dw serve``: one desktop served over websockets to many clients (docs/protocol.md).

This module is the asyncio driver: sockets, tasks, threads. The protocol itself (roles, validation,
rate limit, byte-bounded queues, idle and send timeouts, hello/stats, ``policy`` messages) is the
sans-I/O core :mod:`agent.stream.connection`; the handshake's checks are :mod:`agent.stream.http`.
The driver feeds the core each message and clock tick and performs the effects it returns.

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
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.desktops import ActionRefused, Desktop, DesktopError
from agent.stream import connection as C
from agent.stream import http as H
from agent.stream import protocol as P
from agent.stream.connection import (  # noqa: F401 - the limits' defaults, as before the core moved out
    ACTION_RATE,
    CONTROL_QUEUE,
    CONTROL_QUEUE_BYTES,
    FRAME_QUEUE_BYTES,
    IDLE_TIMEOUT,
    KEYFRAME_MIN_INTERVAL,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    MAX_WAIT,
    SEND_TIMEOUT,
    STAT_WINDOW,
    STATS_CACHE_S,
    Connection,
)
from agent.stream.steering import PolicyControl
from agent.stream.video import StreamEncoder, VideoUnavailable, jpeg_encode, open_stream_encoder
from capture import Frame
from policies.actions import Action, Wait, parse_action

log = logging.getLogger("dw.stream")

STATIC = H.STATIC
WEB_DIR = H.WEB_DIR
WS_PATH = H.WS_PATH


def new_token() -> str:
    return secrets.token_urlsafe(24)


_is_loopback = H.is_loopback


def _limit(name: str) -> property:
    """A server attribute that is the core's limit ``name`` (:class:`agent.stream.connection.Limits`)."""
    return property(lambda self: getattr(self._limits, name), lambda self, v: setattr(self._limits, name, v),
                    doc=f"``Limits.{name}``")


@dataclass(eq=False)
class _Link:
    """The I/O side of one connection: its websocket and its sender's wake-up."""

    ws: ServerConnection
    conn: Connection | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


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
        self._limits = C.Limits(
            max_message=max_message, frame_queue=frame_queue, frame_queue_bytes=frame_queue_bytes,
            control_queue_bytes=control_queue_bytes, send_timeout=send_timeout, idle_timeout=idle_timeout,
            max_connections=max_connections, max_connections_per_address=max_connections_per_address,
            action_rate=action_rate, max_wait=max_wait)
        self.desktop = desktop
        self.host, self.port = host, port
        self.token = token or new_token()
        self.viewer_token = viewer_token or new_token()
        if hmac.compare_digest(self.token, self.viewer_token):
            raise ValueError("the controller and viewer tokens must differ")
        self.fps = float(fps)
        self.allow_origins = {o.rstrip("/") for o in allow_origins}
        lim = self._limits
        self.want_video = video
        self.jpeg_quality = jpeg_quality
        self.ssl_context = ssl_context
        self.audit = audit  # agent.stream.audit.AuditLog or None
        # the protocol itself (roles, validation, limits, queues, hello/stats): agent.stream.connection
        self.hub = C.Hub(lim, fps=self.fps, info=lambda: _info(self.desktop),
                         video=lambda: self.encoder.describe() if self.encoder is not None else None)
        self._links: dict[Connection, _Link] = {}
        self._tasks: set[asyncio.Task] = set()  # background tasks (closes, restarts): kept until done
        self._desk = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dw-desktop")
        self._enc = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dw-encode")
        self.encoder: StreamEncoder | None = None
        self._server = None
        self._producer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._next_seq = 0  # the next capture's index (desktop thread only)
        self._blind = ""  # why the last capture failed ("" = it did not): actions wait for a frame
        self._local_users = 0  # in-process agents (serve --policy) that need frames without clients
        self._latest: tuple[Frame, int] | None = None  # (frame, seq) for in-process observers
        self._latest_cond = threading.Condition()
        self._held = C.HeldInput()  # mouse buttons a mouse_down left pressed (desktop thread only)
        self.timings = self.hub.timings  # stage timings and counters: the loop's thread only
        self.counters = self.hub.counters
        self.started = self.hub.started
        self._closing = False

    # every limit is also an attribute of the server (read and set: the core reads them live)
    max_message = _limit("max_message")
    frame_queue = _limit("frame_queue")
    frame_queue_bytes = _limit("frame_queue_bytes")
    control_queue_bytes = _limit("control_queue_bytes")
    send_timeout = _limit("send_timeout")
    idle_timeout = _limit("idle_timeout")
    max_connections = _limit("max_connections")
    max_connections_per_address = _limit("max_connections_per_address")
    action_rate = _limit("action_rate")
    max_wait = _limit("max_wait")

    @property
    def clients(self) -> set[Connection]:
        return self.hub.connections

    @property
    def policy(self) -> PolicyControl | None:
        """The in-process policy's switches (:meth:`attach_policy`)."""
        return self.hub.policy

    @property
    def video_error(self) -> str | None:
        return self.hub.video_error

    @video_error.setter
    def video_error(self, value: str | None) -> None:
        self.hub.video_error = value

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
        self.hub.screen = self.desktop.screen.to_json()
        self.hub.state = await self._loop.run_in_executor(self._desk, self._snapshot)
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
        self._do(self.hub.broadcast({"type": "error", "field": "desktop",
                                     "message": f"frame producer failed: {type(e).__name__}: {e}; restarted"}))
        self._loop.call_later(1.0, lambda: None if self._closing else self._start_producer())

    async def stop(self) -> None:
        self._closing = self.hub.stopping = True
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
        self.hub.check_caps(_peer(connection))
        connection.dw_role = accepted.role  # type: ignore[attr-defined]
        connection.dw_format = accepted.format or ("video" if self.encoder is not None else "jpeg")  # type: ignore[attr-defined]
        return None

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
        self._held.before(action)
        self.desktop.apply(action)
        self._held.after(action)
        return self._snapshot()

    def _release_input(self) -> list[str]:
        """Let go of every button and key held on the desktop: its own ``release_input`` (live screens),
        else a ``mouse_up`` where the pointer is for each button a ``mouse_down`` left pressed."""
        release = getattr(self.desktop, "release_input", None)
        held = self._held.take()
        try:
            if callable(release):
                return list(release() or [])
            for up in C.HeldInput.release_actions(held, self.desktop.cursor):
                self.desktop.apply(up)
            return [f"mouse {b}" for b in held]
        except Exception as e:
            log.warning("releasing held input failed: %s: %s", type(e).__name__, e)
            return []

    @property
    def held_buttons(self) -> set[str]:
        """Buttons a ``mouse_down`` pressed and nothing has released yet (any action's source)."""
        return set(self._held.buttons)

    def _expert(self) -> list[dict]:
        oracle = self.desktop.oracle
        if oracle is None or not hasattr(oracle, "expert_actions"):
            raise ActionRefused("this desktop has no expert (only virtual-desktop tasks do)")
        return [a.to_json() for a in oracle.expert_actions()]

    # -- producer ---------------------------------------------------------------------------------
    def request_keyframe(self) -> None:
        self.hub.request_keyframe()

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
                self._do(self.hub.broadcast({"type": "error", "field": "desktop", "message": f"capture failed: {e}"}))
                await asyncio.sleep(1.0)
                continue
            except Exception as e:  # any other bug: logged, told, and the stream goes on
                failures += 1
                self.counters["producer_errors"] += 1
                log.exception("frame producer error (%d in a row)", failures)
                self._do(self.hub.broadcast({"type": "error", "field": "desktop",
                                             "message": f"frame producer error: {type(e).__name__}: {e}"}))
                self.request_keyframe()
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
        self._do(self.hub.publish_state(state))
        video = self.hub.wants("video") and self.encoder is not None
        jpeg = self.hub.wants("jpeg")
        key = video and self.hub.take_keyframe()
        if not (video or jpeg):
            return
        try:
            msgs, timings = await loop.run_in_executor(self._enc, self._encode, frame, seq, video, jpeg, key,
                                                       cap_us, cap_dur)
        except Exception as e:  # an encoder failure must not end the stream for JPEG clients
            log.error("encoding failed: %s", e)
            msgs, timings = [], []
            self.request_keyframe()
        for stage, dur in timings:
            self.timings[stage].append(dur)
        self.counters["frames"] += 1
        if self.encoder is not None and self.encoder.generation != self._generation:
            self._generation = self.encoder.generation
            self._do(self.hub.video_changed())
        for data, is_key, kind in msgs:
            if kind == P.KIND_VIDEO:
                self.counters["video_bytes"] += len(data)
                self.counters["keyframes"] += int(is_key)
            else:
                self.counters["jpeg_bytes"] += len(data)
            self.hub.distribute(data, is_key, kind)

    # -- effects of the protocol core -------------------------------------------------------------
    def _do(self, effects: list[C.Effect]) -> None:
        """Performs the core's effects that need no waiting (actions and expert requests are awaited
        by the connection's reader, :meth:`_read`)."""
        for e in effects:
            if isinstance(e, C.Audit):
                if self.audit is not None:
                    self.audit.write(e.event, **e.fields)
            elif isinstance(e, C.Close):
                link = self._links.get(e.conn)
                log.warning("closing client %d (%s): %s", e.conn.id, e.conn.address, e.reason)
                if link is not None:
                    self._background(link.ws.close(e.code, e.reason))
            elif isinstance(e, C.Abort):
                link = self._links.get(e.conn)
                log.warning("client %d (%s) %s: dropped", e.conn.id, e.conn.address, e.reason)
                transport = getattr(link.ws, "transport", None) if link is not None else None
                if transport is not None:
                    transport.abort()
            elif isinstance(e, C.ReleaseInput):
                self._release_soon()
            elif isinstance(e, C.WakeProducer):
                self._wake.set()
            else:  # ApplyAction, AskExpert: only the reader may perform them
                raise TypeError(f"{type(e).__name__} cannot be performed here")

    # -- clients ----------------------------------------------------------------------------------
    async def _sender(self, link: _Link) -> None:
        c = link.conn
        while True:
            await link.wake.wait()
            link.wake.clear()
            while (data := c.next_outgoing()) is not None:
                c.sending()
                t0 = time.perf_counter_ns()
                await link.ws.send(data)
                c.sent(data, time.perf_counter_ns() - t0)

    async def _watchdog(self, c: Connection) -> None:
        """Drops a client that does not read (a send waiting past ``send_timeout``: the socket is aborted,
        since a close would wait behind the same full buffer) or is idle past ``idle_timeout``."""
        while not c.aborted:
            await asyncio.sleep(c.tick_interval)
            self._do(c.tick())

    def hello(self, c: Connection) -> dict:
        return self.hub.hello(c)

    def limits(self) -> dict:
        return self._limits.to_json()

    async def _handler(self, ws: ServerConnection) -> None:
        address = _peer(ws)
        link = _Link(ws)
        try:  # the caps again: handshakes that raced past process_request together
            c, effects = self.hub.connect(getattr(ws, "dw_role", "viewer"), getattr(ws, "dw_format", "none"),
                                          address, wake=link.wake.set)
        except H.Refusal as r:
            await ws.close(1013, r.text[:120])
            return
        link.conn = c
        self._links[c] = link
        self._do(effects)
        tasks = {asyncio.create_task(self._sender(link)), asyncio.create_task(self._read(c, ws)),
                 asyncio.create_task(self._watchdog(c))}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone = self.hub.disconnect(c)  # no broadcast reaches it from here
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, Exception):
                    await task
            self._links.pop(c, None)
            for e in gone:
                if isinstance(e, C.ReleaseInput):
                    # whatever this controller left pressed (a mouse_down, a key in progress) is let go
                    with contextlib.suppress(Exception):
                        released = await asyncio.get_running_loop().run_in_executor(self._desk, self._release_input)
                        if released:
                            log.info("client %d disconnected: released %s", c.id, ", ".join(released))
                else:
                    self._do([e])

    async def _read(self, c: Connection, ws: ServerConnection) -> None:
        async for message in ws:
            try:
                for e in c.receive(message):
                    if isinstance(e, C.ApplyAction):
                        await self._apply_for(e)
                    elif isinstance(e, C.AskExpert):
                        await self._expert_for(e)
                    else:
                        self._do([e])
            except (asyncio.CancelledError, ConnectionClosed):
                raise
            except Exception as e:  # performing an effect failed (an audit write ...): still only a reply
                log.exception("message from client %d failed", c.id)
                self._do(c.error(None, "message", f"{type(e).__name__}: {str(e)[:200]}"))

    async def _apply_for(self, e: C.ApplyAction) -> None:
        loop = asyncio.get_running_loop()
        try:
            if isinstance(e.action, Wait) and getattr(self.desktop, "realtime", False):
                # a real wait must not hold the desktop thread: capture (and every viewer) goes on
                await asyncio.sleep(float(e.action.seconds))
                state = await loop.run_in_executor(self._desk, self._snapshot)
            else:
                state = await loop.run_in_executor(self._desk, self._apply, e.action)
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except Exception as exc:
            if not isinstance(exc, ActionRefused | DesktopError):  # a desktop bug must not take the server down
                log.exception("apply failed")
            return self._do(self.hub.action_failed(e.conn, e.id, exc))
        self._do(self.hub.action_done(e.conn, e.id, e.action, state))

    async def _expert_for(self, e: C.AskExpert) -> None:
        try:
            actions = await asyncio.get_running_loop().run_in_executor(self._desk, self._expert)
        except (asyncio.CancelledError, ConnectionClosed):
            raise
        except Exception as exc:
            return self._do(self.hub.expert_failed(e.conn, e.id, exc))
        self._do(self.hub.expert_done(e.conn, e.id, actions))

    def attach_policy(self, control: PolicyControl) -> None:
        """The in-process policy's switches (``dw serve --policy``): announced in ``hello`` and steered
        with ``policy`` messages. Call before :meth:`start`, or from the server's loop."""
        self.hub.policy = control

        def stopped() -> None:  # from the policy's thread: every client hears that it stopped
            if self._loop is not None and not self._closing:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                    self._loop.call_soon_threadsafe(lambda: self._do(self.hub.policy_stopped()))

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
        # counters and clients belong to the loop's thread
        self._loop.call_soon_threadsafe(lambda: self._do(self.hub.local_applied(action, state)))
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
        return dict(self.hub.state)

    def stats(self, you: Connection | None = None) -> dict:
        """Per-stage timings, counters and clients (:meth:`agent.stream.connection.Hub.stats`)."""
        return self.hub.stats(you)


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
