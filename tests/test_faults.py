"""Faults survived: the disk filling up while recording."""

import json
import subprocess
import sys

from agent.sessions.format import open_session

DISK_FULL = r"""
import resource, signal, sys
sys.path.insert(0, sys.argv[2])
from agent.loop import Agent
from agent.sessions.format import SessionRecorder
from policies.builtin import RandomPolicy
from tests.fakes import FakeDesktop

class NoDone(RandomPolicy):
    def act(self, obs):
        return [a for a in super().act(obs) if a.type != "done"]

# Every file this process writes may grow to 64 KiB: past it, writes fail as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
d = FakeDesktop(320, 240)
rec = SessionRecorder(sys.argv[1], d.screen, d.fps, desktop=d.info())
res = Agent(d, NoDone(seed=4), recorder=rec, max_steps=100000).run()
print(res.reason)
"""


def test_disk_full_while_recording_is_a_clear_stop_and_stays_readable(tmp_path):
    out = tmp_path / "full"
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    p = subprocess.run([sys.executable, "-c", DISK_FULL, str(out), root], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    reason = p.stdout.strip().splitlines()[-1]
    assert reason.startswith("recording-error:"), reason
    assert "File too large" in reason or "No space" in reason or "rror" in reason
    s = open_session(out)
    frames = list(s.frames())
    assert len(frames) > 5
    assert s.events, "events written before the failure stay readable"
    meta = json.loads((out / "session.json").read_text())
    assert meta["screen"]["width"] == 320


# --- a real full disk: a small tmpfs (needs root; skipped otherwise) --------------------------------

import contextlib  # noqa: E402
import errno  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from agent.cli.main import main  # noqa: E402
from agent.sessions.format import RESERVE_BYTES, RecordingError, SessionRecorder  # noqa: E402


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _leave_free(mnt, nbytes: int) -> None:
    st = os.statvfs(mnt)
    (mnt / "filler").write_bytes(os.urandom(st.f_bavail * st.f_frsize - nbytes))


def _dw(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(argv))
    return rc, err.getvalue()


DEMO = ("demo", "--tasks", "click-button", "--sizes", "640x480", "--episodes", "3", "--policy", "random",
        "--max-steps", "300", "--json")


@pytest.mark.parametrize("room_kib", [8, 24], ids=["before-the-first-frame", "mid-session"])
def test_disk_full_at_the_start_of_a_session_in_dw_demo(small_disk, room_kib):
    """The disk fills as the first episode starts: one line and exit 2, that session closed and
    readable (dw info, --verify, replay), and no further episode attempted."""
    _leave_free(small_disk, RESERVE_BYTES + room_kib * 1024)
    rc, err = _dw(*DEMO, "--out", str(small_disk / "out"))
    assert rc == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dw demo: error: ") and "No space left" in lines[0], err
    assert "no further episodes" in lines[0]
    sessions = sorted((small_disk / "out" / "click-button").iterdir())
    assert [s.name for s in sessions] == ["640x480@1-seed20000"]  # the next episode was not attempted
    meta = json.loads((sessions[0] / "session.json").read_text())
    assert meta["closed"] is True and meta["end_reason"].startswith("recording-error")
    assert not list(sessions[0].glob("*.tmp")) and not list(sessions[0].glob(".dw-reserve"))
    for argv in (["info", "--json"], ["info", "--verify", "--json"], ["replay", "--json"]):
        rc, err = _dw(*argv, str(sessions[0]))
        assert rc == 0 and not err.strip(), (argv, err)
    s = open_session(sessions[0])
    frames = list(s.frames())
    if room_kib > 16:
        assert len(frames) > 3 and s.events  # what was written before the disk filled stays readable


def test_disk_too_full_to_start_a_session_leaves_nothing(small_disk):
    _leave_free(small_disk, RESERVE_BYTES // 2)
    rc, err = _dw(*DEMO, "--out", str(small_disk / "out"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "cannot start the session" in err, err
    assert "No space left" in err and "Traceback" not in err
    assert not list((small_disk / "out").rglob("*.*"))  # no session.json, .tmp, video or events


def test_session_that_cannot_write_session_json_raises_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    """Without root: session.json's fsync fails as on a full disk (ENOSPC)."""
    from tests.fakes import FakeDesktop

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    d = FakeDesktop(160, 120)
    with pytest.raises(RecordingError, match="No space left on device") as e:
        SessionRecorder(tmp_path / "s", d.screen, d.fps)
    assert "\n" not in str(e.value) and "nothing was recorded" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no directory, no session.json.tmp, no video, no reserve
