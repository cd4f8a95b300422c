"""The session video writer: BGRA frames in, Matroska out, millisecond pts, conversion off the caller's thread.

``write()`` only queues the picture (a bounded queue: when the encoder falls behind, ``write`` blocks —
backpressure, never unbounded memory). A worker thread converts (OpenCV) and encodes. If the rung fails
mid-stream, the next rung of the ladder takes over with a keyframe in a **new segment file**
(``video.mkv`` → ``video.1.mkv`` → ``video.2.mkv``): a different encoder cannot continue the same Matroska
track (its codec private data differs). Frames the failed encoder had not yet emitted are re-encoded by
the replacement, so no frame is lost.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import av
import numpy as np

from encoders.ladder import EncoderError, Rung, Session, Spec, choose

# Short clusters (and a flush after each): a SIGKILLed recorder leaves a file readable up to ~0.2 s before the kill.
CONTAINER_OPTIONS = {"cluster_time_limit": "200", "cluster_size_limit": "2097152", "flush_packets": "1"}
MAX_PENDING = 64  # frames an encoder may hold back before they are no longer kept for a replacement


class VideoWriter:
    """Writes BGRA frames into ``path`` (normally ``video.mkv``) and, after a rung switch, into segments."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, purpose: str = "record", *,
                 keyint: int | None = None, ladder: list[Rung] | None = None, refresh: bool = False,
                 queue_size: int = 4):
        self.path = Path(path)
        self.width, self.height, self.fps, self.purpose = width, height, fps, purpose
        self._keyint, self._ladder, self._refresh = keyint, ladder, refresh
        try:
            self.rung, self.spec, self.decision, self._index = choose(
                width, height, fps, purpose, ladder=ladder, refresh=refresh, keyint=keyint)
        except ValueError as e:
            raise EncoderError(str(e)) from e
        self.segments: list[str] = [self.path.name]
        self.decision["segments"] = self.segments
        self.decision["segment_frames"] = [0]
        self.decision["switches"] = []
        self.frames = 0
        self._last_pts = -1
        self._error: BaseException | None = None
        self._closed = False
        self._pending: dict[int, np.ndarray] = {}
        self._need_key = True
        self._container = None
        self._open_segment(self.path, self.rung, self.spec)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._thread = threading.Thread(target=self._run, name="dw-video-writer", daemon=True)
        self._thread.start()

    # -- caller side ---------------------------------------------------------------------------------
    def write(self, pixels_bgra: np.ndarray, t: float, keyframe: bool = False) -> None:
        """Queue one HxWx4 BGRA picture taken at ``t`` seconds. Do not modify the array afterwards."""
        if self._error is not None:
            raise EncoderError(f"video writer failed: {self._error}") from self._error
        if self._closed:
            raise EncoderError("video writer is closed")
        if pixels_bgra.shape != (self.height, self.width, 4) or pixels_bgra.dtype != np.uint8:
            raise EncoderError(f"expected a {self.height}x{self.width}x4 uint8 BGRA array, got "
                               f"{pixels_bgra.shape} {pixels_bgra.dtype}")
        pts = max(int(round(t * 1000)), self._last_pts + 1)  # strictly increasing milliseconds
        self._last_pts = pts
        while True:
            try:
                self._queue.put((pixels_bgra, pts, keyframe), timeout=0.5)
                break
            except queue.Full:
                if self._error is not None or not self._thread.is_alive():
                    raise EncoderError(f"video writer failed: {self._error}") from self._error
        self.frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise EncoderError(f"video writer failed: {self._error}") from self._error

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker side ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                self._encode(*item)
            self._flush()
        except BaseException as e:  # noqa: BLE001 - reported to the caller by write()/close()
            self._error = e
            while True:  # unblock a writer waiting on a full queue
                try:
                    if self._queue.get_nowait() is None:
                        break
                except queue.Empty:
                    break
        finally:
            self._close_container()

    def _open_segment(self, path: Path, rung: Rung, spec: Spec) -> None:
        self._container = av.open(str(path), "w", format="matroska", options=dict(CONTAINER_OPTIONS))
        try:
            self._session = Session(rung, spec, self._container)
        except EncoderError:
            self._close_container()
            raise
        self._need_key = True

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError):
                pass
            self._container = None

    def _mux(self, packets: list[av.Packet]) -> None:
        for p in packets:
            self._container.mux(p)
            if p.pts is not None:
                self._pending.pop(int(p.pts), None)
            self.decision["segment_frames"][-1] += 1

    def _encode(self, bgra: np.ndarray, pts: int, keyframe: bool) -> None:
        self._pending[pts] = bgra
        if len(self._pending) > MAX_PENDING:
            self._pending.pop(min(self._pending))
        for _attempt in range(8):
            try:
                packets = self._session.encode(bgra, pts, keyframe or self._need_key)
                self._need_key = False
                self._mux(packets)
                return
            except EncoderError as e:
                self._switch(str(e), pts)
                if pts not in self._pending:  # _switch re-encoded it with the pending frames
                    return
        raise EncoderError("too many encoder switches on one frame")

    def _flush(self) -> None:
        for _attempt in range(8):
            try:
                self._mux(self._session.encode(None))
                return
            except EncoderError as e:
                self._switch(str(e), min(self._pending) if self._pending else self._last_pts)
        raise EncoderError("too many encoder switches while flushing")

    def _switch(self, reason: str, pts: int) -> None:
        """Replace the failed rung by the next one that proves itself, in a new segment file."""
        old = self.rung.name
        self._close_container()
        self.rung, self.spec, dec, self._index = choose(
            self.width, self.height, self.fps, self.purpose, ladder=self._ladder, refresh=self._refresh,
            keyint=self._keyint, start=self._index + 1)
        name = f"{self.path.stem}.{len(self.segments)}{self.path.suffix}"
        self._open_segment(self.path.with_name(name), self.rung, self.spec)
        self.segments.append(name)
        self.decision["segment_frames"].append(0)
        frame_index = sum(self.decision["segment_frames"][:-1])
        self.decision["switches"].append({
            "frame": frame_index, "pts_ms": min(self._pending) if self._pending else pts, "segment": name,
            "from": old, "to": self.rung.name, "reason": reason,
            "decision": {k: v for k, v in dec.items() if k not in ("rejected",)},
            "rejected": dec["rejected"],
        })
        pending = sorted(self._pending.items())
        for i, (p, img) in enumerate(pending):
            packets = self._session.encode(img, p, keyframe=(i == 0))
            self._need_key = False
            self._mux(packets)


def open_writer(path: str | Path, width: int, height: int, fps: float, purpose: str = "record", **kw) -> VideoWriter:
    """The session recorder's writer (see ``VideoWriter``). Raises ``EncoderError`` if no rung works."""
    return VideoWriter(path, width, height, fps, purpose, **kw)
