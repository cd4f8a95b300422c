"""The stream protocol as a sans-I/O core (docs/protocol.md): no sockets, no asyncio, no threads.

As the ``websockets`` library separates its ``Protocol`` from its asyncio driver, this module holds
what the protocol *decides* and :mod:`agent.stream.server` only performs it:

- :class:`Connection` is one client's state machine. It takes the client's messages
  (:meth:`Connection.receive`) and clock ticks (:meth:`Connection.tick`), owns its role and format,
  validates every message (an error reply never closes the connection), and keeps its two outgoing
  queues accounted in bytes: replies and broadcasts (``control``) and frames. The driver drains them
  with :meth:`Connection.next_outgoing` and reports each send (:meth:`Connection.sending`,
  :meth:`Connection.sent`).
- :class:`Hub` is what the connections of one served desktop share: the counters and stage timings,
  the action rate limit, the desktop's last state, the in-process policy's switches, connection caps,
  ``hello`` and ``stats``, broadcasts, frame distribution and keyframe forcing.
- :class:`HeldInput` tracks the mouse buttons a ``mouse_down`` left pressed and says how to let them go.

Replies are queued on the connection they answer (the driver's sender wakes through
:attr:`Connection.wake`); whatever the driver must *do* comes back as effects (plain dataclasses):
:class:`ApplyAction`, :class:`AskExpert`, :class:`ReleaseInput`, :class:`Close`, :class:`Abort`,
:class:`WakeProducer` and :class:`Audit`. The outcome of an action or an expert request is fed back
with :meth:`Hub.action_done` / :meth:`Hub.action_failed` / :meth:`Hub.expert_done` /
:meth:`Hub.expert_failed`, which return effects in turn.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from agent.desktops import ActionRefused, DesktopError
from agent.desktops.executor import RateLimiter
from agent.stats import percentiles
from agent.stream import protocol as P
from agent.stream.http import Refusal
from agent.stream.steering import PolicyControl, check_instruction
from policies.actions import Action, ActionError, Click, Drag, Key, MouseDown, MouseUp, Wait, parse_action

log = logging.getLogger("dw.stream")

CONTROL_QUEUE = 512  # replies and broadcasts waiting for one client; past this it is closed as stuck
KEYFRAME_MIN_INTERVAL = 0.1  # seconds between forced keyframes, however many clients ask
KEYFRAME_REQUEST_INTERVAL = 0.5  # seconds between one client's honoured ``keyframe`` requests
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

COUNTERS = ("frames", "keyframes", "video_bytes", "jpeg_bytes", "connections", "refused_handshakes", "actions",
            "errors", "dropped", "clients_closed_stuck", "clients_closed_send_timeout", "clients_closed_idle",
            "rate_limited", "producer_errors")
STAGES = ("capture", "encode", "jpeg", "send")


@dataclass
class Limits:
    """Every limit of docs/protocol.md (Limits), checked and normalised (``idle_timeout``/``action_rate``
    0 or None: none)."""

    max_message: int = P.MAX_MESSAGE_IN
    frame_queue: int = 2
    frame_queue_bytes: int = FRAME_QUEUE_BYTES
    control_queue_bytes: int = CONTROL_QUEUE_BYTES
    send_timeout: float = SEND_TIMEOUT
    idle_timeout: float | None = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    action_rate: float | None = ACTION_RATE
    max_wait: float = MAX_WAIT
    control_queue: int = CONTROL_QUEUE  # messages

    def __post_init__(self) -> None:
        for name, v in (("send_timeout", self.send_timeout), ("max_wait", self.max_wait)):
            if not (v >= 0 and v < float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {v}")
        if self.send_timeout <= 0:
            raise ValueError(f"send_timeout must be positive, got {self.send_timeout}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive (or None), got {self.idle_timeout}")
        if min(self.control_queue_bytes, self.frame_queue_bytes, self.max_connections,
               self.max_connections_per_address, self.control_queue) < 1:
            raise ValueError("queue sizes and connection caps must be at least 1")
        self.max_message = int(self.max_message)
        self.frame_queue = max(1, int(self.frame_queue))
        self.frame_queue_bytes = int(self.frame_queue_bytes)
        self.control_queue_bytes = int(self.control_queue_bytes)
        self.send_timeout = float(self.send_timeout)
        self.idle_timeout = float(self.idle_timeout) if self.idle_timeout else None
        self.max_connections = int(self.max_connections)
        self.max_connections_per_address = int(self.max_connections_per_address)
        self.action_rate = float(self.action_rate) if self.action_rate else None
        self.max_wait = float(self.max_wait)

    def to_json(self) -> dict:
        """``hello.limits``."""
        return {"max_message_in": self.max_message, "frame_queue": self.frame_queue,
                "frame_queue_bytes": self.frame_queue_bytes, "control_queue_bytes": self.control_queue_bytes,
                "send_timeout_s": self.send_timeout, "idle_timeout_s": self.idle_timeout,
                "max_connections": self.max_connections,
                "max_connections_per_address": self.max_connections_per_address,
                "action_rate": self.action_rate, "max_wait_s": self.max_wait}


# -- effects: what the driver must do --------------------------------------------------------------
@dataclass(frozen=True)
class ApplyAction:
    """Apply ``action`` on the desktop for ``conn``; report with :meth:`Hub.action_done` or
    :meth:`Hub.action_failed`."""

    conn: Connection
    id: Any
    action: Action


@dataclass(frozen=True)
class AskExpert:
    """Compute the expert's next actions; report with :meth:`Hub.expert_done` / :meth:`Hub.expert_failed`."""

    conn: Connection
    id: Any


@dataclass(frozen=True)
class ReleaseInput:
    """Let go of every button and key held on the desktop (:class:`HeldInput`, ``release_input``)."""

    reason: str
    client: int = 0


@dataclass(frozen=True)
class Close:
    """Close ``conn``'s websocket with ``code`` and ``reason`` (already counted and marked closing)."""

    conn: Connection
    code: int
    reason: str


@dataclass(frozen=True)
class Abort:
    """Drop ``conn``'s transport without a closing handshake (it does not read: a close would wait)."""

    conn: Connection
    reason: str


@dataclass(frozen=True)
class WakeProducer:
    """The producer may have to start capturing, or encode another format."""


@dataclass(frozen=True)
class Audit:
    """One audit-log line (``agent.stream.audit``)."""

    event: str
    fields: dict


Effect = ApplyAction | AskExpert | ReleaseInput | Close | Abort | WakeProducer | Audit


def _noop() -> None:
    pass


# -- one connection --------------------------------------------------------------------------------
@dataclass(eq=False)
class Connection:
    """One client's protocol state. Create it with :meth:`Hub.connect`."""

    hub: Hub
    id: int
    role: str
    format: str = "video"
    address: str = ""
    synced: bool = False  # a video client can decode from here (it has received a keyframe)
    control: deque = field(default_factory=deque)
    frames: deque = field(default_factory=deque)
    control_bytes: int = 0
    frame_bytes: int = 0
    sent_frames: int = 0
    sent_bytes: int = 0
    dropped: int = 0
    resyncs: int = 0
    dropped_control: int = 0
    actions: int = 0
    errors: int = 0
    closing: bool = False  # a close (or an abort) is under way: nothing more is queued or read
    aborted: bool = False  # dropped on a send timeout
    last_keyframe_request: float = -math.inf
    joined: float = 0.0
    last_in: float = 0.0  # a message arrived
    last_out: float = 0.0  # a send completed
    sending_since: float | None = None  # a send in progress began
    send_ns: deque = field(default_factory=lambda: deque(maxlen=STAT_WINDOW))
    wake: Callable[[], None] = _noop  # the driver's sender: something was queued

    def describe(self) -> dict:
        return {"id": self.id, "role": self.role, "format": self.format, "sent_frames": self.sent_frames,
                "sent_bytes": self.sent_bytes, "dropped": self.dropped, "resyncs": self.resyncs,
                "dropped_control": self.dropped_control, "queued": len(self.frames),
                "queued_bytes": self.frame_bytes + self.control_bytes, "actions": self.actions,
                "errors": self.errors, "send": percentiles(list(self.send_ns)),
                "seconds": round(self.hub.clock() - self.joined, 3)}

    # -- input ------------------------------------------------------------------------------------
    def receive(self, message: str | bytes, now: float | None = None) -> list[Effect]:
        """A message from the client. Never raises: whatever it sends gets a reply or an effect."""
        self.last_in = self.hub.clock() if now is None else now
        if self.closing:
            return []
        if not isinstance(message, str):
            return self.error(None, "message", "binary messages are not accepted from clients; send JSON text")
        try:
            msg = P.parse_client_message(message)
        except P.ProtocolError as e:
            return self.error(None, e.field, str(e))
        except Exception as e:  # nothing a client sends may end its connection without a reply
            return self.error(None, "message", f"{type(e).__name__}: {str(e)[:200]}")
        try:
            return self._dispatch(msg, self.last_in)
        except Exception as e:
            log.exception("message from client %d failed", self.id)
            return self.error(msg.get("id"), "message", f"{type(e).__name__}: {str(e)[:200]}")

    def _dispatch(self, msg: dict, now: float) -> list[Effect]:
        hub = self.hub
        kind, mid = msg["type"], msg.get("id")
        if kind == "keyframe":
            if now - self.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
                return []  # one client may not make everyone's stream all keyframes
            self.last_keyframe_request = now
            hub.request_keyframe()
            if self.format == "video":
                self.synced = False
                self.clear_frames()
            return []
        if kind == "stats":
            return self.queue_control({"type": "stats", "id": mid, **hub.stats(self)})
        if kind == "state":
            return self.queue_control({"type": "state", "id": mid, **hub.state})
        if kind == "subscribe":
            return self._subscribe(mid, msg.get("format"))
        if kind == "policy":
            return self._steer(msg)
        if self.role != "controller":  # action, expert
            return self.error(mid, "role", f"a viewer cannot send {kind!r} (use the controller token)")
        if kind == "expert":
            return [AskExpert(self, mid)]
        try:
            action = parse_action(msg.get("action"))
        except ActionError as e:
            return self.error(mid, e.field if e.field == "action" else f"action.{e.field}", str(e))
        except Exception as e:  # OverflowError, RecursionError ...: still the client's bad action
            return self.error(mid, "action", f"invalid action: {type(e).__name__}: {str(e)[:200]}")
        lim = hub.limits
        if isinstance(action, Wait) and float(action.seconds) > lim.max_wait:
            return self.error(mid, "action.seconds",
                              f"wait of {float(action.seconds):g} s is over this server's cap of {lim.max_wait:g} s")
        if hub.limiter is not None and not isinstance(action, Wait) and not hub.limiter.take():
            hub.counters["rate_limited"] += 1
            return [ReleaseInput("rate limit", self.id),
                    *self.error(mid, "action", f"refused: rate limit: more than {lim.action_rate:g} actions "
                                "per second from remote controllers")]
        return [ApplyAction(self, mid, action)]

    def _subscribe(self, mid: Any, fmt: Any) -> list[Effect]:
        if fmt not in P.FORMATS:
            return self.error(mid, "format", f"must be one of {', '.join(P.FORMATS)}, got {str(fmt)[:40]!r}")
        if fmt == "video" and not self.hub.has_video:
            return self.error(mid, "format", f"video is unavailable on this server ({self.hub.video_error}); "
                              "subscribe to jpeg")
        self.format, self.synced = fmt, False
        self.clear_frames()
        if fmt == "video":
            self.hub.request_keyframe()
        return [WakeProducer(), *self.queue_control({"type": "subscribed", "id": mid, "format": fmt})]

    def _steer(self, msg: dict) -> list[Effect]:
        """A controller pauses, resumes or re-instructs the in-process policy (docs/protocol.md)."""
        mid = msg.get("id")
        if self.role != "controller":
            return self.error(mid, "role", "a viewer cannot steer the policy (use the controller token)")
        control = self.hub.policy
        if control is None:
            return self.error(mid, "policy", "this server runs no policy (dw serve --policy P)")
        unknown = sorted(set(msg) - {"type", "id", "paused", "instruction"})
        if unknown:
            return self.error(mid, f"policy.{str(unknown[0])[:40]}", "unknown field; expected paused, instruction")
        paused, instruction = msg.get("paused"), msg.get("instruction")
        if paused is None and instruction is None:
            return self.error(mid, "policy", "give paused (true/false) and/or instruction (text)")
        if paused is not None and not isinstance(paused, bool):
            return self.error(mid, "policy.paused", f"must be true or false, got {type(paused).__name__}")
        if instruction is not None:
            try:
                instruction = check_instruction(instruction)
            except ValueError as e:
                return self.error(mid, "policy.instruction", str(e))
        if not control.running:
            return self.error(mid, "policy", f"the policy has stopped ({control.reason or 'ended'})")
        was_paused = control.paused
        control.update(paused, instruction)
        out: list[Effect] = []
        if paused and not was_paused:  # what the policy held (a drag under way) is let go before a person acts
            out.append(ReleaseInput("policy paused", self.id))
        out.append(Audit("policy", {"client": self.id, "paused": paused,
                                    "instruction_chars": None if instruction is None else len(instruction)}))
        described = control.describe()
        out += self.queue_control({"type": "policy", "id": mid, "policy": described})
        text = P.dumps({"type": "policy", "policy": described, "client": self.id})
        for other in list(self.hub.connections):
            if other is not self:
                out += other.queue_control(text, droppable=True)
        return out

    def error(self, mid: Any, fieldname: str, message: str) -> list[Effect]:
        """An ``error`` reply (the connection stays open)."""
        self.errors += 1
        self.hub.counters["errors"] += 1
        out = {"type": "error", "field": fieldname, "message": message}
        if mid is not None:
            out["id"] = mid
        return self.queue_control(out)

    def tick(self, now: float | None = None) -> list[Effect]:
        """The clock: a send waiting past ``send_timeout`` aborts the connection; no traffic either way
        for ``idle_timeout`` closes it (1001)."""
        if self.aborted:
            return []
        now = self.hub.clock() if now is None else now
        lim, since = self.hub.limits, self.sending_since
        if since is not None and now - since > lim.send_timeout:  # a closing connection too: its close waits
            self.hub.counters["clients_closed_send_timeout"] += 1
            self.closing = self.aborted = True
            return [Audit("close", {"client": self.id, "address": self.address, "reason": "send timeout"}),
                    Abort(self, f"read nothing for {now - since:.0f} s")]
        if lim.idle_timeout is not None and since is None and not self.closing and now - max(self.last_in, self.last_out) > lim.idle_timeout:
            return self.close(1001, f"idle for {lim.idle_timeout:g} s", "clients_closed_idle")
        return []

    @property
    def tick_interval(self) -> float:
        """How often the driver should call :meth:`tick`."""
        lim = self.hub.limits
        return min(1.0, lim.send_timeout / 4, (lim.idle_timeout or 60.0) / 4)

    def close(self, code: int, reason: str, counter: str | None = None) -> list[Effect]:
        if self.closing:
            return []
        self.closing = True
        if counter:
            self.hub.counters[counter] += 1
        return [Audit("close", {"client": self.id, "address": self.address, "code": code, "reason": reason}),
                Close(self, code, reason)]

    # -- output -----------------------------------------------------------------------------------
    def queue_control(self, msg: dict | str, droppable: bool = False) -> list[Effect]:
        """Queue a reply (``droppable=False``: a client that does not read its replies is closed, 1008)
        or a broadcast (dropped for a client whose queue is full)."""
        if self.closing:
            return []
        lim = self.hub.limits
        text = msg if isinstance(msg, str) else P.dumps(msg)
        if len(self.control) >= lim.control_queue or (
                self.control and self.control_bytes + len(text) > lim.control_queue_bytes):
            if droppable:
                self.dropped_control += 1
                return []
            return self.close(1008, "not reading replies", "clients_closed_stuck")
        self.control.append(text)
        self.control_bytes += len(text)
        self.wake()
        return []

    def frames_full(self, size: int) -> bool:
        """The frame queue is full by count, or by bytes (an empty queue always takes one frame)."""
        lim = self.hub.limits
        return len(self.frames) >= lim.frame_queue or (
            bool(self.frames) and self.frame_bytes + size > lim.frame_queue_bytes)

    def queue_frame(self, data: bytes, is_key: bool, kind: int) -> None:
        """A frame of this client's format. Video: all queued plus this one dropped when full (resync on a
        keyframe, which is requested); JPEG: the oldest dropped (latest wins)."""
        hub = self.hub
        if kind == P.KIND_VIDEO:
            if not self.synced:
                if not is_key:
                    if self.sending_since is None:  # a client stuck in a send asks for no keyframes
                        hub.request_keyframe()
                    return
                self.synced = True
            if self.frames_full(len(data)):
                # too slow: everything queued is stale and the next delta can't be decoded without it
                n = len(self.frames) + 1
                self.clear_frames()
                self.dropped += n
                hub.counters["dropped"] += n
                self.resyncs += 1
                self.synced = False
                if self.sending_since is None:
                    hub.request_keyframe()
                return
        else:
            while self.frames and self.frames_full(len(data)):
                self.frame_bytes -= len(self.frames.popleft())  # latest wins
                self.dropped += 1
                hub.counters["dropped"] += 1
        self.frames.append(data)
        self.frame_bytes += len(data)
        self.wake()

    def clear_frames(self) -> None:
        self.frames.clear()
        self.frame_bytes = 0

    def next_outgoing(self) -> str | bytes | None:
        """The next message to send (replies before frames), taken off its queue; None when both are empty."""
        if self.control:
            text = self.control.popleft()
            self.control_bytes -= len(text)
            return text
        if self.frames:
            data = self.frames.popleft()
            self.frame_bytes -= len(data)
            return data
        return None

    def sending(self, now: float | None = None) -> None:
        """A send began (the send timeout runs from here)."""
        self.sending_since = self.hub.clock() if now is None else now

    def sent(self, data: str | bytes, duration_ns: int, now: float | None = None) -> None:
        """A send completed; frames (bytes) count in the client's and the server's send timings."""
        self.sending_since = None
        self.last_out = self.hub.clock() if now is None else now
        if isinstance(data, bytes | bytearray):
            self.send_ns.append(duration_ns)
            self.hub.timings["send"].append(duration_ns)
            self.sent_frames += 1
            self.sent_bytes += len(data)


# -- what the connections share ----------------------------------------------------------------------
class Hub:
    """The protocol state of one served desktop: its connections and what they share.

    ``screen``: the desktop's ``Screen.to_json()``; ``info``: the desktop's ``info()`` (asked at each
    ``hello``); ``video``: the encoder's description, None when there is no video (``video_error`` says why).
    """

    def __init__(self, limits: Limits | None = None, *, fps: float = 10.0, screen: dict | None = None,
                 info: Callable[[], dict] = dict, video: Callable[[], dict | None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = limits or Limits()
        self.fps = float(fps)
        self.screen = screen or {}
        self.info = info
        self.video = video
        self.video_error: str | None = None
        self.clock = clock
        self.connections: set[Connection] = set()
        self.by_address: dict[str, int] = {}
        self.limiter = RateLimiter(self.limits.action_rate, clock) if self.limits.action_rate else None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.timings: dict[str, deque] = {s: deque(maxlen=STAT_WINDOW) for s in STAGES}
        self.state: dict[str, Any] = {}
        self.policy: PolicyControl | None = None
        self.stopping = False  # the server is stopping: it releases input itself
        self.started = clock()
        self.force_key = True
        self._last_forced = -math.inf
        self._ids = itertools.count(1)
        self._stats_cache: tuple[float, dict] | None = None

    @property
    def has_video(self) -> bool:
        return self.video() is not None

    # -- connections ------------------------------------------------------------------------------
    def check_caps(self, address: str) -> None:
        """:class:`~agent.stream.http.Refusal` 503 over ``max_connections``, 429 over the per-address cap."""
        lim = self.limits
        if len(self.connections) >= lim.max_connections:
            raise Refusal(HTTPStatus.SERVICE_UNAVAILABLE,
                          f"too many connections (at most {lim.max_connections})", {"Retry-After": "5"})
        if self.by_address.get(address, 0) >= lim.max_connections_per_address:
            raise Refusal(HTTPStatus.TOO_MANY_REQUESTS,
                          f"too many connections from {address} (at most {lim.max_connections_per_address})",
                          {"Retry-After": "5"})

    def connect(self, role: str, format: str, address: str = "",
                wake: Callable[[], None] = _noop) -> tuple[Connection, list[Effect]]:
        """A websocket that passed the handshake: checks the caps again (:class:`Refusal` for a handshake
        that raced past them; counted), queues ``hello`` and asks for a keyframe."""
        try:
            self.check_caps(address)
        except Refusal:
            self.counters["refused_handshakes"] += 1
            raise
        if role not in P.ROLES:
            raise ValueError(f"role must be one of {P.ROLES}, got {role!r}")
        now = self.clock()
        conn = Connection(self, next(self._ids), role, format, address, joined=now, last_in=now, last_out=now,
                          wake=wake)
        self.counters["connections"] += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        out: list[Effect] = [Audit("connect", {"client": conn.id, "address": address, "role": role, "format": format})]
        out += conn.queue_control(self.hello(conn))
        self.connections.add(conn)
        self.request_keyframe()
        out.append(WakeProducer())
        return conn, out

    def disconnect(self, conn: Connection) -> list[Effect]:
        """The connection is gone: what a controller that acted held is released (unless the server is
        stopping: it releases everything itself)."""
        if conn not in self.connections:
            return []
        self.connections.discard(conn)
        left = self.by_address.get(conn.address, 1) - 1
        if left > 0:
            self.by_address[conn.address] = left
        else:
            self.by_address.pop(conn.address, None)
        conn.clear_frames()
        conn.control.clear()
        conn.control_bytes = 0
        out: list[Effect] = []
        if conn.role == "controller" and conn.actions and not self.stopping:
            out.append(ReleaseInput("disconnected", conn.id))
        out.append(Audit("disconnect", {"client": conn.id, "address": conn.address, "role": conn.role,
                                        "actions": conn.actions, "errors": conn.errors,
                                        "sent_frames": conn.sent_frames, "dropped": conn.dropped}))
        return out

    def hello(self, conn: Connection) -> dict:
        st = self.state
        return {
            "type": "hello", "protocol": P.PROTOCOL_VERSION, "role": conn.role, "client": conn.id,
            "format": conn.format,
            "screen": self.screen, "fps": self.fps,
            "video": self.video(),
            "video_error": self.video_error,
            "jpeg": True,
            "desktop": {"info": _safe_info(self.info), "instruction": st.get("instruction", ""),
                        "finished": st.get("finished", False), "success": st.get("success"),
                        "cursor": st.get("cursor"), "t": st.get("t", 0.0), "expert": st.get("expert", False)},
            "policy": self.policy.describe() if self.policy is not None else None,
            "header": {"size": P.HEADER_SIZE, "magic": P.MAGIC.decode(), "version": P.PROTOCOL_VERSION},
            "limits": self.limits.to_json(),
            "server_time_us": time.time_ns() // 1000,
        }

    def stats(self, you: Connection | None = None) -> dict:
        """Per-stage timings, counters and clients. The server-wide part is computed at most every
        ``STATS_CACHE_S`` (a flood of ``stats`` requests costs one computation per window)."""
        now = self.clock()
        cached = self._stats_cache
        if cached is None or now - cached[0] >= STATS_CACHE_S:
            up = now - self.started
            cached = (now, {
                "stages": {k: percentiles(list(v)) for k, v in self.timings.items()},
                "counters": dict(self.counters),
                "uptime_s": round(up, 3),
                "fps": self.fps,
                "clients": [c.describe() for c in sorted(self.connections, key=lambda c: c.id)],
                "video_bytes_per_s": round(self.counters["video_bytes"] / up, 1) if up > 0 else 0.0,
            })
            self._stats_cache = cached
        out = dict(cached[1])
        if you is not None:
            out["you"] = you.describe()
        return out

    # -- broadcasts -------------------------------------------------------------------------------
    def broadcast(self, msg: dict) -> list[Effect]:
        """To every client, dropped for one whose reply queue is full."""
        text = P.dumps(msg)
        out: list[Effect] = []
        for c in list(self.connections):
            out += c.queue_control(text, droppable=True)
        return out

    def broadcast_applied(self, client_id: int, action: Action, state: dict) -> list[Effect]:
        """Every client sees each applied action (the viewer's overlay); viewers never see typed text or keys."""
        full = action.to_json()
        redacted = dict(full)
        if "text" in full:
            redacted["text"] = f"<{len(full['text'])} characters>"
        if isinstance(action, Key):
            redacted["keys"] = "<redacted>"
        base = {"type": "applied", "client": client_id, "cursor": state["cursor"], "t": state["t"]}
        texts = {"controller": P.dumps({**base, "action": full}), "viewer": P.dumps({**base, "action": redacted})}
        out: list[Effect] = []
        for c in list(self.connections):
            out += c.queue_control(texts["controller" if c.role == "controller" else "viewer"], droppable=True)
        return out

    def publish_state(self, state: dict) -> list[Effect]:
        """The desktop's state after a capture or an action: broadcast when finished/success/instruction change."""
        old = self.state
        self.state = state
        if (old.get("finished"), old.get("success"), old.get("instruction")) != (
                state["finished"], state["success"], state["instruction"]):
            return self.broadcast({"type": "state", **state})
        return []

    def policy_stopped(self) -> list[Effect]:
        """The in-process policy's run ended: everyone hears it (``client`` 0)."""
        if self.policy is None:
            return []
        return self.broadcast({"type": "policy", "policy": self.policy.describe(), "client": 0})

    def video_changed(self) -> list[Effect]:
        """The encoder switched rungs mid-stream: video clients reconfigure and wait for its keyframe."""
        msg = {"type": "video", "video": self.video()}
        out: list[Effect] = []
        for c in list(self.connections):
            if c.format == "video":
                c.synced = False
                c.clear_frames()
            out += c.queue_control(msg)
        return out

    # -- outcomes of the driver's work ------------------------------------------------------------
    def action_done(self, conn: Connection, mid: Any, action: Action, state: dict) -> list[Effect]:
        conn.actions += 1
        self.counters["actions"] += 1
        out = conn.queue_control({"type": "ack", "id": mid, **state})
        return out + self.broadcast_applied(conn.id, action, state) + self.publish_state(state)

    def action_failed(self, conn: Connection, mid: Any, exc: BaseException) -> list[Effect]:
        """The desktop refused (``action``) or failed (``desktop``); any other exception is a desktop bug:
        reported, and held input released."""
        if isinstance(exc, ActionRefused):
            return conn.error(mid, "action", f"refused: {exc}")
        if isinstance(exc, DesktopError):
            return conn.error(mid, "desktop", str(exc))
        return [ReleaseInput("desktop error", conn.id), *conn.error(mid, "desktop", f"{type(exc).__name__}: {exc}")]

    def local_applied(self, action: Action, state: dict) -> list[Effect]:
        """An action of the in-process policy (client 0) was applied."""
        self.counters["actions"] += 1
        return self.broadcast_applied(0, action, state) + self.publish_state(state)

    def expert_done(self, conn: Connection, mid: Any, actions: list[dict]) -> list[Effect]:
        return conn.queue_control({"type": "expert", "id": mid, "actions": actions})

    def expert_failed(self, conn: Connection, mid: Any, exc: BaseException) -> list[Effect]:
        if isinstance(exc, ActionRefused):
            return conn.error(mid, "expert", str(exc))
        return conn.error(mid, "desktop", f"{type(exc).__name__}: {exc}")

    # -- frames -----------------------------------------------------------------------------------
    def request_keyframe(self) -> None:
        self.force_key = True

    def take_keyframe(self, now: float | None = None) -> bool:
        """Whether the next video frame is a forced keyframe (at most one per ``KEYFRAME_MIN_INTERVAL``)."""
        now = self.clock() if now is None else now
        if self.force_key and now - self._last_forced >= KEYFRAME_MIN_INTERVAL:
            self.force_key, self._last_forced = False, now
            return True
        return False

    def wants(self, fmt: str) -> bool:
        """Some client is subscribed to ``fmt``."""
        return any(c.format == fmt for c in self.connections)

    def distribute(self, data: bytes, is_key: bool, kind: int) -> None:
        """One encoded frame to every client subscribed to its format."""
        want = "video" if kind == P.KIND_VIDEO else "jpeg"
        for c in self.connections:
            if c.format == want and not c.closing:
                c.queue_frame(data, is_key, kind)


# -- the client's side ----------------------------------------------------------------------------
class DesktopView:
    """What a client knows of the served desktop (instruction, finished, success, cursor, ``t``, expert),
    from ``hello`` and then each ``ack``, ``applied`` and ``state`` (:class:`agent.desktops.remote.RemoteDesktop`)."""

    def __init__(self, hello: dict):
        d = hello.get("desktop") or {}
        self.instruction: str = d.get("instruction", "")
        self.finished: bool = bool(d.get("finished", False))
        self.success: bool | None = d.get("success")
        self.cursor: tuple[float, float] | None = tuple(d["cursor"]) if d.get("cursor") else None
        self.t: float = float(d.get("t", 0.0))
        self.expert = bool(d.get("expert", False))

    def update(self, msg: dict) -> None:
        """A server message: ``ack``, ``applied`` and ``state`` carry the desktop's state; others are ignored."""
        if msg.get("type") not in ("ack", "state", "applied"):
            return
        if "cursor" in msg:
            self.cursor = tuple(msg["cursor"]) if msg["cursor"] else None
        if "t" in msg:
            self.t = float(msg["t"])
        if "finished" in msg:
            self.finished = bool(msg["finished"])
        if "success" in msg:
            self.success = msg["success"]
        if msg.get("instruction") is not None:
            self.instruction = msg["instruction"]


# -- held input ----------------------------------------------------------------------------------------
class HeldInput:
    """The mouse buttons a ``mouse_down`` left pressed and nothing has released (whatever sent it).
    Used on the desktop's thread: :meth:`before` and :meth:`after` around each ``apply``."""

    def __init__(self) -> None:
        self.buttons: set[str] = set()

    def before(self, action: Action) -> None:
        if isinstance(action, MouseDown):
            self.buttons.add(action.button)

    def after(self, action: Action) -> None:
        if isinstance(action, MouseUp | Click | Drag):
            self.buttons.discard(action.button)

    def take(self) -> list[str]:
        """The held buttons (sorted), forgotten: they are being released."""
        held, self.buttons = sorted(self.buttons), set()
        return held

    @staticmethod
    def release_actions(buttons: list[str], cursor: tuple[float, float] | None) -> list[MouseUp]:
        """A ``mouse_up`` where the pointer is for each button (the desktops without ``release_input``)."""
        x, y = cursor or (0.5, 0.5)
        x, y = min(1.0, max(0.0, x)), min(1.0, max(0.0, y))
        return [MouseUp(x, y, b) for b in buttons]


def _safe_info(fn: Callable[[], dict]) -> dict:
    try:
        return dict(fn())
    except Exception:
        return {}
