"""A corrupt-session generator: hostile and damaged variants of a good recorded session.

Each variant is ``(name, mutate)``: ``mutate(path)`` damages a copy of a good session in place
(truncations, bit flips, garbage lines, huge numbers, wrong JSON types, deep nesting, huge sizes,
hostile paths). ``tests/test_corrupt_sessions.py`` runs ``dw info``, ``dw info --verify`` and
``dw replay`` on every one: each must end in a result or one clear error line, never a
traceback, a hang or a runaway allocation. The copy ``outside/`` (a sibling of the damaged
session) is where hostile paths point.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

HUGE = 10**400  # past float's range
HUGER = "9" * 5000  # past Python's 4,300-digit int parsing limit (written as JSON text)
DEEP = 100_000  # nesting deep enough to exhaust the parser's stack


def _meta(path: Path) -> dict:
    return json.loads((path / "session.json").read_text())


def _set_meta(path: Path, **changes) -> None:
    meta = _meta(path)
    for key, value in changes.items():
        cur = meta
        *parents, last = key.split(".")
        for k in parents:
            cur = cur.setdefault(k, {})
        cur[last] = value
    (path / "session.json").write_text(json.dumps(meta))


def _meta_text(path: Path, replace: dict[str, str]) -> None:
    """Edit session.json as text (for what json.dumps cannot write: 5,000-digit integers, NaN)."""
    text = json.dumps(_meta(path))
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    (path / "session.json").write_text(text)


def _truncate(name: str, fraction: float) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        f = path / name
        data = f.read_bytes()
        f.write_bytes(data[: int(len(data) * fraction)])
    return mutate


def _flip(name: str, where: float, bit: int = 0) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        f = path / name
        data = bytearray(f.read_bytes())
        data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
        f.write_bytes(bytes(data))
    return mutate


def _garbage(name: str, where: float, size: int, seed: int) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        f = path / name
        data = bytearray(f.read_bytes())
        at = int(len(data) * where)
        data[at: at + size] = random.Random(seed).randbytes(size)
        f.write_bytes(bytes(data))
    return mutate


def _event_line(line: bytes, at: int = 1) -> Callable[[Path], None]:
    """Insert ``line`` as line number ``at + 1`` of events.jsonl (0: first)."""
    def mutate(path: Path) -> None:
        f = path / "events.jsonl"
        lines = f.read_bytes().split(b"\n")
        lines.insert(at, line)
        f.write_bytes(b"\n".join(lines))
    return mutate


def _event(**fields) -> bytes:
    base = {"t": 0.5, "frame": 0, "source": "policy", "action": {"type": "move", "x": 0.5, "y": 0.5}}
    return json.dumps({**base, **fields}).encode()


def _meta_set(**changes) -> Callable[[Path], None]:
    return lambda path: _set_meta(path, **changes)


def _meta_raw(**replace: str) -> Callable[[Path], None]:
    """Set top-level fields to raw JSON text: ``_meta_raw(fps="Infinity")``."""
    def mutate(path: Path) -> None:
        meta = _meta(path)
        for k in replace:
            meta[k] = f"@@{k}@@"
        (path / "session.json").write_text(json.dumps(meta))
        _meta_text(path, {f'"@@{k}@@"': v for k, v in replace.items()})
    return mutate


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda path: (path / name).write_bytes(data)


def _remove(name: str) -> Callable[[Path], None]:
    return lambda path: (path / name).unlink()


def _replace_by_dir(name: str) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        (path / name).unlink()
        (path / name).mkdir()
    return mutate


def _replace_by_fifo(name: str) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        (path / name).unlink()
        os.mkfifo(path / name)
    return mutate


def _symlink_video(target: Callable[[Path], str]) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        (path / "video.mkv").unlink()
        os.symlink(target(path), path / "video.mkv")
    return mutate


def _segments(value) -> Callable[[Path], None]:
    return _meta_set(**{"video.segments": value})


def _screen(**fields) -> Callable[[Path], None]:
    def mutate(path: Path) -> None:
        meta = _meta(path)
        meta["screen"] = {**meta["screen"], **fields}
        (path / "session.json").write_text(json.dumps(meta))
    return mutate


def _deep_meta(path: Path) -> None:
    text = json.dumps(_meta(path))
    (path / "session.json").write_text(text[:-1] + ', "deep": ' + "[" * DEEP + "]" * DEEP + "}")


def _oversized_meta(path: Path) -> None:
    meta = _meta(path)
    meta["padding"] = "x" * (17 << 20)
    (path / "session.json").write_text(json.dumps(meta))


def _outside_video(path: Path) -> None:
    """A segment name leading out through ``..`` to another session's video."""
    _set_meta(path, **{"video.segments": [f"../{path.parent.name}/outside/video.mkv"]})


VARIANTS: list[tuple[str, Callable[[Path], None]]] = [
    # truncations
    *[(f"video-cut-{f * 100:g}pct", _truncate("video.mkv", f)) for f in (0.0, 0.001, 0.1, 0.5, 0.99)],
    *[(f"meta-cut-{f * 100:g}pct", _truncate("session.json", f)) for f in (0.0, 0.01, 0.5, 0.99)],
    *[(f"events-cut-{f * 100:g}pct", _truncate("events.jsonl", f)) for f in (0.01, 0.5, 0.97)],
    ("video-missing", _remove("video.mkv")),
    ("events-missing", _remove("events.jsonl")),
    ("meta-missing", _remove("session.json")),
    # bit flips
    *[(f"video-flip-{w * 100:g}pct", _flip("video.mkv", w, b)) for w, b in
      ((0.0, 0), (0.02, 3), (0.1, 7), (0.5, 1), (0.8, 5), (0.999, 2))],
    *[(f"meta-flip-{int(w * 100)}pct", _flip("session.json", w, b)) for w, b in ((0.1, 1), (0.6, 6))],
    *[(f"events-flip-{int(w * 100)}pct", _flip("events.jsonl", w, b)) for w, b in ((0.2, 0), (0.7, 5))],
    ("video-garbage-block", _garbage("video.mkv", 0.4, 1024, 1)),
    ("video-unknown-codec", lambda p: (p / "video.mkv").write_bytes(  # a codec FFmpeg does not know
        (p / "video.mkv").read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_UNKNOWN/CODEC"))),
    ("video-all-garbage", lambda p: (p / "video.mkv").write_bytes(random.Random(2).randbytes(20000))),
    # garbage lines
    ("events-garbage-line", _event_line(random.Random(3).randbytes(60).replace(b"\n", b" "))),
    ("events-invalid-utf8", _event_line(b'{"t": 1, "source": "\xff\xfe"}')),
    ("events-nul-line", _event_line(b"\x00" * 100)),
    ("events-null-line", _event_line(b"null")),
    ("events-string-line", _event_line(b'"an event"')),
    ("events-long-line", _event_line(b'{"t": 1, "x": "' + b"a" * (2 << 20) + b'"}')),
    ("meta-garbage", lambda p: (p / "session.json").write_bytes(random.Random(4).randbytes(3000))),
    ("meta-empty-object", _write("session.json", b"{}")),
    # huge numbers
    ("event-t-huge", _event_line(_event(t=HUGE))),
    ("event-frame-huge", _event_line(_event(frame=HUGE))),
    ("event-x-huge", _event_line(_event(action={"type": "click", "x": HUGE, "y": 0.5}))),
    ("event-wait-huge", _event_line(_event(action={"type": "wait", "seconds": -HUGE}))),
    ("event-5000-digits", _event_line(b'{"t": ' + HUGER.encode() + b', "frame": 0, "source": "policy"}')),
    ("event-t-infinity", _event_line(b'{"t": Infinity, "frame": 0, "source": "policy"}')),
    ("event-t-nan", _event_line(b'{"t": NaN, "frame": 0, "source": "policy"}')),
    ("meta-fps-huge", _meta_set(fps=HUGE)),
    ("meta-fps-infinity", _meta_raw(fps="Infinity")),
    ("meta-width-huge", _screen(width=HUGE)),
    ("meta-frames-5000-digits", _meta_raw(frames=HUGER)),
    ("meta-schema-huge", _meta_set(schema=HUGE)),
    ("meta-duration-nan", _meta_raw(duration="NaN")),
    ("meta-scale-huge", _screen(scale=1e300)),
    # wrong types
    ("meta-fps-string", _meta_set(fps="30")),
    ("meta-segments-ints", _segments([1, 2])),
    ("meta-segments-string", _segments("video.mkv")),
    ("meta-segments-empty", _segments([])),
    ("meta-desktop-string", _meta_set(desktop="virtual")),
    ("meta-encoder-list", _meta_set(encoder=[1, 2])),
    ("meta-encoder-rejected-int", _meta_set(**{"encoder.rejected": 5})),
    ("meta-screen-list", _meta_set(screen=[160, 120])),
    ("meta-screen-strings", _screen(width="160", height="120")),
    ("meta-screen-bool", _screen(width=True)),
    ("meta-instruction-int", _meta_set(instruction=42)),
    ("meta-closed-string", _meta_set(closed="yes")),
    ("meta-video-string", _meta_set(video="video.mkv")),
    ("meta-sha256-int", _meta_set(**{"video.sha256": 7})),
    ("meta-is-list", _write("session.json", b"[1, 2, 3]")),
    ("meta-cursor0-string", _meta_set(cursor0="x")),
    ("meta-markup-instruction", _meta_set(instruction="[/bold] [red]x[/red] [link=file:///etc]")),
    ("event-is-array", _event_line(b"[0.5, 0, \"policy\"]")),
    ("event-action-list", _event_line(_event(action=["click", 0.5, 0.5]))),
    ("event-source-dict", _event_line(_event(source={"human": 1}))),
    ("event-reason-object", _event_line(_event(event="stop", reason={"a": [1]}, source="system"))),
    ("meta-deep-nesting", _deep_meta),
    ("event-deep-nesting", _event_line(b'{"t": 1, "x": ' + b"[" * DEEP + b"]" * DEEP + b"}")),
    # huge sizes
    ("screen-65535", _screen(width=65535, height=65535)),
    ("screen-20000", _screen(width=20000, height=20000)),
    ("screen-16384", _screen(width=16384, height=16384)),
    ("screen-4096x3072", _screen(width=4096, height=3072)),  # within limits, not what the video holds
    ("screen-1x1", _screen(width=1, height=1)),
    ("screen-zero", _screen(width=0, height=0)),
    ("screen-negative", _screen(width=-160)),
    ("desktop-size-huge", _meta_set(desktop={"kind": "virtual", "task": "click-button", "seed": 1,
                                             "size": [65535, 65535]})),
    ("desktop-size-mismatch", _meta_set(desktop={"kind": "virtual", "task": "click-button", "seed": 1,
                                                 "size": [4096, 4096]})),
    ("desktop-bad-task", _meta_set(desktop={"kind": "virtual", "task": 17, "seed": "x", "size": [160, 120]})),
    ("meta-17mb", _oversized_meta),
    ("segments-5000", _segments(["video.mkv"] * 5000)),
    # hostile paths
    ("segment-absolute", _segments(["/etc/passwd"])),
    ("segment-dotdot", _outside_video),
    ("segment-dev-zero", _segments(["../../../../../../dev/zero"])),
    ("segment-subdir", _segments(["sub/video.mkv"])),
    ("segment-dot", _segments(["."])),
    ("segment-empty-name", _segments([""])),
    ("segment-nul", _segments(["video\x00.mkv"])),
    ("video-symlink-dev-zero", _symlink_video(lambda p: "/dev/zero")),
    ("video-symlink-outside", _symlink_video(lambda p: str(p.parent / "outside" / "video.mkv"))),
    ("video-is-dir", _replace_by_dir("video.mkv")),
    ("events-is-dir", _replace_by_dir("events.jsonl")),
    ("meta-is-dir", _replace_by_dir("session.json")),
    ("video-is-fifo", _replace_by_fifo("video.mkv")),
    ("events-is-fifo", _replace_by_fifo("events.jsonl")),
    ("meta-is-fifo", _replace_by_fifo("session.json")),
]
