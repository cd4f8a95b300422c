"""Every variant of the corrupt-session generator (tests/corrupt_sessions.py) through ``dw info``,
``dw info --verify`` and ``dw replay``, in this process: a result or one clear error line and exit
2, never a traceback, never a hang (30 s each), and under 1 GiB of memory each."""

import contextlib
import io
import shutil
import signal
from pathlib import Path

import pytest

from agent.cli.main import main
from tests.corrupt_sessions import VARIANTS

COMMANDS = (["info"], ["info", "--verify"], ["replay", "--json"])
HOSTILE_PATHS = ("segment-", "video-symlink-")
LIMIT_S = 30
GIB = 1 << 30


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` (or OSError) in dw swallows it."""


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Linux: make VmHWM (peak resident memory) start again from the current size."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_dw(argv: list[str]) -> tuple[int, str, str, int | None]:
    """``dw ARGV`` in this process: (exit status, stdout, stderr, peak memory growth in bytes or None)."""
    out, err = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise Hang(f"dw {' '.join(argv)} ran past {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    measured = _reset_peak()
    before = _status_kib("VmRSS")
    signal.alarm(LIMIT_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    peak = _status_kib("VmHWM")
    growth = (peak - before) * 1024 if measured and peak is not None and before is not None else None
    return rc, out.getvalue(), err.getvalue(), growth


@pytest.fixture(scope="module")
def good_session(tmp_path_factory):
    from agent.loop import Agent
    from agent.sessions.format import SessionRecorder
    from policies.builtin import RandomPolicy
    from tests.fakes import FakeDesktop

    base = tmp_path_factory.mktemp("corrupt")
    d = FakeDesktop(160, 120)
    rec = SessionRecorder(base / "good", d.screen, d.fps, desktop=d.info(), instruction="click [OK]")
    Agent(d, RandomPolicy(seed=5), recorder=rec, max_steps=12).run()
    return base / "good"


def test_the_generator_has_at_least_60_variants():
    names = [n for n, _ in VARIANTS]
    assert len(names) >= 60 and len(set(names)) == len(names)


def test_the_good_session_reads_cleanly(good_session):
    for argv in COMMANDS:
        rc, out, err, _ = run_dw([*argv, str(good_session)])
        assert rc == 0 and not err.strip(), (argv, err)


@pytest.mark.parametrize("name, mutate", VARIANTS, ids=[n for n, _ in VARIANTS])
def test_corrupt_session_is_a_result_or_one_clear_line(good_session, tmp_path, name, mutate):
    outside = shutil.copytree(good_session, tmp_path / "outside")
    path = shutil.copytree(good_session, tmp_path / "s")
    mutate(path)
    for argv in COMMANDS:
        rc, out, err, growth = run_dw([*argv, str(path)])
        where = f"{name}: dw {' '.join(argv)} -> {rc}: {err[-2000:]}"
        assert rc in (0, 1, 2), where
        assert "Traceback" not in err and "Traceback" not in out, where
        if rc == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"dw {argv[0]}: error: "), where
        if name.startswith(HOSTILE_PATHS):  # nothing outside the session directory is read
            assert rc == 2 and ("outside the session" in err or "inside the session" in err
                                or "file name" in err), where
        if growth is not None:
            assert growth < GIB, f"{where}: peak memory grew by {growth / GIB:.2f} GiB"
    assert (outside / "video.mkv").is_file()  # hostile paths did not touch what they point at
