"""The stream's pictures: a thin adapter over :mod:`encoders` (the only package that names codecs),
plus the JPEG fallback pictures for clients that cannot decode the stream's codec.

:func:`open_stream_encoder` returns a :class:`StreamEncoder` whose ``encode`` gives
``[(payload bytes, pts_ms, is_keyframe), ...]``; :func:`open_stream_decoder` the matching decoder
(payload bytes -> list of BGRA pictures at the original size).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

JPEG_QUALITY = 80


class VideoUnavailable(RuntimeError):
    """No stream encoder or decoder can be opened here (clients fall back to JPEG pictures)."""


def _packet(p: Any) -> tuple[bytes, int, bool]:
    """One packet from the encoder, whatever shape it comes in, as (bytes, pts, is_keyframe)."""
    if isinstance(p, tuple | list):
        data, pts, key = p[0], p[1], p[2]
        return bytes(data), int(pts or 0), bool(key)
    data = getattr(p, "data", None)
    if data is None:
        data = getattr(p, "payload", None)
    if data is None:
        data = bytes(p)
    pts = getattr(p, "pts", 0) or 0
    key = getattr(p, "is_keyframe", None)
    if key is None:
        key = getattr(p, "keyframe", False)
    return bytes(data), int(pts), bool(key)


class StreamEncoder:
    """One open stream encoder at the screen's size."""

    def __init__(self, width: int, height: int, fps: float):
        import encoders

        self.width, self.height, self.fps = width, height, fps
        opener = getattr(encoders, "open_encoder", None)
        if opener is None:
            raise VideoUnavailable("this build's encoders package has no open_encoder()")
        try:
            self._enc = opener(width, height, fps, purpose="stream")
        except Exception as e:  # the ladder's own error type; any failure means "no video here"
            raise VideoUnavailable(f"no stream encoder for {width}x{height}: {e}") from e

    @property
    def decision(self) -> dict:
        return dict(getattr(self._enc, "decision", {}) or {})

    @property
    def generation(self) -> int:
        """Changes when the encoder switched rungs mid-stream (clients must reconfigure their decoder)."""
        return int(getattr(self._enc, "generation", 0))

    @property
    def codec_string(self) -> str | None:
        """The WebCodecs codec string with the real profile and level (known after the first keyframe)."""
        cs = getattr(self._enc, "codec_string", None)
        return (cs() if callable(cs) else cs) or None

    def encode(self, pixels: np.ndarray, pts_ms: int, keyframe: bool = False) -> list[tuple[bytes, int, bool]]:
        return [_packet(p) for p in self._enc.encode(pixels, pts_ms, keyframe=keyframe)]

    def close(self) -> None:
        fn = getattr(self._enc, "close", None) or getattr(self._enc, "flush", None)
        if callable(fn):
            try:
                fn()
            except Exception:  # closing a broken encoder must not raise on shutdown
                pass

    def describe(self) -> dict:
        """What ``hello`` says about the video: the encoder's own decision and its WebCodecs string."""
        d = self.decision
        return {
            "codec": d.get("codec"),
            "family": d.get("family"),
            "codec_string": self.codec_string,
            "width": d.get("width", self.width),
            "height": d.get("height", self.height),
            "content_width": d.get("content_width", self.width),
            "content_height": d.get("content_height", self.height),
            "coded_width": d.get("coded_width", self.width),
            "coded_height": d.get("coded_height", self.height),
            "generation": self.generation,
            "decision": d,
        }


class StreamDecoder:
    """Decodes the stream's packets in order into BGRA pictures at the screen's size."""

    def __init__(self, decision: dict):
        import encoders

        opener = getattr(encoders, "open_decoder", None)
        if opener is None:
            raise VideoUnavailable("this build's encoders package has no open_decoder()")
        try:
            self._dec = opener(decision)
        except Exception as e:
            raise VideoUnavailable(f"cannot decode the stream: {e}") from e

    def decode(self, payload: bytes) -> list[np.ndarray]:
        return list(self._dec.decode(payload))


def open_stream_encoder(width: int, height: int, fps: float) -> StreamEncoder:
    return StreamEncoder(width, height, fps)


def open_stream_decoder(decision: dict) -> StreamDecoder:
    return StreamDecoder(decision)


# -- JPEG fallback pictures ------------------------------------------------------------------------
def jpeg_encode(pixels_bgra: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """BGRA -> a baseline JPEG (4:2:0), which every browser decodes."""
    bgr = cv2.cvtColor(pixels_bgra, cv2.COLOR_BGRA2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 always encodes a valid BGR picture
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def jpeg_decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable JPEG picture")
    return cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
