"""dw bench: smoke runs of the live parts under Xvfb (--quick) and the plot. No timing thresholds:
the numbers belong to the benchmark, not to the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from policies.pixel import checkpoint_dir
from tests.conftest import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")


def _dw(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "bench", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@needs_x
@pytest.mark.xvfb
def test_bench_capture_quick_json():
    p = _dw("capture", "--quick", "--sizes", "640x480", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout)
    (row,) = doc["parts"]["capture"]["rows"]
    assert "error" not in row, row
    assert row["size"] == "640x480"
    for k in ("grab", "peer_grab", "act_move", "act_click"):
        assert row[k]["n"] > 0 and row[k]["p50_ms"] > 0
    assert doc["machine"]["cpus"] and doc["wall_seconds"] > 0
    assert 0 < doc["machine"]["reference_ms"] < 1000  # the machine's speed then, beside its figures


@needs_x
@pytest.mark.xvfb
def test_bench_baseline_quick_json_and_plot(tmp_path):
    out = tmp_path / "lat.png"
    p = _dw("baseline", "--quick", "--sizes", "640x480", "--policies", "pixel-tiny", "--json", "--plot", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout)
    part = doc["parts"]["baseline"]
    assert not part["errors"], part["errors"]
    (row,) = part["rows"]
    for kind in ("ours", "baseline"):
        r = row[kind]
        assert r["end_to_end"]["n"] >= 1, r  # clicks were delivered to the target app
        assert r["policy"] == "pixel-tiny"
    assert set(row["baseline"]["stages"]) >= {"grab", "png_encode", "base64", "decode", "infer", "act"}
    assert row["png_bytes_p50"] > 0 and row["ratio"]["p50_ms"] > 0
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plot_covers_pixel_sizes_and_vlm_shapes(tmp_path):
    from agent.bench.plot import plot, series

    pct = {"n": 3, "p50_ms": 10.0, "p95_ms": 12.0, "mean_ms": 10.5}
    doc = {"machine": {"cpus": 2, "platform": "test"}, "parts": {
        "loop": {"live": {"rows": [{"size": s, "policy": p, "end_to_end": pct}
                                   for s in ("1920x1080", "5120x2880")
                                   for p in ("pixel-tiny", "pixel-small", "pixel-base", "pixel-large")]}},
        "vlm": {"rows": [{"shape": "qwen2-vl-tiny", "device": "cpu", "image": "1316x728", "step": pct},
                         {"shape": "qwen2-vl-2b", "device": "cpu", "error": "too slow"}]}}}
    models, data = series(doc)
    assert models == ["pixel-tiny", "pixel-small", "pixel-base", "pixel-large", "qwen2-vl-tiny"]
    assert len(data) == 3
    path = plot(doc, tmp_path / "p.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_bench_rejects_a_bad_plot_name(tmp_path):
    p = _dw("capture", "--plot", str(tmp_path / "x.svg"))
    assert p.returncode != 0 and "PNG" in p.stderr and "Traceback" not in p.stderr


@needs_x
@pytest.mark.xvfb
def test_bench_pipeline_counts_encoded_frames_from_a_real_capture():
    from agent.bench.pipeline import run, table

    result = run(sizes=[(640, 480)], quick=True)
    row = result["rows"][0]
    assert "error" not in row, row
    assert row["frames"] > 0 and row["fps"] > 0
    assert row["capture_ms"]["p50"] > 0 and row["convert_encode_ms"]["p50"] > 0
    assert row["mbit_per_s"] > 0  # the moving square makes every frame carry changes
    assert table(result).row_count == 1


def test_bench_policies_quick_json():
    """Every size asked for, in every runtime on this machine (the ONNX Runtime row included), as
    bundled where a checkpoint is bundled."""
    folder = str(checkpoint_dir("pixel-tiny"))  # a checkpoint folder, as dw train writes one
    p = _dw("policies", "--quick", "--policies", f"pixel-tiny,{folder}", "--json", timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    models = json.loads(p.stdout)["parts"]["policies"]["models"]
    assert set(models) == {"pixel-tiny/onnx", "pixel-tiny/torch", f"{folder}/onnx", f"{folder}/torch"}
    assert models[f"{folder}/torch"]["weights"] == "checkpoint"
    assert models[f"{folder}/torch"]["parameters"] == models["pixel-tiny/torch"]["parameters"]
    models = {k: v for k, v in models.items() if k.startswith("pixel-tiny/")}
    assert models["pixel-tiny/onnx"]["dtype"] == "float32"
    for row in models.values():
        assert row["size"] == "pixel-tiny" and 0.7e6 < row["parameters"] < 1.3e6
        assert row["weights"] == "bundled" and row["reads"] is False  # the shipped checkpoint, not a fresh one
        for k in ("preprocess_1920x1080", "preprocess_5120x2880@2", "forward", "act_1920x1080"):
            assert row[k]["n"] == 10 and row[k]["p50_ms"] > 0, k
    bad = _dw("policies", "--policies", "pixel-huge", timeout=120)
    assert bad.returncode != 0 and "unknown model size 'pixel-huge'" in bad.stderr
    from policies.checkpoints import has_checkpoint  # a bundled name that is not a size is timed too

    assert has_checkpoint("miniwob-pixel-tiny") and has_checkpoint(folder) and not has_checkpoint("pixel-huge")
