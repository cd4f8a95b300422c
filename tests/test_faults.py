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
