"""A recorder killed with SIGKILL leaves a session that info and replay read up to the kill."""

import os
import signal
import subprocess
import sys
import time

from agent.cli.commands.info import session_info
from agent.sessions.format import open_session
from agent.sessions.replay import replay_session
from policies.builtin import RandomPolicy

SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from agent.loop import Agent
from agent.sessions.format import SessionRecorder
from policies.builtin import RandomPolicy
from tests.fakes import FakeDesktop

class Slow(RandomPolicy):
    def act(self, obs):
        time.sleep(0.01)
        if obs.frame.index == 40:
            print("ready", flush=True)
        return [a for a in super().act(obs) if a.type != "done"]

d = FakeDesktop(320, 240)
rec = SessionRecorder(sys.argv[1], d.screen, d.fps, desktop=d.info(), policy="random")
Agent(d, Slow(seed=1), recorder=rec).run()
"""


def test_sigkill_mid_session_leaves_readable_session(tmp_path):
    out = tmp_path / "killed"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), root], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    s = open_session(out)
    assert any("not closed" in d for d in s.damage)
    info = session_info(str(out), verify=True)
    assert info["closed"] is False
    assert info["frames"] >= 20, info
    assert info["events"] > 0
    res = replay_session(open_session(out), RandomPolicy(seed=1))
    assert res["frames_decoded"] == info["frames"]
    assert res["recorded_actions"] + res["skipped_events"] == len(open_session(out).actions())
    assert res["recorded_actions"] > 0
