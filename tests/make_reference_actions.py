"""Record what each bundled checkpoint does on every frame of the fixture sessions
(tests/data/reference_actions.json), for tests/test_checkpoint_conversion.py.

Run with the code whose actions are the reference (the checkpoints and code before a conversion):
``python tests/make_reference_actions.py OUT.json``. It uses only the public API (``load_policy``,
``Observation``) and PyTorch in float32, so the same script runs against old and new code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from capture.frame import Screen
from capture.recorded import RecordedVideo
from policies import Observation
from policies.pixel import PixelPolicy, load_model

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = ("virtual-click-checkboxes", "xdotool-record")
CHECKPOINTS = ("pixel-tiny", "pixel-small", "miniwob-pixel-tiny", "miniwob-pixel-small")


def frames(name: str):
    folder = ROOT / "fixtures" / "sessions" / name
    meta = json.loads((folder / "session.json").read_text())
    screen = Screen.from_json(meta["screen"])
    return meta.get("instruction") or "", list(RecordedVideo([folder / "video.mkv"], screen))


def record(checkpoint: str) -> dict:
    policy = PixelPolicy(load_model(checkpoint), name=checkpoint, dtype="float32", runtime="torch")
    out = {}
    for name in SESSIONS:
        instruction, fs = frames(name)
        history: list = []
        rows = []
        for f in fs:
            obs = Observation(frame=f, instruction=instruction, cursor=(0.5, 0.5), history=tuple(history[-4:]))
            with torch.inference_mode():
                acts = policy.act(obs)
            rows.append([a.to_json() for a in acts])
            history.extend(acts)
        out[name] = rows
    return out


if __name__ == "__main__":
    torch.manual_seed(0)
    res = {c: record(c) for c in CHECKPOINTS}
    Path(sys.argv[1]).write_text(json.dumps(res, indent=1) + "\n")
