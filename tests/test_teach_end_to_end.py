"""Teaching, end to end, on a held-out Tk task: demos made by ``dw record`` while xdotool plays the
person (scripts/teach_demos.py), ``dw train --init pixel-small --recipe recipes/teach.toml``, then
``dw eval --suite apps`` on an unseen seed. One epoch on two demos teaches nothing worth a success
figure (docs/teach.md has those); this checks that each stage hands the next what it needs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.desktops.apps import HELD_OUT, TASKS
from agent.sessions.format import open_session

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_record_train_and_run_a_held_out_tk_task(tmp_path):
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("needs Xvfb and xdotool (make system)")
    assert "tk-settings" in HELD_OUT and "tk-settings" in TASKS
    demos = tmp_path / "demos"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "teach_demos.py"), "--task", "tk-settings",
                           "--seeds", "0-1", "--out", str(demos)], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    sessions = sorted(demos.iterdir())
    assert [p.name for p in sessions] == ["tk-settings-0", "tk-settings-1"]
    for p in sessions:
        s = open_session(p)
        kinds = [e.action.type for e in s.actions(("human",))]
        assert kinds[-1] == "done" and kinds.count("click") == 2, kinds  # the option, OK; then done
        assert "move" in kinds  # the person's path was recorded; training drops it
        x, y = s.meta["cursor0"]
        assert 0 <= x <= 1 and 0 <= y <= 1
        assert s.instruction == TASKS["tk-settings"].episode(int(p.name.rsplit("-", 1)[1])).instruction

    out = tmp_path / "worker"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", str(demos), "--init", "pixel-small", "--recipe", str(ROOT / "recipes" / "teach.toml"),
                   "--epochs", "1", "--out", str(out), "--cache", str(tmp_path / "cache"), "--json"])
    assert rc == 0
    summary = json.loads(buf.getvalue())
    # 2 demos x (2 clicks + done); the moves on the way are no samples; x3 tile-grid phases (shifts 2)
    assert summary["train_samples"] + summary["val_samples"] == 2 * 3 * 3
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors", "training.json"]

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["eval", "--suite", "apps", "--tasks", "tk-settings", "--episodes", "1", "--policy", str(out),
                   "--max-steps", "6", "--json"])
    assert rc == 0
    ep = json.loads(buf.getvalue())["episodes"][0]
    assert ep["task"] == "tk-settings" and ep["seed"] >= 200000 and ep["steps"] >= 1
