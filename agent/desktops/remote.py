"""A desktop reached over a websocket: :class:`RemoteDesktop` implements the Desktop protocol.

Frames are decoded from the server's stream on a background reader thread (every packet, in
order, so the decoder never misses a reference); ``observe()`` returns the newest picture that
was captured after the last acknowledged action. ``apply()`` sends the action and waits for its
``ack`` (``ActionRefused`` on an ``error`` reply); a dropped connection is a ``DesktopError``.

Expert policies: when the server's desktop has an expert (virtual-desktop tasks), ``oracle`` is a
proxy whose ``expert_actions()`` asks the server for the expert's next actions from the current
state, so ``--policy scripted`` runs remotely exactly as it does locally.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import connect

from agent.desktops import ActionRefused, DesktopError
from agent.stream import protocol as P
from agent.stream.connection import DesktopView
from agent.stream.video import StreamDecoder, VideoUnavailable, jpeg_decode, open_stream_decoder
from capture import Frame, Screen
from policies.actions import Action, ActionError, Wait, parse_action


class _RemoteOracle:
    """Stands in for the server's task: only the expert's next actions travel."""

    def __init__(self, desktop: RemoteDesktop):
        self._desktop = desktop

    def expert_actions(self) -> list[Action]:
        reply = self._desktop._request({"type": "expert"})
        try:
            return [parse_action(a) for a in reply.get("actions", [])]
        except ActionError as e:
            raise DesktopError(f"the server sent a bad expert action: {e}") from None


class RemoteDesktop:
    """A served desktop (``dw serve``) at ``url`` (``ws://host:port[/ws]``), reached with ``token``.

    ``format``: ``"video"`` (decode the stream; falls back to JPEG where no decoder opens) or ``"jpeg"``.
    ``ssl``: an :class:`ssl.SSLContext` for ``wss://`` (:func:`agent.stream.tls.client_context` trusts a
    self-signed server's certificate); None uses the system's CAs.
    """

    def __init__(self, url: str, token: str, *, format: str = "video", timeout: float = 10.0,
                 frame_timeout: float = 10.0, action_timeout: float = 30.0, ssl: Any = None):
        if format not in ("video", "jpeg"):
            raise ValueError(f"format must be video or jpeg, got {format!r}")
        self.url = _ws_url(url)
        self.frame_timeout = frame_timeout
        self.action_timeout = action_timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: dict[int, dict | None] = {}
        self._closed_reason: str | None = None
        self._latest: tuple[np.ndarray, int, int] | None = None  # pixels, index, pts_ms
        self._returned = -1  # index of the last frame observe() returned
        self._min_index = 0  # frames captured after the last acknowledged action
        self._need_key = False
        self.decoder: StreamDecoder | None = None
        self.timings: dict[str, deque] = {k: deque(maxlen=10_000) for k in ("decode", "latency_us", "transfer_us")}
        self.bytes_received = 0
        try:
            tls = {"ssl": ssl} if ssl is not None and self.url.startswith("wss:") else {}
            self._ws = connect(self.url, additional_headers={"Authorization": f"Bearer {token}"}, **tls,
                               compression=None, max_size=P.MAX_MESSAGE_OUT, open_timeout=timeout,
                               proxy=None, close_timeout=2).__enter__()  # websockets >= 17: enter, not return
        except InvalidStatus as e:
            code = e.response.status_code
            why = {401: "no token", 403: "refused (wrong token, origin or host)"}.get(code, "refused")
            raise DesktopError(f"{self.url}: {why} (HTTP {code})") from None
        except InvalidURI as e:
            raise DesktopError(f"bad desktop URL {url!r}: {e}") from None
        except (OSError, TimeoutError, WebSocketException) as e:
            raise DesktopError(f"cannot connect to {self.url}: {e}") from None
        try:
            hello = P.parse_server_message(self._ws.recv(timeout))
        except (TimeoutError, ConnectionClosed, P.ProtocolError) as e:
            self._ws.close()
            raise DesktopError(f"{self.url}: no hello from the server: {e}") from None
        try:
            P.check_hello(hello)
        except P.ProtocolError as e:
            self._ws.close()
            raise DesktopError(f"{self.url}: not a digital-worker stream ({e})") from None
        self.hello = hello
        self.role: str = hello["role"]
        self.screen = Screen.from_json(hello["screen"])
        self._view = DesktopView(hello)  # instruction, finished, success, cursor, t: kept by the core
        self.format = "jpeg"
        if format == "video" and hello.get("video"):
            try:
                self.decoder = open_stream_decoder(hello["video"]["decision"])
                self.format = "video"
            except VideoUnavailable:
                self.decoder = None
        self._ws.send(P.dumps({"type": "subscribe", "format": self.format}))
        self._reader = threading.Thread(target=self._read, name="dw-remote-reader", daemon=True)
        self._reader.start()

    # -- the reader thread ------------------------------------------------------------------------
    def _read(self) -> None:
        reason = "the server closed the connection"
        try:
            for message in self._ws:
                if isinstance(message, bytes | bytearray):
                    self._on_frame(message)
                else:
                    self._on_text(message)
        except ConnectionClosed as e:
            reason = f"connection lost ({e})"
        except Exception as e:  # noqa: BLE001 - whatever breaks the reader ends the desktop, not the process
            reason = f"reader failed: {type(e).__name__}: {e}"
        with self._cond:
            self._closed_reason = self._closed_reason or reason
            self._cond.notify_all()

    def _on_frame(self, data: bytes) -> None:
        recv_us = time.time_ns() // 1000
        self.bytes_received += len(data)
        h = P.unpack_header(data)
        payload = memoryview(data)[P.HEADER_SIZE:]
        t0 = time.perf_counter_ns()
        if h.kind == P.KIND_JPEG:
            pictures = [jpeg_decode(bytes(payload))]
        else:
            if self.decoder is None:
                return
            if self._need_key and not h.keyframe:
                return
            try:
                pictures = self.decoder.decode(bytes(payload))
                self._need_key = False
            except Exception:
                self._need_key = True
                self._ws.send(P.dumps({"type": "keyframe"}))
                return
        if not pictures:
            return
        dec = time.perf_counter_ns() - t0
        done_us = time.time_ns() // 1000
        self.timings["decode"].append(dec)
        self.timings["transfer_us"].append(recv_us - h.ready_us)
        self.timings["latency_us"].append(done_us - h.capture_us)
        with self._cond:
            self._latest = (pictures[-1], h.index, h.pts_ms)
            self._cond.notify_all()

    def _on_text(self, text: str) -> None:
        try:
            msg = P.parse_server_message(text)
        except P.ProtocolError:
            return
        kind = msg.get("type")
        if kind == "video" and self.format == "video":  # the server's encoder switched rungs
            try:
                self.decoder = open_stream_decoder(msg["video"]["decision"])
                self._need_key = True
            except (VideoUnavailable, KeyError, TypeError):
                self.decoder = None
                self.format = "jpeg"
                self._ws.send(P.dumps({"type": "subscribe", "format": "jpeg"}))
        with self._cond:
            self._view.update(msg)
            mid = msg.get("id")
            if kind in P.REPLY_TYPES and mid in self._pending:
                self._pending[mid] = msg
                self._cond.notify_all()

    # -- requests ---------------------------------------------------------------------------------
    def _request(self, msg: dict, timeout: float | None = None) -> dict:
        mid = next(self._ids)
        with self._cond:
            if self._closed_reason is not None:
                raise DesktopError(f"remote desktop: {self._closed_reason}")
            self._pending[mid] = None
        try:
            self._ws.send(P.dumps({**msg, "id": mid}))
        except (ConnectionClosed, OSError) as e:
            with self._cond:
                self._pending.pop(mid, None)
            raise DesktopError(f"remote desktop: connection lost ({e})") from None
        deadline = time.monotonic() + (timeout or self.action_timeout)
        with self._cond:
            while self._pending.get(mid) is None:
                if self._closed_reason is not None:
                    self._pending.pop(mid, None)
                    raise DesktopError(f"remote desktop: {self._closed_reason}")
                left = deadline - time.monotonic()
                if left <= 0:
                    self._pending.pop(mid, None)
                    raise DesktopError(f"remote desktop: no reply to {msg['type']!r} within {timeout or self.action_timeout} s")
                self._cond.wait(left)
            reply = self._pending.pop(mid)
        if reply.get("type") == "error":
            if reply.get("field") in ("desktop",):
                raise DesktopError(f"remote desktop: {reply.get('message')}")
            raise ActionRefused(f"{reply.get('field')}: {reply.get('message')}")
        return reply

    # -- Desktop protocol -------------------------------------------------------------------------
    def observe(self) -> Frame:
        """The newest frame captured after the last acknowledged action (and newer than the last one returned)."""
        deadline = time.monotonic() + self.frame_timeout
        with self._cond:
            while True:
                if self._closed_reason is not None:
                    raise DesktopError(f"remote desktop: {self._closed_reason}")
                lat = self._latest
                if lat is not None and lat[1] >= self._min_index and lat[1] > self._returned:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DesktopError(f"remote desktop: no frame within {self.frame_timeout} s")
                self._cond.wait(left)
            pixels, index, pts = lat
            self._returned = index
            self._view.t = max(self._view.t, pts / 1000.0)
        return Frame(pixels, pts / 1000.0, index, self.screen)

    def apply(self, action: Action) -> None:
        timeout = self.action_timeout + (float(action.seconds) if isinstance(action, Wait) else 0.0)
        reply = self._request({"type": "action", "action": action.to_json()}, timeout)
        with self._cond:
            self._min_index = max(self._min_index, int(reply.get("frame", 0)))

    def keyframe(self) -> None:
        self._ws.send(P.dumps({"type": "keyframe"}))

    def server_stats(self) -> dict:
        """The server's ``stats`` reply: its per-stage timings, counters and clients (this one as ``you``)."""
        return self._request({"type": "stats"})

    def stats(self) -> dict:
        """This client's side (no network): bytes, decode time and capture-to-decoded latency."""
        from agent.stats import percentiles

        return {"format": self.format, "bytes_received": self.bytes_received,
                "decode": percentiles(list(self.timings["decode"])),
                "transfer": percentiles([u * 1000 for u in self.timings["transfer_us"]]),
                "end_to_end": percentiles([u * 1000 for u in self.timings["latency_us"]])}

    def now(self) -> float:
        return self._view.t

    def close(self) -> None:
        with self._cond:
            self._closed_reason = self._closed_reason or "closed"
            self._cond.notify_all()
        try:
            self._ws.close()
        except Exception:
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(5)

    def __enter__(self) -> RemoteDesktop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> tuple[float, float] | None:
        return self._view.cursor

    @property
    def instruction(self) -> str:
        return self._view.instruction

    @property
    def oracle(self) -> Any:
        return _RemoteOracle(self) if self._view.expert and self.role == "controller" else None

    @property
    def finished(self) -> bool:
        return self._view.finished

    @property
    def success(self) -> bool | None:
        return self._view.success

    def info(self) -> dict:
        return {"kind": "remote", "url": self.url, "format": self.format,
                "server": (self.hello.get("desktop") or {}).get("info", {}),
                "video": {k: v for k, v in (self.hello.get("video") or {}).items() if k != "decision"} or None}


def _ws_url(url: str) -> str:
    """``ws://host:port`` -> ``ws://host:port/ws``; a token in the query is kept out of ``info()``."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise DesktopError(f"bad desktop URL {url!r}: expected ws://HOST:PORT")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
