"""Sessions on disk: one versioned schema shared by recorder, replayer, evaluator and trainer.

A session is a directory holding ``session.json`` (geometry, fps, encoder decision, task,
policy, host), ``video.mkv`` (Matroska, pts in milliseconds of the session clock) and
``events.jsonl`` (one event per line, flushed as written). A recorder killed at any point
leaves a directory that :func:`open_session` reads up to the kill.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import platform
import socket
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import UserError
from capture import Frame, Screen
from capture.frame import MAX_SIDE
from capture.recorded import RecordedVideo, VideoDamaged
from encoders import open_writer
from policies.actions import Action, ActionError, parse_action

SCHEMA_VERSION = 1
SOURCES = ("human", "policy", "system", "conductor")  # conductor: workflow steps and decisions (agent.conductor)
# A system event whose action is what the scripted expert would do on that frame (``dw demos
# --dagger``): a training label beside the actions that really ran, never one of them.
EXPERT_LABEL = "expert_label"
# a system event with ``word``: the word naming what the expert's next action points at (demos)
EXPERT_TARGET = "expert_target"


# Limits on what a reader takes from disk (a damaged or hostile session must not exhaust memory).
MAX_META_BYTES = 16 << 20  # session.json
MAX_EVENT_LINE = 1 << 20  # one line of events.jsonl
MAX_SEGMENTS = 1000  # video segments (the writer adds one per encoder switch)
MAX_FPS = 1000.0
# Space kept back while recording, given up at close so that session.json can still be marked
# closed when the disk has filled up meanwhile.
RESERVE_FILE = ".dw-reserve"
RESERVE_BYTES = 48 << 10  # session.json is 5-30 KB (the encoder ladder's rejected rungs, switches)
# Sessions hold what a worker saw and typed (passwords, too): their files are readable by the owner
# only unless this environment variable is 1 (``dw --shared-sessions``), when the umask decides.
SHARED_ENV = "DW_SHARED_SESSIONS"


class SessionError(UserError):
    """A session that cannot be read, with the file (and line) at fault."""


class RecordingError(UserError, RuntimeError):
    """Recording cannot go on (disk full, encoder gone); what was written stays readable."""


def _private_default() -> bool:
    return os.environ.get(SHARED_ENV, "").strip().lower() not in ("1", "true", "yes")


def _describe_os_error(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{os.strerror(e.errno)} (disk full)"
    return e.strerror or str(e)


def _atomic_write_json(path: Path, obj: dict, private: bool = True) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves no .tmp behind
        raise


def file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file (a FIFO or device is refused, not waited on)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def host_info() -> dict:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version()}


def _write_reserve(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except (AttributeError, OSError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise
            os.write(fd, os.urandom(RESERVE_BYTES))  # a file system without fallocate: real blocks
    finally:
        os.close(fd)


class SessionRecorder:
    """Writes a session as it happens: frames to video, events flushed line by line.

    While it records, a small reserve file holds back disk space; :meth:`close` gives it up before
    marking ``session.json`` closed, so a disk that filled up meanwhile still gets a closed session.
    """

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
        private: bool | None = None,
    ):
        """``private``: files readable by the owner only (default, unless ``$DW_SHARED_SESSIONS`` is 1).
        A session that cannot start (disk full, unwritable path) raises :class:`RecordingError` and
        leaves nothing behind."""
        self.path = Path(out_dir)
        self.private = _private_default() if private is None else private
        self.screen = screen
        self.frames = 0
        self._last_t = 0.0
        self._closed = False
        created: list[Path] = []  # what to take away again if the session cannot start
        made_dir = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.path))
        except OSError as e:
            raise RecordingError(f"{self.path}: cannot create the session directory: {_describe_os_error(e)}") from e
        if (self.path / "session.json").exists():
            raise UserError(f"{self.path}: already holds a session; choose another --out")
        try:
            if self.private and made_dir:
                os.chmod(self.path, 0o700)
            self._reserve = self.path / RESERVE_FILE
            created.append(self._reserve)
            _write_reserve(self._reserve)
            created.append(self.path / "video.mkv")
            if self.private:  # FFmpeg truncates an existing file and keeps its mode
                os.close(os.open(self.path / "video.mkv", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            try:
                self.writer = open_writer(self.path / "video.mkv", screen.width, screen.height, fps, "record")
            except OSError:
                raise
            except Exception as e:
                cause = e.__cause__ or e.__context__
                if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise cause from e
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
            created.append(self.path / "session.json")
            _atomic_write_json(self.path / "session.json", self.meta, self.private)
            created.append(self.path / "events.jsonl")
            fd = os.open(self.path / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600 if self.private else 0o666)
            # Line-buffered: every event reaches the OS as one write, so a SIGKILL loses at most the event in flight.
            self._events = os.fdopen(fd, "w", buffering=1)
        except BaseException as e:
            self._abandon(created, made_dir)
            if isinstance(e, OSError):
                raise RecordingError(f"{self.path}: cannot start the session: {_describe_os_error(e)}; "
                                     "nothing was recorded") from e
            raise

    def _abandon(self, created: list[Path], made_dir: bool) -> None:
        """Take away what a session that could not start had written (no half session is left)."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the start's own error is the one reported
                pass
        for f in created:
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass
        if made_dir:
            try:
                self.path.rmdir()
            except OSError:
                pass

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
            raise RecordingError(f"{self.path / 'events.jsonl'}: {_describe_os_error(e)}") from e

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
            error = error or f"closing events.jsonl failed: {_describe_os_error(e)}"
        segments = list(getattr(self.writer, "segments", ["video.mkv"]))
        sums = {}
        for name in segments:  # checked by ``dw info --verify``: a file changed after recording is found
            try:
                if self.private:  # segments after an encoder switch were created by FFmpeg
                    os.chmod(self.path / name, 0o600)
                sums[name] = file_sha256(self.path / name)
            except OSError:
                pass
        self.meta.update(
            closed=True,
            end_reason=reason,
            frames=self.writer.frames,
            duration=round(self._last_t, 6),
            encoder=self.writer.decision,
            video={"segments": segments, "pts_unit": "ms", "sha256": sums},
            **summary,
        )
        if error:
            self.meta["close_error"] = error
        try:
            self._reserve.unlink(missing_ok=True)  # the space kept back for this write
        except OSError:
            pass
        try:
            _atomic_write_json(self.path / "session.json", self.meta, self.private)
        except OSError as e:  # the session.json written at the start stays, marked not closed
            raise RecordingError(f"{self.path / 'session.json'}: cannot mark the session closed: "
                                 f"{_describe_os_error(e)}") from e
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
        return float(self.meta.get("fps") or 0)  # a number within [0, MAX_FPS]: checked on reading

    @property
    def instruction(self) -> str:
        return str(self.meta.get("instruction", ""))

    @property
    def desktop(self) -> dict:
        return dict(self.meta.get("desktop") or {})

    @property
    def video_paths(self) -> list[Path]:
        """The video segments, in order: plain file names inside the session directory (checked on reading)."""
        segments = (self.meta.get("video") or {}).get("segments") or ["video.mkv"]
        return [self.path / s for s in segments]

    def video(self) -> RecordedVideo:
        return RecordedVideo(self.video_paths, self.screen)

    @property
    def _video_may_be_missing(self) -> bool:
        """Not closed (stopped before its first cluster reached the disk), or closed after a
        recording error (a disk that filled up at the start): no frames is damage, not an error."""
        reason = self.meta.get("end_reason")
        return not self.meta.get("closed") or (isinstance(reason, str) and reason.startswith("recording-error"))

    def verify_checksums(self) -> dict[str, str]:
        """Each segment's SHA-256 against the one written at close: ``{name: "ok" | "mismatch" |
        "missing" | "not recorded"}``; a mismatch or a missing file is also added to ``damage``."""
        sums = (self.meta.get("video") or {}).get("sha256") or {}
        out: dict[str, str] = {}
        for p in self.video_paths:
            want = sums.get(p.name)
            if want is None:
                out[p.name] = "not recorded"
                continue
            try:
                got = file_sha256(p)
            except OSError as e:
                out[p.name] = "missing"
                self.damage.append(f"{p.name}: cannot be read to check its checksum: {e.strerror or e}")
                continue
            out[p.name] = "ok" if got == want else "mismatch"
            if got != want:
                self.damage.append(f"{p.name}: SHA-256 differs from the one written at close "
                                   "(the file changed after recording)")
        return out

    def frames(self) -> Iterator[Frame]:
        """Decoded frames at their recorded ``t``; damage is appended to ``self.damage``."""
        video = self.video()
        try:
            yield from video
        except VideoDamaged as e:
            if not self._video_may_be_missing:
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
            if not self._video_may_be_missing:
                raise SessionError(str(e)) from None
            self.damage.append(f"no readable frames: {e}")
            n = 0
        self.damage.extend(d for d in video.damage if d not in self.damage)
        return n

    def actions(self, sources: tuple[str, ...] = ("human", "policy")) -> list[Event]:
        return [e for e in self.events if e.action is not None and e.source in sources]


def _read_json(f: Path, data: bytes) -> Any:
    """JSON from ``data``; anything Python's parser refuses (bad syntax or encoding, integers over
    4,300 digits, nesting deep enough to exhaust the stack) is a :class:`SessionError`."""
    try:
        return json.loads(data)
    except RecursionError:
        raise SessionError(f"{f}: not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, the int digit limit
        raise SessionError(f"{f}: not valid JSON: {getattr(e, 'msg', None) or e}") from None


def _type_name(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() >= 1000:
        return "a huge integer"
    return "null" if v is None else {"dict": "object", "list": "array", "str": "string", "bool": "boolean",
                                     "int": "integer", "float": "number"}.get(type(v).__name__, type(v).__name__)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    if isinstance(v, int):
        return v.bit_length() < 1000
    return math.isfinite(v)


def _segment_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return f"must be a non-empty file name, got {'an empty string' if name == '' else _type_name(name)}"
    if "\x00" in name or len(name) > 255:
        return "is not a usable file name"
    if name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name):
        return f"must be a file name inside the session directory, got {name[:80]!r}"
    return None


def check_meta(meta: dict) -> list[str]:
    """Every field of ``session.json`` whose type or value a reader cannot use, one line each
    (fields this reader does not know are left alone)."""
    bad: list[str] = []

    def expect(key: str, ok: bool, what: str) -> None:
        if key in meta and meta[key] is not None and not ok:
            bad.append(f"{key!r} must be {what}, got {_type_name(meta[key])}"
                       + (f" {meta[key]!r}" if _is_number(meta[key]) or isinstance(meta[key], float) else ""))

    try:
        Screen.from_json(meta.get("screen"))
    except (TypeError, ValueError) as e:
        bad.append(f"'screen': {e}")
    fps = meta.get("fps")
    expect("fps", _is_number(fps) and 0 <= fps <= MAX_FPS, f"a number within [0, {MAX_FPS:g}]")
    for key in ("instruction", "policy", "created", "end_reason", "close_error"):
        expect(key, isinstance(meta.get(key), str), "a string")
    for key in ("desktop", "encoder", "host"):
        expect(key, isinstance(meta.get(key), dict), "an object")
    expect("closed", isinstance(meta.get("closed"), bool), "true or false")
    expect("success", isinstance(meta.get("success"), bool), "true, false or null")
    for key in ("frames", "steps"):
        v = meta.get(key)
        expect(key, _is_number(v) and isinstance(v, int) and v >= 0, "a non-negative integer")
    expect("duration", _is_number(meta.get("duration")) and meta["duration"] >= 0, "a non-negative number")
    c0 = meta.get("cursor0")
    expect("cursor0", isinstance(c0, list) and len(c0) == 2 and all(_is_number(v) for v in c0),
           "a pair of numbers")
    video = meta.get("video")
    if video is not None and not isinstance(video, dict):
        bad.append(f"'video' must be an object, got {_type_name(video)}")
    elif isinstance(video, dict):
        segments = video.get("segments")
        if segments is not None:
            if not isinstance(segments, list) or not 1 <= len(segments) <= MAX_SEGMENTS:
                bad.append(f"'video.segments' must be a list of 1 to {MAX_SEGMENTS} file names, "
                           f"got {_type_name(segments)}" + (f" of {len(segments)}" if isinstance(segments, list) else ""))
            else:
                for i, name in enumerate(segments):
                    why = _segment_problem(name)
                    if why:
                        bad.append(f"'video.segments[{i}]' {why}")
                        break
        sums = video.get("sha256")
        if sums is not None and not (isinstance(sums, dict) and all(
                isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v) for v in sums.values())):
            bad.append("'video.sha256' must map segment names to SHA-256 hex digests")
        if video.get("pts_unit") not in (None, "ms"):
            bad.append(f"'video.pts_unit' must be \"ms\", got {video.get('pts_unit')!r}"[:200])
    desktop = meta.get("desktop")
    if isinstance(desktop, dict) and desktop.get("kind") == "virtual":
        size = desktop.get("size")
        if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in size)):
            bad.append(f"'desktop.size' must be [width, height] within 1..{MAX_SIDE}")
    return bad


def _read_meta(path: Path) -> dict:
    f = path / "session.json"
    if not f.is_file():
        raise SessionError(f"{path}: not a session (no session.json)")
    try:
        if f.stat().st_size > MAX_META_BYTES:
            raise SessionError(f"{f}: {f.stat().st_size} bytes, over the limit of {MAX_META_BYTES} for session.json")
        data = f.read_bytes()
    except OSError as e:
        raise SessionError(f"{f}: cannot be read: {e.strerror or e}") from None
    meta = _read_json(f, data)
    if not isinstance(meta, dict):
        raise SessionError(f"{f}: must hold a JSON object")
    schema = meta.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        shown = schema if _is_number(schema) or schema is None else _type_name(schema)
        raise SessionError(f"{f}: schema version {shown!r} is not supported (this reader knows {SCHEMA_VERSION})")
    if not isinstance(meta.get("screen"), dict):
        raise SessionError(f"{f}: 'screen' is missing or not an object")
    bad = check_meta(meta)
    if bad:
        raise SessionError(f"{f}: {len(bad)} bad field{'s' if len(bad) > 1 else ''}: " + "; ".join(bad))
    return meta


def _parse_event(obj: Any, where: str, line: int) -> Event:
    if not isinstance(obj, dict):
        raise SessionError(f"{where}:{line}: an event must be a JSON object")
    t, frame, source = obj.get("t"), obj.get("frame"), obj.get("source")
    if not _is_number(t) or not t >= 0:
        shown = repr(t) if _is_number(t) or isinstance(t, float) else _type_name(t)
        raise SessionError(f"{where}:{line}: 't' must be a non-negative number of seconds, got {shown}"[:300])
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < -1 or frame.bit_length() > 62:
        shown = repr(frame) if isinstance(frame, int) and 0 < frame.bit_length() <= 62 else _type_name(frame)
        raise SessionError(f"{where}:{line}: 'frame' must be an integer >= -1, got {shown}"[:300])
    if source not in SOURCES:
        shown = repr(source) if isinstance(source, str) else _type_name(source)
        raise SessionError(f"{where}:{line}: 'source' must be one of {', '.join(SOURCES)}, got {shown}"[:300])
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
    events: list[Event] = []
    last_t = 0.0
    try:
        fh = open(f, "rb")
    except OSError as e:
        raise SessionError(f"{f}: cannot be read: {e.strerror or e}") from None
    with fh:
        i = 0
        while True:
            try:
                raw = fh.readline(MAX_EVENT_LINE + 1)
            except OSError as e:
                raise SessionError(f"{f}:{i + 1}: cannot be read: {e.strerror or e}") from None
            if not raw:
                break
            i += 1
            complete = raw.endswith(b"\n")
            if len(raw) > MAX_EVENT_LINE:
                raise SessionError(f"{f}:{i}: line longer than {MAX_EVENT_LINE} bytes")
            if not raw.strip():
                continue
            try:
                obj = _read_json(f, raw)
            except SessionError as e:
                if not complete:  # only the last line can lack its newline
                    damage.append(f"events.jsonl:{i}: torn last line dropped (recorder stopped mid-write)")
                    break
                raise SessionError(f"{f}:{i}: {str(e).removeprefix(f'{f}: ')}") from None
            ev = _parse_event(obj, str(f), i)
            if ev.t + 1e-6 < last_t:
                raise SessionError(f"{f}:{i}: 't' goes backwards ({ev.t} after {last_t})")
            last_t = ev.t
            events.append(ev)
    return events


def _sessions_below(root: Path) -> list[str]:
    """Every folder below ``root`` that holds a ``session.json``, sorted, linked folders followed
    (a dataset of links to sessions); each real folder is searched once, so a link loop ends."""
    found, searched = [], set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in searched:
            dirs[:] = []
            continue
        searched.add(real)
        dirs.sort()  # walked in name order: which path a linked session is found by does not vary
        if "session.json" in files:
            found.append(d)
    return sorted(found)


def find_sessions(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Sessions named by ``paths``, in order: a session directory as given; any other directory
    searched recursively for ``session.json`` (sorted by path; linked folders followed); duplicates
    dropped. A path that is neither stays in the list, so its task reports why it is not a session."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and not (p / "session.json").exists():
            found = _sessions_below(p)
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
    screen = Screen.from_json(meta["screen"])  # checked by _read_meta
    root = p.resolve()
    for name in (meta.get("video") or {}).get("segments") or ["video.mkv"]:
        target = (p / name).resolve()
        if target.parent != root:  # a symbolic link out of the directory
            raise SessionError(f"{p / 'session.json'}: video segment {name!r} leads outside the session "
                               f"directory (to {str(target)[:200]})")
    damage: list[str] = []
    if not meta.get("closed"):
        damage.append("session was not closed (recorder stopped abruptly): read up to the last flushed data")
    events = read_events(p, damage)
    return Session(p, meta, screen, events, damage)
