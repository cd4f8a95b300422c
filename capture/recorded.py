"""Frames decoded from a recorded session's video, with their recorded timestamps.

The reader undoes the encoder's padding (by cropping to the screen size) and any downscale
(by resizing back), so a replayed frame has the geometry of the screen it was captured from.
It stops cleanly at damage (a truncated or corrupt file) and says where.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import cv2
import numpy as np

from capture.frame import MAX_SIDE, Frame, Screen

# Padding an encoder may add right and bottom (alignment to 16, 32 or 64 pixels).
MAX_PAD = 64
# The smallest downscale factor a recording may use (a 16384-pixel side into a 2304-pixel box is 0.14).
MIN_SCALE = 1 / 8


class VideoDamaged(RuntimeError):
    """The video cannot be opened at all."""


def video_size_problem(screen: Screen, width: int, height: int) -> str | None:
    """Why a ``width`` x ``height`` video cannot hold frames of ``screen``, or None if it can.

    A recording is the screen itself, padded right and bottom by at most ``MAX_PAD`` pixels,
    possibly after one downscale by a factor f in [MIN_SCALE, 1] kept the same on both axes. So a
    session.json that claims a screen its video does not match (a huge one, above all) is refused
    before a frame is resized to it."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        return f"video is {width}x{height}, outside 1..{MAX_SIDE} pixels a side"
    sw, sh = screen.width, screen.height
    # f must satisfy  f*s <= v + 1  and  v - MAX_PAD - 1 <= f*s  on both axes (rounding allowed).
    lo = max(MIN_SCALE, (width - MAX_PAD - 1) / sw, (height - MAX_PAD - 1) / sh)
    hi = min(1.0, (width + 1) / sw, (height + 1) / sh)
    if lo > hi:
        return (f"video is {width}x{height}, which cannot hold the {sw}x{sh} screen session.json claims "
                f"(padding up to {MAX_PAD} pixels, downscale no smaller than 1/{round(1 / MIN_SCALE)})")
    return None


def _to_bgra(frame: av.VideoFrame, screen: Screen) -> np.ndarray:
    why = video_size_problem(screen, frame.width, frame.height)
    if why is not None:
        raise ValueError(f"a frame {why.removeprefix('video ')}")
    pixels = frame.to_ndarray(format="bgra")
    h, w = pixels.shape[:2]
    if w >= screen.width and h >= screen.height:
        pixels = pixels[: screen.height, : screen.width]  # padding sits right and bottom
    else:
        pixels = cv2.resize(pixels, (screen.width, screen.height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(pixels)


class RecordedVideo:
    """Iterate the frames of one or more video segments in order.

    ``damage`` collects what went wrong while reading (a truncated tail, a corrupt packet);
    iteration stops at the first unreadable point rather than raising.
    """

    def __init__(self, paths: Sequence[str | Path], screen: Screen):
        self.paths = [Path(p) for p in paths]
        self.screen = screen
        self.damage: list[str] = []

    def _open(self, path: Path) -> av.container.InputContainer:
        if not path.exists():
            raise VideoDamaged(f"{path}: missing")
        if not path.is_file():
            raise VideoDamaged(f"{path}: not a regular file")
        if path.stat().st_size == 0:
            raise VideoDamaged(f"{path}: empty file")
        try:
            container = av.open(str(path), "r")
        except Exception as e:  # damaged files surface as FFmpeg, Unicode or value errors
            raise VideoDamaged(f"{path}: cannot open: {e}") from None
        if not container.streams.video:
            container.close()
            raise VideoDamaged(f"{path}: no video stream")
        cc = container.streams.video[0].codec_context  # None for a codec this FFmpeg does not know
        w, h = (getattr(cc, "width", 0) or 0), (getattr(cc, "height", 0) or 0)
        if w and h:  # 0 when the header does not say; each frame is checked anyway
            why = video_size_problem(self.screen, w, h)
            if why is not None:
                container.close()
                raise VideoDamaged(f"{path}: {why}")
        return container

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            try:
                container = self._open(path)
            except VideoDamaged as e:
                if index == 0 and path == self.paths[0]:
                    raise
                self.damage.append(str(e))
                return
            with container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb = stream.time_base
                try:
                    for packet in container.demux(stream):
                        for vf in packet.decode():
                            t = float(vf.pts * tb) if vf.pts is not None else index / 30.0
                            yield Frame(_to_bgra(vf, self.screen), t, index, self.screen)
                            index += 1
                except Exception as e:  # a corrupt packet ends the readable part
                    self.damage.append(f"{path.name}: unreadable after frame {index}: {e}")
                    return

    def count(self) -> int:
        """Frames in the video, counted by demuxing (no decode); stops at damage."""
        n = 0
        for path in self.paths:
            try:
                container = self._open(path)
            except VideoDamaged as e:
                self.damage.append(str(e))
                break
            with container:
                stream = container.streams.video[0]
                try:
                    for packet in container.demux(stream):
                        if packet.size:
                            n += 1
                except Exception as e:  # a corrupt packet ends the readable part
                    self.damage.append(f"{path.name}: unreadable after packet {n}: {e}")
                    break
        return n
