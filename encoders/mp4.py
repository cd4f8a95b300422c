"""Constant-frame-rate MP4 for interchange (the LeRobot dataset layout): frame ``i`` at ``i / fps``.

Not a rung of the recording ladder: datasets are read by other tools (PyAV, torchcodec), so the file
is plain H.264 yuv420p (MPEG-4 Part 2 where this FFmpeg has no libx264), whatever the machine's
hardware. yuv420p needs even sides: an odd width or height is padded by repeating the last column or
row, and ``pad`` says by how much (crop it away on reading).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

CODECS = ("libx264", "mpeg4")


class Mp4Writer:
    """BGRA frames in, an MP4 with pts ``0, 1, 2, ...`` in units of ``1 / fps`` out."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int, *, crf: int = 18):
        if not (isinstance(fps, int) and fps > 0):
            raise ValueError(f"fps must be a positive integer, got {fps!r}")
        codec = next((c for c in CODECS if c in av.codecs_available), None)
        if codec is None:
            raise RuntimeError(f"this FFmpeg build has none of {', '.join(CODECS)}")
        self.width, self.height, self.fps = width, height, fps
        self.pad = (width % 2, height % 2)
        self.container = av.open(str(path), "w", format="mp4")
        self.stream = self.container.add_stream(codec, rate=fps)
        self.stream.width, self.stream.height = width + self.pad[0], height + self.pad[1]
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = Fraction(1, fps)
        self.stream.codec_context.time_base = Fraction(1, fps)
        opts = {"g": str(2 * fps), "bf": "0"}
        if codec == "libx264":
            opts.update(crf=str(crf), preset="veryfast")
        else:
            opts.update(qscale="2")
        self.stream.options = opts
        self.codec = self.stream.codec_context.name
        self.frames = 0

    def write(self, pixels_bgra: np.ndarray) -> None:
        bgr = cv2.cvtColor(pixels_bgra, cv2.COLOR_BGRA2BGR)
        if self.pad != (0, 0):
            bgr = cv2.copyMakeBorder(bgr, 0, self.pad[1], 0, self.pad[0], cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> dict:
        """Flush and close; the stream's description for a dataset's metadata."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return {"codec": "h264" if self.codec in ("libx264", "h264") else self.codec, "pix_fmt": "yuv420p",
                "width": self.width + self.pad[0], "height": self.height + self.pad[1], "pad": list(self.pad),
                "fps": self.fps, "frames": self.frames}


def read_mp4(path: str | Path):
    """Yield ``(t, BGRA array)`` for each frame of an MP4, ``t`` in seconds from its pts."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else float("nan")
            yield t, cv2.cvtColor(frame.to_ndarray(format="bgr24"), cv2.COLOR_BGR2BGRA)
