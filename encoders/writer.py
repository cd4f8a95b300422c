"""A Matroska video writer for sessions: BGRA frames in, millisecond pts, flushed in short clusters."""

from __future__ import annotations

from pathlib import Path

from fractions import Fraction

import av
import cv2
import numpy as np


class EncoderError(RuntimeError):
    """No encoder could be opened, or encoding failed."""


class VideoWriter:
    """Writes BGRA frames into ``video.mkv`` with pts in milliseconds of the session clock."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, purpose: str = "record"):
        self.path = Path(path)
        self.width, self.height = width, height
        # yuv420p needs even sizes: pad right/bottom by replicating the edge, undone on decode by cropping.
        self.coded_width = width + (width & 1)
        self.coded_height = height + (height & 1)
        self.frames = 0
        self._last_pts = -1
        options = {"crf": "23", "preset": "ultrafast", "tune": "zerolatency", "g": str(max(1, int(fps * 2)))}
        try:
            # Short clusters keep what a killed recorder leaves readable up to its last second.
            self.container = av.open(
                str(self.path), "w", format="matroska",
                options={"cluster_time_limit": "1000", "cluster_size_limit": "2097152", "flush_packets": "1"},
            )
            self.stream = self.container.add_stream("libx264", rate=max(1, round(fps)), options=options)
            self.stream.width, self.stream.height = self.coded_width, self.coded_height
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = Fraction(1, 1000)
            self.stream.codec_context.time_base = Fraction(1, 1000)
            self.stream.codec_context.thread_count = 2
        except (av.error.FFmpegError, ValueError) as e:
            raise EncoderError(f"cannot open libx264 at {width}x{height}: {e}") from e
        self.decision = {
            "codec": "libx264",
            "pix_fmt": "yuv420p",
            "options": options,
            "width": width,
            "height": height,
            "coded_width": self.coded_width,
            "coded_height": self.coded_height,
            "pad": [self.coded_width - width, self.coded_height - height],
            "scale": None,
            "rejected": [],
        }

    def write(self, pixels: np.ndarray, t: float, keyframe: bool = False) -> None:
        pts = max(int(round(t * 1000)), self._last_pts + 1)
        self._last_pts = pts
        if pixels.shape[1] != self.coded_width or pixels.shape[0] != self.coded_height:
            pixels = cv2.copyMakeBorder(
                pixels, 0, self.coded_height - pixels.shape[0], 0, self.coded_width - pixels.shape[1],
                cv2.BORDER_REPLICATE,
            )
        yuv = cv2.cvtColor(pixels, cv2.COLOR_BGRA2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        frame.time_base = Fraction(1, 1000)
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        try:
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except av.error.FFmpegError as e:
            raise EncoderError(f"encoding frame {self.frames} failed: {e}") from e
        self.frames += 1

    def close(self) -> None:
        if self.container is None:
            return
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


def open_writer(path: str | Path, width: int, height: int, fps: float, purpose: str = "record") -> VideoWriter:
    return VideoWriter(path, width, height, fps, purpose)
