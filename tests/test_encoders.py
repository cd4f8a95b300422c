"""The encoder ladder: fallback by limits, by a failed open, by a wrong picture, mid-stream; sizes; 5K."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from encoders import EncoderError, Rung, choose, open_decoder, open_encoder, open_writer
from encoders.limits import Limit, h264_level
from encoders.picture import desktop_frame

X264 = dict(codec="libx264", decoder="h264", family="h264", pix_fmt="yuv420p")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DW_CACHE_DIR", str(tmp_path / "cache"))


class FailingOpen(Rung):
    """A "hardware" rung whose open fails above 4096 wide (the table does not know about it)."""

    def options(self, spec):
        opts = super().options(spec)
        if spec.coded_width > 4096:  # like NVENC's "Width 5120 exceeds 4096": avcodec_open2 fails
            opts["level"] = "99"  # x264 refuses to open
        return opts


class GreenBar(Rung):
    """Opens fine, returns a picture with a green bar across it."""

    def preprocess(self, bgra):
        out = bgra.copy()
        y = bgra.shape[0] // 3
        out[y:y + 8] = (0, 255, 0, 255)
        return out


class DiesAt(Rung):
    """Works for the probe, then fails from frame ``n`` of a session on."""

    n = 5

    def before_encode(self, index):
        if index >= self.n:
            raise EncoderError(f"fake hardware fault at frame {index}")


def ffprobe_frames(path) -> tuple[int, int, int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames,width,height", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)["streams"][0]
    return int(s["nb_read_frames"]), int(s["width"]), int(s["height"])


def test_limits_table_and_failed_open_skip_hardware_at_5k():
    ladder = [
        Rung("fake_hw_table", kind="hardware", limit=Limit(4096, 4096), **X264),
        FailingOpen("fake_hw_open", kind="hardware", **X264),
        Rung("libx264", kind="software", **X264),
    ]
    _r, _s, d, _i = choose(5120, 2880, 30, "record", ladder=ladder)
    assert d["rung"] == "libx264" and d["psnr"] >= 35
    why = {r["rung"]: r for r in d["rejected"]}
    assert why["fake_hw_table"]["stage"] == "limits" and "4096" in why["fake_hw_table"]["reason"]
    assert why["fake_hw_open"]["stage"] == "open"
    # Below the limit the same "hardware" rungs are chosen first.
    _r, _s, d, _i = choose(1920, 1080, 30, "record", ladder=ladder)
    assert d["rung"] == "fake_hw_table" and d["rejected"] == []


def test_wrong_picture_is_rejected_by_the_round_trip():
    ladder = [GreenBar("fake_green", kind="hardware", **X264), Rung("libx264", kind="software", **X264)]
    _r, _s, d, _i = choose(1366, 768, 30, "stream", ladder=ladder)
    assert d["rung"] == "libx264"
    (rej,) = d["rejected"]
    assert rej["rung"] == "fake_green" and rej["stage"] == "roundtrip" and "wrong picture" in rej["reason"]


def test_mid_stream_failure_switches_rung_with_a_keyframe(tmp_path):
    ladder = [DiesAt("fake_dies", kind="hardware", **X264), Rung("libx264", kind="software", **X264)]
    w = open_writer(tmp_path / "video.mkv", 641, 481, 10, ladder=ladder)
    for i in range(12):
        w.write(desktop_frame(641, 481, i), i * 0.1)
    w.close()
    assert w.frames == 12
    assert w.segments == ["video.mkv", "video.1.mkv"]
    (sw,) = w.decision["switches"]
    assert sw["frame"] == 5 and sw["from"] == "fake_dies" and sw["to"] == "libx264" and "fault" in sw["reason"]
    counts = [ffprobe_frames(tmp_path / s)[0] for s in w.segments]
    assert counts == w.decision["segment_frames"] == [5, 7]
    json.dumps(w.decision)  # recorded verbatim in session.json
    # The new segment starts with a keyframe.
    import av

    with av.open(str(tmp_path / "video.1.mkv")) as c:
        first = next(c.demux(video=0))
        assert first.is_keyframe


def test_stream_encoder_packets_codec_string_and_decoder():
    enc = open_encoder(1365, 767, 30, "stream")
    dec = open_decoder(enc.decision)
    assert enc.decision["pad"] == [1, 1]
    for i in range(4):
        pic = desktop_frame(1365, 767, i)
        packets = enc.encode(pic, i * 33, keyframe=(i == 3))
        assert len(packets) == 1  # zero latency: a packet out for every frame in
        assert packets[0].is_keyframe == (i in (0, 3))
        (out,) = dec.decode(packets[0].data)
        assert out.shape == pic.shape
        err = np.abs(out[..., :3].astype(int) - pic[..., :3]).mean()
        assert err < 6
    level = h264_level(1366, 768, 30)
    assert enc.codec_string() == f"avc1.42C0{level:02X}"


def test_codec_string_carries_level_6_at_5k():
    enc = open_encoder(5120, 2880, 30, "stream")
    enc.encode(desktop_frame(5120, 2880, 0), 0)
    assert enc.codec_string().endswith("3C")  # level 6.0


def test_5k_recording_opens_in_ffprobe_with_the_right_frame_count(tmp_path):
    w = open_writer(tmp_path / "video.mkv", 5120, 2880, 10)
    for i in range(10):
        w.write(desktop_frame(5120, 2880, i), i * 0.1 + (0.013 if i % 2 else 0))  # VFR
    w.close()
    assert ffprobe_frames(tmp_path / "video.mkv") == (w.frames, 5120, 2880)
    assert w.segments == ["video.mkv"] and w.decision["switches"] == []


def test_cli_rejects_malformed_sizes(capsys):
    from agent.cli.main import main

    assert main(["encoders", "--sizes", "1920x"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


@pytest.mark.slow
def test_every_default_size_gets_a_verified_encoder_and_the_cache_agrees(capsys):
    from agent.cli.commands.encoders import DEFAULT_SIZES
    from agent.cli.main import main

    assert main(["encoders", "--json", "--purpose", "record"]) == 0
    first = json.loads(capsys.readouterr().out)
    for (w, h), row in zip(DEFAULT_SIZES, first["sizes"], strict=True):
        d = row["decision"]
        assert row["ok"] and d["psnr"] >= 35, (w, h, d)
        assert (d["width"], d["height"]) == (w, h) and d["coded_width"] % 2 == 0 and not d["from_cache"]
    assert main(["encoders", "--json", "--purpose", "record"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert all(r["decision"]["from_cache"] for r in cached["sizes"])
    assert main(["encoders", "--json", "--purpose", "record", "--refresh"]) == 0
    refreshed = json.loads(capsys.readouterr().out)

    def strip(doc):
        return [{k: v for k, v in r["decision"].items() if k != "from_cache"} for r in doc["sizes"]]

    assert strip(cached) == strip(refreshed) == strip(first)
