"""Sessions on disk: one versioned schema shared by recorder, replayer, evaluator and trainer.

A session is a directory holding ``session.json`` (geometry, fps, encoder decision, task,
policy, host), ``video.mkv`` (Matroska, pts in milliseconds of the session clock) and
``events.jsonl`` (one event per line, flushed as written). A recorder killed at any point
leaves a directory that :func:`open_session` reads up to the kill.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import UserError
from capture import Frame, Screen
from capture.recorded import RecordedVideo, VideoDamaged
from encoders import open_writer
from policies.actions import Action, ActionError, parse_action

SCHEMA_VERSION = 1
SOURCES = ("human", "policy", "system")
# A system event whose action is what the scripted expert would do on that frame (``dw demos
# --dagger``): a training label beside the actions that really ran, never one of them.
EXPERT_LABEL = "expert_label"
# a system event with ``word``: the word naming what the expert's next action points at (demos)
EXPERT_TARGET = "expert_target"


class SessionError(UserError):
    """A session that cannot be read, with the file (and line) at fault."""


class RecordingError(RuntimeError):
    """Recording cannot go on (disk full, encoder gone); what was written stays readable."""


def _atomic_write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def host_info() -> dict:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version()}


class SessionRecorder:
    """Writes a session as it happens: frames to video, events flushed line by line."""

    def __init__(
        self,
        out_dir: str | Path,
        screen: Screen,
        fps: float,
        *,
        instruction: str = "",
        policy: str = "",
        desktop: dict | None = None,
        extra: dict | None = None,
    ):
        self.path = Path(out_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / "session.json").exists():
            raise UserError(f"{self.path}: already holds a session; choose another --out")
        self.screen = screen
        self.frames = 0
        self._last_t = 0.0
        self._closed = False
        try:
            self.writer = open_writer(self.path / "video.mkv", screen.width, screen.height, fps, "record")
        except Exception as e:
            raise UserError(f"cannot open a video encoder for {screen.width}x{screen.height}: {e}") from e
        self.meta: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "screen": screen.to_json(),
            "fps": fps,
            "encoder": self.writer.decision,
            "video": {"segments": list(getattr(self.writer, "segments", ["video.mkv"])), "pts_unit": "ms"},
            "instruction": instruction,
            "policy": policy,
            "desktop": desktop or {},
            "host": host_info(),
            "closed": False,
            **(extra or {}),
        }
        _atomic_write_json(self.path / "session.json", self.meta)
        # Line-buffered: every event reaches the OS as one write, so a SIGKILL loses at most the event in flight.
        self._events = open(self.path / "events.jsonl", "w", buffering=1)

    def add_frame(self, frame: Frame) -> int:
        """Encode one frame; returns its index in the recording."""
        try:
            self.writer.write(frame.pixels, frame.t)
        except Exception as e:
            raise RecordingError(f"{self.path / 'video.mkv'}: {e}") from e
        self._last_t = frame.t
        self.frames += 1
        return self.frames - 1

    def add_event(self, t: float, source: str, action: Action | None = None, *, frame: int | None = None,
                  **fields: Any) -> None:
        """Append one event; ``frame`` defaults to the last frame recorded (the one shown before it)."""
        if source not in SOURCES:
            raise ValueError(f"event source must be one of {SOURCES}, got {source!r}")
        event: dict[str, Any] = {"t": round(float(t), 6), "frame": self.frames - 1 if frame is None else frame,
                                 "source": source}
        if action is not None:
            event["action"] = action.to_json()
        event.update(fields)
        try:
            self._events.write(json.dumps(event, sort_keys=True) + "\n")
        except OSError as e:
            raise RecordingError(f"{self.path / 'events.jsonl'}: {e}") from e

    def close(self, reason: str = "finished", **summary: Any) -> None:
        """Finish the video and mark the session closed with why it ended."""
        if self._closed:
            return
        self._closed = True
        error = None
        try:
            self.writer.close()
        except Exception as e:  # the events and what was written stay readable
            error = f"closing the video failed: {e}"
        try:
            self._events.close()
        except OSError as e:
            error = error or f"closing events.jsonl failed: {e}"
        self.meta.update(
            closed=True,
            end_reason=reason,
            frames=self.writer.frames,
            duration=round(self._last_t, 6),
            encoder=self.writer.decision,
            video={"segments": list(getattr(self.writer, "segments", ["video.mkv"])), "pts_unit": "ms"},
            **summary,
        )
        if error:
            self.meta["close_error"] = error
        try:
            _atomic_write_json(self.path / "session.json", self.meta)
        except OSError as e:  # the session.json written at the start stays, marked not closed
            raise RecordingError(f"{self.path / 'session.json'}: cannot mark the session closed: {e}") from e
        if error:
            raise RecordingError(f"{self.path}: {error}")

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("error" if exc[0] else "finished")


@dataclass(slots=True)
class Event:
    t: float
    frame: int
    source: str
    action: Action | None
    raw: dict
    line: int


@dataclass
class Session:
    """A session read back from disk. ``damage`` lists what was found wrong but survivable."""

    path: Path
    meta: dict
    screen: Screen
    events: list[Event]
    damage: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return float(self.meta.get("fps") or 0)

    @property
    def instruction(self) -> str:
        return str(self.meta.get("instruction", ""))

    @property
    def desktop(self) -> dict:
        return dict(self.meta.get("desktop") or {})

    @property
    def video_paths(self) -> list[Path]:
        segments = (self.meta.get("video") or {}).get("segments") or ["video.mkv"]
        return [self.path / s for s in segments]

    def video(self) -> RecordedVideo:
        return RecordedVideo(self.video_paths, self.screen)

    def frames(self) -> Iterator[Frame]:
        """Decoded frames at their recorded ``t``; damage is appended to ``self.damage``."""
        video = self.video()
        try:
            yield from video
        except VideoDamaged as e:
            if self.meta.get("closed"):
                raise SessionError(str(e)) from None
            # A recorder stopped before its first cluster reached the disk: nothing to read, not an error.
            self.damage.append(f"no readable frames: {e}")
        finally:
            self.damage.extend(d for d in video.damage if d not in self.damage)

    def count_frames(self) -> int:
        video = self.video()
        try:
            n = video.count()
        except VideoDamaged as e:
            if self.meta.get("closed"):
                raise SessionError(str(e)) from None
            self.damage.append(f"no readable frames: {e}")
            n = 0
        self.damage.extend(d for d in video.damage if d not in self.damage)
        return n

    def actions(self, sources: tuple[str, ...] = ("human", "policy")) -> list[Event]:
        return [e for e in self.events if e.action is not None and e.source in sources]


def _read_meta(path: Path) -> dict:
    f = path / "session.json"
    if not f.is_file():
        raise SessionError(f"{path}: not a session (no session.json)")
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SessionError(f"{f}: not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise SessionError(f"{f}: must hold a JSON object")
    schema = meta.get("schema")
    if schema != SCHEMA_VERSION:
        raise SessionError(f"{f}: schema version {schema!r} is not supported (this reader knows {SCHEMA_VERSION})")
    if not isinstance(meta.get("screen"), dict):
        raise SessionError(f"{f}: 'screen' is missing or not an object")
    return meta


def _parse_event(obj: Any, where: str, line: int) -> Event:
    if not isinstance(obj, dict):
        raise SessionError(f"{where}:{line}: an event must be a JSON object")
    t, frame, source = obj.get("t"), obj.get("frame"), obj.get("source")
    if isinstance(t, bool) or not isinstance(t, int | float) or not t >= 0 or t != t or t == float("inf"):
        raise SessionError(f"{where}:{line}: 't' must be a non-negative number of seconds, got {t!r}")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < -1:
        raise SessionError(f"{where}:{line}: 'frame' must be an integer >= -1, got {frame!r}")
    if source not in SOURCES:
        raise SessionError(f"{where}:{line}: 'source' must be one of {', '.join(SOURCES)}, got {source!r}")
    action = None
    if "action" in obj and obj["action"] is not None:
        try:
            action = parse_action(obj["action"])
        except ActionError as e:
            raise SessionError(f"{where}:{line}: bad action: {e}") from None
    return Event(float(t), frame, source, action, obj, line)


def read_events(path: Path, damage: list[str]) -> list[Event]:
    """Parse ``events.jsonl``. A malformed line is an error naming file and line; a torn last
    line (a recorder killed mid-write) is reported as damage and skipped."""
    f = path / "events.jsonl"
    if not f.is_file():
        damage.append("events.jsonl: missing")
        return []
    data = f.read_bytes()
    lines = data.split(b"\n")
    torn_tail = not data.endswith(b"\n") and data != b""
    events: list[Event] = []
    last_t = 0.0
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if torn_tail and i == len(lines):
                damage.append(f"events.jsonl:{i}: torn last line dropped (recorder stopped mid-write)")
                break
            raise SessionError(f"{f}:{i}: not valid JSON: {e.msg if hasattr(e, 'msg') else e}") from None
        ev = _parse_event(obj, str(f), i)
        if ev.t + 1e-6 < last_t:
            raise SessionError(f"{f}:{i}: 't' goes backwards ({ev.t} after {last_t})")
        last_t = ev.t
        events.append(ev)
    return events


def find_sessions(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Sessions named by ``paths``, in order: a session directory as given; any other directory
    searched recursively for ``session.json`` (sorted by path); duplicates dropped. A path that
    is neither stays in the list, so its task reports why it is not a session."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and not (p / "session.json").exists():
            found = sorted(str(f.parent) for f in p.rglob("session.json"))
            if not found:
                raise UserError(f"{p}: no sessions found (no session.json below it)")
        else:
            found = [str(p)]
        for s in found:
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def open_session(path: str | Path) -> Session:
    """Read and validate a session directory; raises :class:`SessionError` with file and line."""
    p = Path(path)
    if not p.exists():
        raise SessionError(f"{p}: no such session directory")
    if not p.is_dir():
        raise SessionError(f"{p}: a session is a directory (session.json, video.mkv, events.jsonl)")
    meta = _read_meta(p)
    try:
        screen = Screen.from_json(meta["screen"])
    except (KeyError, TypeError, ValueError) as e:
        raise SessionError(f"{p / 'session.json'}: bad 'screen': {e}") from None
    damage: list[str] = []
    if not meta.get("closed"):
        damage.append("session was not closed (recorder stopped abruptly): read up to the last flushed data")
    events = read_events(p, damage)
    return Session(p, meta, screen, events, damage)
