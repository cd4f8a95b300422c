import json
import shutil
import subprocess

import pytest

from agent.cli.commands.info import session_info
from agent.loop import Agent
from agent.sessions.format import SessionError, SessionRecorder, open_session
from policies.actions import Click, Key, Type
from policies.builtin import RandomPolicy
from tests.fakes import FakeDesktop


class ClickerPolicy:
    name = "clicker"

    def reset(self, instruction):
        self.n = 0

    def act(self, obs):
        self.n += 1
        if self.n % 2:
            return [Click(0.1 * (self.n % 10), 0.5)]
        return [Key("enter"), Type("hi")] if self.n % 4 == 0 else []


def record(tmp_path, name="s", steps=12, size=(320, 240), policy=None):
    d = FakeDesktop(*size)
    rec = SessionRecorder(tmp_path / name, d.screen, d.fps, instruction=d.instruction, policy="clicker", desktop=d.info())
    res = Agent(d, policy or ClickerPolicy(), recorder=rec, max_steps=steps).run()
    return tmp_path / name, res, d


def ffprobe_frames(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames,codec_name,width,height", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)["streams"][0]


def test_recorded_session_round_trip(tmp_path):
    path, res, desk = record(tmp_path)
    assert res.steps == 12 and res.reason == "max-steps"
    s = open_session(path)
    # one frame per step, plus the final frame showing the outcome of the last actions
    assert s.meta["closed"] and s.meta["frames"] == 13
    assert s.damage == []
    actions = s.actions()
    assert [e.action for e in actions] == desk.applied
    # "frame" is the last frame shown before the event, and t never goes backwards.
    assert all(0 <= e.frame < 12 for e in actions)
    assert s.events[-1].frame == 12 and s.events[-1].raw["event"] == "stop"
    assert [e.t for e in s.events] == sorted(e.t for e in s.events)
    frames = list(s.frames())
    assert len(frames) == 13
    assert frames[0].pixels.shape == (240, 320, 4)
    # pts carry the session clock in milliseconds: 0.1 s per frame plus 0.05 s per applied action
    expected = [0.1 * (i + 1) + 0.05 * sum(1 for e in actions if e.frame < i) for i in range(13)]
    assert [round(f.t, 3) for f in frames] == [round(t, 3) for t in expected]
    stop = [e.raw for e in s.events if e.raw.get("event") == "stop"]
    assert stop and stop[-1]["reason"] == "max-steps"


def test_ffprobe_opens_video_and_counts_frames(tmp_path):
    path, _, _ = record(tmp_path, size=(321, 241))  # odd size: padded for yuv420p, cropped on decode
    st = ffprobe_frames(path / "video.mkv")
    assert int(st["nb_read_frames"]) == json.loads((path / "session.json").read_text())["frames"] == 13
    s = open_session(path)
    f = next(iter(s.frames()))
    assert f.pixels.shape == (241, 321, 4)


def test_decoded_pixels_are_close_to_captured(tmp_path):
    d = FakeDesktop(320, 240)
    rec = SessionRecorder(tmp_path / "q", d.screen, d.fps)
    shown = []
    for _ in range(5):
        f = d.observe()
        shown.append(f.pixels.copy())
        rec.add_frame(f)
    rec.close()
    import numpy as np

    for a, b in zip(shown, open_session(tmp_path / "q").frames(), strict=True):
        err = np.abs(a[..., :3].astype(int) - b.pixels[..., :3].astype(int)).mean()
        assert err < 4.0


def test_existing_session_is_not_overwritten(tmp_path):
    path, _, _ = record(tmp_path)
    with pytest.raises(SessionError.__mro__[1], match="already holds a session"):
        SessionRecorder(path, FakeDesktop().screen, 10)


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"t": -1, "frame": 0, "source": "human"}', "'t' must be"),
        ('{"t": 1, "frame": "x", "source": "human"}', "'frame' must be"),
        ('{"t": 1, "frame": 0, "source": "alien"}', "'source' must be"),
        ('{"t": 1, "frame": 0, "source": "human", "action": {"type": "click", "x": 3, "y": 0}}', "bad action: x"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_malformed_event_line_names_file_and_line(tmp_path, line, message):
    path, _, _ = record(tmp_path)
    lines = (path / "events.jsonl").read_text().splitlines()
    lines.insert(2, line)
    (path / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionError) as e:
        open_session(path)
    assert "events.jsonl:3" in str(e.value) and message in str(e.value)


def test_torn_last_line_is_damage_not_error(tmp_path):
    path, _, _ = record(tmp_path)
    with open(path / "events.jsonl", "a") as f:
        f.write('{"t": 99, "frame": 3, "sou')
    s = open_session(path)
    assert any("torn last line" in d for d in s.damage)


def test_bad_session_json(tmp_path):
    path, _, _ = record(tmp_path)
    (path / "session.json").write_text("{")
    with pytest.raises(SessionError, match="session.json: not valid JSON"):
        open_session(path)
    (path / "session.json").write_text(json.dumps({"schema": 99, "screen": {}}))
    with pytest.raises(SessionError, match="schema version 99"):
        open_session(path)
    with pytest.raises(SessionError, match="no such session"):
        open_session(tmp_path / "nope")


def test_truncated_video_reads_up_to_damage(tmp_path):
    path, _, _ = record(tmp_path, steps=30)
    video = path / "video.mkv"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) * 2 // 3])
    info = session_info(str(path), verify=True)
    assert 0 < info["frames"] < 31
    assert any("31 frames" in d for d in info["damage"])


def test_video_cut_to_nothing_is_a_clear_error(tmp_path):
    path, _, _ = record(tmp_path)
    (path / "video.mkv").write_bytes(b"")
    with pytest.raises(SessionError, match="video.mkv: empty file"):
        list(open_session(path).frames())
    (path / "video.mkv").write_bytes(b"garbage" * 10)
    with pytest.raises(SessionError, match="cannot open"):
        list(open_session(path).frames())


def test_info_cli_errors_are_one_line(tmp_path, capsys):
    from agent.cli.main import main

    path, _, _ = record(tmp_path)
    with open(path / "events.jsonl", "a") as f:
        f.write("oops\n")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "events.jsonl:" in err[0] and "Traceback" not in err[0]
    shutil.rmtree(path)
    assert main(["info", str(path)]) == 2


def test_policy_errors_skip_the_step(tmp_path):
    class Broken:
        name = "broken"

        def reset(self, instruction):
            self.n = 0

        def act(self, obs):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("boom")
            if self.n == 3:
                return "garbage"
            return [Click(0.5, 0.5)]

    path, res, _ = record(tmp_path, steps=5, policy=Broken())
    assert res.steps == 5 and len(res.errors) == 2
    s = open_session(path)
    errs = [e.raw for e in s.events if e.raw.get("event") == "policy_error"]
    assert len(errs) == 2 and "boom" in errs[0]["error"]
    assert len(s.actions()) == 3


def test_random_policy_is_seeded():
    d = FakeDesktop()
    a = RandomPolicy(seed=3)
    b = RandomPolicy(seed=3)
    a.reset(""), b.reset("")
    seq_a = [a.act(None) for _ in range(50)]
    seq_b = [b.act(None) for _ in range(50)]
    assert seq_a == seq_b
    assert any(seq_a) and d is not None


def test_session_files_are_readable_by_the_owner_only(tmp_path, monkeypatch):
    """Typed text may be a password: the directory is 0700 and every file 0600 by default."""
    import os
    import stat

    monkeypatch.delenv("DW_SHARED_SESSIONS", raising=False)
    path, _, _ = record(tmp_path, steps=4)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    files = sorted(p.name for p in path.iterdir())
    assert files == ["events.jsonl", "session.json", "video.mkv"]  # the reserve file is gone
    for name in files:
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o600, name
    monkeypatch.setenv("DW_SHARED_SESSIONS", "1")  # relaxed: the umask decides
    old = os.umask(0o022)
    try:
        shared, _, _ = record(tmp_path, "shared", steps=4)
    finally:
        os.umask(old)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    for name in files:
        assert stat.S_IMODE((shared / name).stat().st_mode) == 0o644, name


def test_dw_shared_sessions_flag_sets_the_environment_for_the_command_only(monkeypatch, capsys):
    import os

    from agent.cli import main as cli

    monkeypatch.delenv("DW_SHARED_SESSIONS", raising=False)
    seen = {}
    monkeypatch.setattr("agent.cli.commands.cache.run", lambda args: seen.setdefault("env", os.environ.get(
        "DW_SHARED_SESSIONS")) and 0)
    assert cli.main(["--shared-sessions", "cache", "x"]) == 0
    assert seen["env"] == "1" and "DW_SHARED_SESSIONS" not in os.environ


def test_checksums_catch_a_flipped_bit_in_the_video(tmp_path, capsys):
    """A SHA-256 per segment is written at close; dw info --verify reports a file changed since."""
    from agent.cli.main import main

    path, _, _ = record(tmp_path, steps=6)
    meta = json.loads((path / "session.json").read_text())
    assert set(meta["video"]["sha256"]) == {"video.mkv"} and len(meta["video"]["sha256"]["video.mkv"]) == 64
    assert session_info(str(path), verify=True)["checksums"] == {"video.mkv": "ok"}
    video = path / "video.mkv"
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0x10
    video.write_bytes(bytes(data))
    info = session_info(str(path), verify=True)
    assert info["checksums"] == {"video.mkv": "mismatch"}
    assert any("SHA-256 differs" in d for d in info["damage"])
    assert main(["info", "--verify", str(path)]) == 1
    assert "SHA-256 differs" in capsys.readouterr().out
    assert main(["info", str(path)]) == 0  # without --verify the file is not hashed


def test_session_json_types_are_checked_one_line_naming_each_field(tmp_path):
    path, _, _ = record(tmp_path, steps=3)
    meta = json.loads((path / "session.json").read_text())
    meta.update(fps="30", desktop="virtual", encoder=[1], video={"segments": [1]}, instruction=7)
    (path / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError) as e:
        open_session(path)
    msg = str(e.value)
    assert "\n" not in msg and "5 bad fields" in msg
    for field in ("'fps'", "'desktop'", "'encoder'", "'video.segments[0]'", "'instruction'"):
        assert field in msg


@pytest.mark.parametrize("segment", ["/etc/passwd", "../other/video.mkv", "sub/video.mkv", ".."])
def test_segment_paths_are_confined_to_the_session_directory(tmp_path, segment):
    path, _, _ = record(tmp_path, steps=3)
    meta = json.loads((path / "session.json").read_text())
    meta["video"]["segments"] = [segment]
    (path / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match="inside the session directory"):
        open_session(path)


def test_a_symlinked_segment_leading_out_is_refused(tmp_path):
    path, _, _ = record(tmp_path, steps=3)
    (path / "video.mkv").unlink()
    (path / "video.mkv").symlink_to("/dev/zero")
    with pytest.raises(SessionError, match="leads outside the session directory"):
        open_session(path)


@pytest.mark.parametrize("width, height, message", [
    (65535, 65535, "within \\[1, 16384\\]"),
    (20000, 100, "within \\[1, 16384\\]"),
    (16384, 16384, "cannot hold the 16384x16384 screen"),
])
def test_screen_sizes_are_bounded_and_checked_against_the_video(tmp_path, width, height, message):
    """A session.json claiming a huge screen is refused before a frame is allocated (65535x65535
    BGRA would be 16 GiB a frame); one within the bound is checked against the video's own size."""
    path, _, _ = record(tmp_path, steps=3, size=(160, 120))
    meta = json.loads((path / "session.json").read_text())
    meta["screen"].update(width=width, height=height)
    (path / "session.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match=message):
        s = open_session(path)
        list(s.frames())


@pytest.mark.parametrize("blob", [b"[" * 100_000 + b"]" * 100_000, b'{"schema": 1, "fps": ' + b"9" * 5000 + b"}"],
                         ids=["deep-nesting", "5000-digit-integer"])
def test_session_json_the_parser_refuses_is_a_session_error(tmp_path, blob):
    path, _, _ = record(tmp_path, steps=3)
    (path / "session.json").write_bytes(blob)
    with pytest.raises(SessionError, match="not valid JSON"):
        open_session(path)


@pytest.mark.parametrize("line", [b'{"t": 1, "frame": 0, "source": "policy", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                  b'{"t": ' + b"9" * 5000 + b', "frame": 0, "source": "policy"}',
                                  b'{"t": ' + b"9" * 400 + b', "frame": 0, "source": "policy"}'],
                         ids=["deep-nesting", "5000-digit-integer", "400-digit-integer"])
def test_event_lines_the_parser_refuses_name_file_and_line(tmp_path, line):
    path, _, _ = record(tmp_path, steps=3)
    events = path / "events.jsonl"
    events.write_bytes(line + b"\n" + events.read_bytes())
    with pytest.raises(SessionError, match="events.jsonl:1: "):
        open_session(path)
