"""dw bench policies: every size in every runtime on this machine, the ONNX Runtime rows included.
No timing thresholds: the numbers belong to the benchmark, not to the tests."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_policies_quick_json():
    p = subprocess.run([sys.executable, "-m", "agent.cli", "bench", "policies", "--quick", "--policies", "pixel-tiny",
                        "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    models = json.loads(p.stdout)["parts"]["policies"]["models"]
    assert set(models) == {"pixel-tiny/onnx", "pixel-tiny/torch"}
    assert models["pixel-tiny/onnx"]["dtype"] == "float32"
    for row in models.values():
        assert row["size"] == "pixel-tiny" and 0.7e6 < row["parameters"] < 1.3e6
        for k in ("preprocess_1920x1080", "preprocess_5120x2880@2", "forward", "act_1920x1080"):
            assert row[k]["n"] == 10 and row[k]["p50_ms"] > 0, k
    bad = subprocess.run([sys.executable, "-m", "agent.cli", "bench", "policies", "--policies", "pixel-huge"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and "unknown model size 'pixel-huge'" in bad.stderr
