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
