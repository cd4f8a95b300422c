"""Property-based tests: every input ends in a result or a clear error, never a crash or a hang."""

import copy
import json
import math
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sessions.format import SessionError, open_session
from policies.actions import ACTION_TYPES, Action, ActionError, parse_action

# Integers past float's range (a 400-digit coordinate is valid JSON) and past 64 bits.
huge_ints = st.builds(lambda digits, sign: sign * 10**digits + 7, st.integers(19, 420), st.sampled_from([1, -1]))
json_scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=20)
                | huge_ints)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)
field_names = st.sampled_from(["x", "y", "x2", "y2", "button", "count", "dx", "dy", "keys", "text", "seconds", "extra"])
action_like = st.builds(
    lambda t, fields: {"type": t, **fields},
    st.sampled_from(list(ACTION_TYPES) + ["nope", ""]),
    st.dictionaries(field_names, json_scalars | st.floats(0, 1) | st.sampled_from(["left", "ctrl+c", "enter", "hi"]),
                    max_size=5),
)
# JSON text nested deeper than the parser's stack ("[[[[...]]]]" or {"a": {"a": ...}}).
deep_json = st.builds(lambda n, obj: ('{"a": ' * n + "1" + "}" * n) if obj else ("[" * n + "]" * n),
                      st.integers(500, 4000), st.booleans())  # the parser gives up near 1,000 levels


@settings(max_examples=3000, deadline=None)
@given(action_like | json_values)
def test_action_parser_never_crashes(obj):
    try:
        a = parse_action(obj)
    except ActionError as e:
        assert e.field and str(e)
        return
    assert isinstance(a, Action)
    again = parse_action(json.loads(json.dumps(a.to_json())))
    assert again == a
    for v in a.to_json().values():
        if isinstance(v, float):
            assert math.isfinite(v)


@settings(max_examples=2500, deadline=None)
@given(st.builds(lambda t, x, y: {"type": t, "x": x, "y": y}, st.sampled_from(["move", "click", "mouse_down"]),
                 st.floats(-1, 2), st.floats(-1, 2)))
def test_coordinates_outside_unit_square_are_refused(obj):
    inside = 0 <= obj["x"] <= 1 and 0 <= obj["y"] <= 1
    try:
        parse_action(obj)
        assert inside
    except ActionError as e:
        assert not inside and e.field in ("x", "y")


@pytest.fixture(scope="module")
def good_session(tmp_path_factory):
    from agent.loop import Agent
    from agent.sessions.format import SessionRecorder
    from policies.builtin import RandomPolicy
    from tests.fakes import FakeDesktop

    base = tmp_path_factory.mktemp("fuzz")
    d = FakeDesktop(160, 120)
    rec = SessionRecorder(base / "good", d.screen, d.fps, desktop=d.info())
    Agent(d, RandomPolicy(seed=2), recorder=rec, max_steps=15).run()
    return base / "good"


def _copy(src, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


event_lines = st.one_of(
    st.binary(max_size=80),
    st.builds(str.encode, deep_json),
    st.builds(lambda t, f: json.dumps({"t": t, "frame": f, "source": "policy"}).encode(),
              huge_ints | st.floats(0, 10), huge_ints | st.integers(-1, 5)),
    st.builds(lambda digits: b'{"t": 1, "frame": ' + b"9" * digits + b', "source": "policy"}',
              st.integers(4200, 6000)),  # past Python's 4,300-digit parsing limit
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(st.sampled_from(["t", "frame", "source", "action", "x"]),
                                                                json_values, max_size=5)),
    st.builds(lambda t, f, s, a: json.dumps({"t": t, "frame": f, "source": s, "action": a}).encode(),
              st.floats(-1, 100), st.integers(-3, 50), st.sampled_from(["human", "policy", "system", "x"]),
              action_like),
)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(event_lines, max_size=6), st.booleans())
def test_events_reader_never_crashes(good_session, tmp_path, lines, torn):
    path = _copy(good_session, tmp_path / "s")
    data = b"\n".join(lines) + (b"" if torn else b"\n")
    (path / "events.jsonl").write_bytes(data)
    try:
        s = open_session(path)
    except SessionError as e:
        assert "events.jsonl" in str(e)
        return
    assert all(e.source in ("human", "policy", "system") for e in s.events)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.builds(lambda d: json.dumps(d).encode(),
                 st.dictionaries(st.sampled_from(["schema", "screen", "fps", "video", "closed", "desktop"]),
                                 json_values | st.just(1), max_size=6))))
def test_session_json_reader_never_crashes(good_session, tmp_path, blob):
    path = _copy(good_session, tmp_path / "s")
    (path / "session.json").write_bytes(blob)
    try:
        s = open_session(path)
        n = s.count_frames()
        assert n >= 0
    except SessionError as e:
        assert str(path) in str(e)


hostile_values = st.one_of(
    json_values, huge_ints, st.integers(16_385, 2**31), st.integers(-2**31, 0),
    st.sampled_from(["../video.mkv", "/etc/passwd", "", ".", "a/b.mkv", "video.mkv", "30", [], {}, [1, 2]]),
    st.lists(st.sampled_from(["video.mkv", "../../x", "/dev/zero", 1, None]), max_size=3),
)
meta_fields = st.sampled_from([
    "fps", "screen", "screen.width", "screen.height", "screen.scale", "screen.left", "video", "video.segments",
    "video.sha256", "video.pts_unit", "encoder", "encoder.rejected", "desktop", "desktop.size", "instruction",
    "closed", "frames", "duration", "cursor0", "end_reason", "success",
])


def _with_fields(meta: dict, changes: dict) -> dict:
    meta = json.loads(json.dumps(meta))
    for key, value in changes.items():
        cur = meta
        *parents, last = key.split(".")
        for k in parents:
            if not isinstance(cur.get(k), dict):
                cur[k] = {}
            cur = cur[k]
        cur[last] = copy.deepcopy(value)  # the sampled {} and [] are shared between examples
    return meta


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(meta_fields, hostile_values, min_size=1, max_size=4) | st.builds(lambda d: {"deep": d}, deep_json))
def test_hostile_session_json_fields_never_crash(good_session, tmp_path, changes):
    """A good session.json with fields given wrong types, huge numbers, huge sizes, hostile segment
    paths or deep nesting: a session whose first frames decode at the screen's size, or a
    SessionError naming the file; nothing outside the directory is opened."""
    import itertools

    path = _copy(good_session, tmp_path / "s")
    meta = json.loads((good_session / "session.json").read_text())
    if "deep" in changes:  # as text: json.dumps cannot nest this deep
        text = json.dumps(meta)[:-1] + ', "deep": ' + changes["deep"] + "}"
    else:
        text = json.dumps(_with_fields(meta, changes))
    (path / "session.json").write_text(text)
    try:
        s = open_session(path)
        assert s.count_frames() >= 0
        for f in itertools.islice(s.frames(), 3):
            assert f.pixels.shape == (s.screen.height, s.screen.width, 4)
        assert all(p.resolve().parent == path.resolve() for p in s.video_paths)
    except SessionError as e:
        assert str(path) in str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(0, 1), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_corrupt_or_truncated_video_never_crashes(good_session, tmp_path, cut, flips):
    path = _copy(good_session, tmp_path / "s")
    video = path / "video.mkv"
    data = bytearray(video.read_bytes())
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    video.write_bytes(bytes(data[: max(0, int(len(data) * cut))]))
    s = open_session(path)
    try:
        frames = list(s.frames())
    except SessionError as e:
        assert "video.mkv" in str(e)
        return
    assert len(frames) <= json.loads((good_session / "session.json").read_text())["frames"]
    for f in frames:
        assert f.pixels.shape == (120, 160, 4)


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=200) | st.builds(json.dumps, json_values) |
       st.builds(lambda a: json.dumps({"type": "action", "id": 1, "action": a}), action_like))
def test_websocket_client_messages_never_crash(text):
    from agent.stream.protocol import ProtocolError, parse_client_message

    try:
        msg = parse_client_message(text)
    except ProtocolError as e:
        assert e.field
        return
    assert isinstance(msg, dict) and "type" in msg
    if msg["type"] == "action":
        try:
            parse_action(msg.get("action"))
        except ActionError as e:
            assert e.field


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64))
def test_websocket_frame_headers_never_crash(data):
    from agent.stream.protocol import ProtocolError, unpack_header

    try:
        h = unpack_header(data)
    except ProtocolError:
        return
    assert h.index >= 0
