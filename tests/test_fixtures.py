"""The tracked fixture sessions stay readable and replayable by the current code.

Regenerate them with:
  dw demo --policy scripted --tasks click-checkboxes --sizes 640x480 --human-like --out DIR   (virtual)
  python tests/make_fixture_record.py fixtures/sessions/xdotool-record                        (dw record on Xvfb)
"""

from pathlib import Path

import pytest

from agent.cli.commands.info import session_info
from agent.sessions.format import open_session
from agent.sessions.replay import replay_session
from policies import load_policy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sessions"


@pytest.mark.parametrize("name", ["virtual-click-checkboxes", "xdotool-record"])
def test_fixture_sessions_are_intact(name):
    info = session_info(str(FIXTURES / name), verify=True)
    assert info["closed"] and info["damage"] == []
    assert info["frames"] == info["frames_recorded"] > 0
    assert sum(info["actions_by_type"].values()) > 0


def test_virtual_fixture_replays_with_full_agreement():
    s = open_session(FIXTURES / "virtual-click-checkboxes")
    assert s.desktop["kind"] == "virtual" and s.meta["success"] is True
    r = replay_session(s, load_policy("scripted"))
    assert r["recorded_actions"] > 5
    assert r["agreement"] == 1.0 and r["spurious_actions"] == 0


def test_human_fixture_replays_open_loop():
    s = open_session(FIXTURES / "xdotool-record")
    assert {e.source for e in s.actions()} == {"human"}
    r = replay_session(s, load_policy("random", seed=1))
    assert r["frames_decoded"] == s.meta["frames"]
    assert r["recorded_actions"] == len(s.actions())
    assert r["agreement"] < 1.0
