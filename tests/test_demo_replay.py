"""The spine end to end: dw demo on the virtual desktop, ffprobe on its videos, replay, kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cli.commands.info import session_info
from agent.cli.main import main
from agent.sessions.format import open_session
from tests.test_session import ffprobe_frames


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "demo", "--json", "--policy", "scripted", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), out


def test_demo_reports_every_task_at_three_sizes(demo_run):
    from agent.desktops.virtual import task_names

    doc, _ = demo_run
    seen = {(r["task"], r["size"]) for r in doc["results"]}
    assert seen == {(t, s) for t in task_names() for s in ("640x480", "1920x1080", "5120x2880")}
    assert all(r["success_rate"] == 1.0 for r in doc["results"]), doc["results"]
    assert doc["success_rate"] == 1.0


def test_every_video_opens_in_ffprobe_with_the_recorded_frame_count(demo_run):
    doc, out = demo_run
    sessions = [Path(p) for r in doc["results"] for p in r["sessions"]]
    assert len(sessions) == len(doc["results"])
    for s in sessions:
        meta = json.loads((s / "session.json").read_text())
        st = ffprobe_frames(s / "video.mkv")
        assert int(st["nb_read_frames"]) == meta["frames"], s
        assert (int(st["width"]), int(st["height"])) >= (meta["screen"]["width"], meta["screen"]["height"])


def test_scripted_replay_agrees_and_is_byte_identical(demo_run, capsys):
    doc, _ = demo_run
    picks = [r["sessions"][0] for r in doc["results"] if r["size"] in ("640x480", "5120x2880")][:9]
    for path in picks:
        a = subprocess.run([sys.executable, "-m", "agent.cli", "replay", path, "--policy", "scripted", "--json"],
                           capture_output=True, timeout=300)
        b = subprocess.run([sys.executable, "-m", "agent.cli", "replay", path, "--policy", "scripted", "--json"],
                           capture_output=True, timeout=300)
        assert a.returncode == 0, a.stderr
        assert a.stdout == b.stdout
        r = json.loads(a.stdout)
        assert r["recorded_actions"] > 0
        assert r["agreement"] == 1.0 and r["spurious_actions"] == 0, r


def test_random_policy_replay_disagrees(demo_run, capsys):
    doc, _ = demo_run
    path = doc["results"][0]["sessions"][0]
    r = run_json(capsys, ["replay", path, "--policy", "random", "--json"])
    assert r["agreement"] < 1.0


def test_info_reports_geometry_and_encoder(demo_run, capsys):
    doc, _ = demo_run
    path = [r for r in doc["results"] if r["size"] == "5120x2880"][0]["sessions"][0]
    info = run_json(capsys, ["info", path, "--json"])
    assert info["screen"]["width"] == 5120 and info["screen"]["scale"] == 2.0
    assert info["closed"] and info["damage"] == []
    assert info["frames"] == info["frames_recorded"]
    assert info["encoder"]["codec"]
    assert info["desktop"]["kind"] == "virtual"


def test_dw_demo_killed_mid_session_is_readable(tmp_path):
    out = tmp_path / "killed"
    # Human-like episodes last dozens of frames: wait until an open session has frames on disk, then SIGKILL.
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "demo", "--policy", "scripted", "--sizes", "1920x1080",
                             "--episodes", "50", "--tasks", "enter-text", "--human-like", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    target = None
    try:
        while time.time() < deadline and target is None:
            time.sleep(0.01)
            for ev in out.glob("**/events.jsonl"):
                meta = json.loads((ev.parent / "session.json").read_text())
                video = ev.parent / "video.mkv"
                if not meta.get("closed") and video.exists() and video.stat().st_size > 2_000 and ev.stat().st_size:
                    target = ev.parent
                    break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert target is not None, "no open session with frames on disk appeared"
    info = session_info(str(target), verify=True)
    assert info["frames"] >= 1 and not info["closed"]
    assert any("not closed" in d for d in info["damage"])
    r = subprocess.run([sys.executable, "-m", "agent.cli", "replay", str(target), "--policy", "scripted", "--json"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["frames_decoded"] == info["frames"]
    # the expert, replayed over what survived, agrees with what was recorded up to the kill
    assert res["recorded_actions"] >= 1 and res["agreement"] == 1.0, res
    assert open_session(target).events, "events flushed before the kill are there"
