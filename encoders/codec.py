"""``Encoder`` (packets for the streaming server), ``Decoder`` and WebCodecs codec strings.

Bitstream choice for ``stream``: packets are **Annex-B** (H.264/HEVC start codes) with the parameter
sets (SPS/PPS, and VPS for HEVC) **in band before every keyframe**; no extradata/``description`` is needed,
so a WebCodecs ``VideoDecoder`` is configured with ``{codec: encoder.codec_string()}`` and no
``description``. AV1 packets are low-overhead OBUs with the sequence header on keyframes; VP9 frames are
self-describing. ``codec_string()`` reads the level from the first keyframe's SPS / sequence header.
"""

from __future__ import annotations

from typing import NamedTuple

import av
import numpy as np

from encoders.ladder import EncoderError, Rung, Session, choose, frame_to_bgra, make_decoder, restore
from encoders.limits import vp9_level


class Packet(NamedTuple):
    data: bytes
    pts: int  # milliseconds
    is_keyframe: bool


class Encoder:
    """BGRA pictures in, packets out. On a mid-stream failure the next rung takes over with a keyframe;
    ``generation`` counts switches (re-read ``codec_string()`` and reconfigure the decoder when it moves)."""

    def __init__(self, width: int, height: int, fps: float, purpose: str = "stream", *,
                 keyint: int | None = None, ladder: list[Rung] | None = None, refresh: bool = False):
        self.width, self.height, self.fps, self.purpose = width, height, fps, purpose
        self._keyint, self._ladder, self._refresh = keyint, ladder, refresh
        self.rung, self.spec, self.decision, self._index = choose(
            width, height, fps, purpose, ladder=ladder, refresh=refresh, keyint=keyint)
        self.decision["switches"] = []
        self.generation = 0
        self.frames = 0
        self._session = Session(self.rung, self.spec)
        self._first_key: bytes | None = None

    def encode(self, pixels_bgra: np.ndarray, pts_ms: int, keyframe: bool = False) -> list[Packet]:
        try:
            out = self._session.encode(pixels_bgra, int(pts_ms), keyframe or self._first_key is None)
        except EncoderError as e:
            self._switch(str(e))
            out = self._session.encode(pixels_bgra, int(pts_ms), True)
        self.frames += 1
        return self._wrap(out)

    def flush(self) -> list[Packet]:
        try:
            return self._wrap(self._session.encode(None))
        except EncoderError:
            return []

    def _wrap(self, packets: list[av.Packet]) -> list[Packet]:
        res = [Packet(bytes(p), int(p.pts) if p.pts is not None else -1, bool(p.is_keyframe)) for p in packets]
        for p in res:
            if p.is_keyframe and self._first_key is None:
                self._first_key = p.data
        return res

    def _switch(self, reason: str) -> None:
        old = self.rung.name
        try:
            self.rung, self.spec, dec, self._index = choose(
                self.width, self.height, self.fps, self.purpose, ladder=self._ladder, refresh=self._refresh,
                keyint=self._keyint, start=self._index + 1)
        except EncoderError as e:
            raise EncoderError(f"{old} failed ({reason}) and no rung can take over: {e}") from e
        switches = self.decision["switches"] + [{"frame": self.frames, "from": old, "to": self.rung.name,
                                                 "reason": reason}]
        self.decision = {**dec, "switches": switches}
        self._session = Session(self.rung, self.spec)
        self._first_key = None
        self.generation += 1

    def codec_string(self) -> str | None:
        """The WebCodecs codec string with the real profile/level (None for MJPEG/FFV1, or before the first
        keyframe of an H.264/HEVC/AV1 stream)."""
        fam = self.rung.family
        if fam == "vp9":
            return f"vp09.00.{vp9_level(self.spec.coded_width, self.spec.coded_height, self.fps):02d}.08"
        if self._first_key is None:
            return None
        return codec_string(fam, self._first_key)

    def close(self) -> None:
        self.flush()


def open_encoder(width: int, height: int, fps: float, purpose: str = "stream", *, keyint: int | None = None,
                 ladder: list[Rung] | None = None, refresh: bool = False) -> Encoder:
    """Walk the ladder for ``width``x``height`` and return a proven ``Encoder`` (``EncoderError`` if none)."""
    return Encoder(width, height, fps, purpose, keyint=keyint, ladder=ladder, refresh=refresh)


class Decoder:
    """Bytes in (one packet each call), BGRA pictures out at the original size (padding/scaling undone)."""

    def __init__(self, decision: dict, extradata: bytes | None = None):
        self.decision = decision
        self.ctx = make_decoder(decision["decoder"], extradata)

    def decode(self, data: bytes | None) -> list[np.ndarray]:
        frames = self.ctx.decode(av.Packet(data) if data is not None else None)
        return [restore(frame_to_bgra(f), self.decision) for f in frames]


def open_decoder(decision: dict, extradata: bytes | None = None) -> Decoder:
    return Decoder(decision, extradata)


# -- codec strings -----------------------------------------------------------------------------------
def _nals(data: bytes) -> list[bytes]:
    """Split an Annex-B buffer into NAL units (without start codes)."""
    out, i, n = [], 0, len(data)
    starts = []
    while True:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        starts.append(j + 3)
        i = j + 3
    for k, s in enumerate(starts):
        e = starts[k + 1] - 3 if k + 1 < len(starts) else n
        out.append(data[s:e].rstrip(b"\x00"))
    return out


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def codec_string(family: str, keyframe: bytes) -> str | None:
    """WebCodecs codec string from a keyframe packet's parameter sets (Annex-B H.264/HEVC, AV1 OBUs)."""
    if family == "h264":
        for nal in _nals(keyframe):
            if nal and nal[0] & 0x1F == 7:  # SPS: profile_idc, constraint flags, level_idc
                return f"avc1.{nal[1]:02X}{nal[2]:02X}{nal[3]:02X}"
        return None
    if family == "hevc":
        for nal in _nals(keyframe):
            if len(nal) > 2 and (nal[0] >> 1) & 0x3F == 33:  # SPS
                b = _unescape(nal[2:])
                # sps_video_parameter_set_id(4) max_sub_layers_minus1(3) temporal_id_nesting(1), then PTL
                ptl = b[1:]
                space, tier, profile = ptl[0] >> 6, (ptl[0] >> 5) & 1, ptl[0] & 0x1F
                compat = int.from_bytes(ptl[1:5], "big")
                compat_rev = int(f"{compat:032b}"[::-1], 2)
                level = ptl[11]
                cons = ptl[5:11].rstrip(b"\x00")
                s = f"hev1.{'' if space == 0 else 'ABC'[space - 1]}{profile}.{compat_rev:X}." \
                    f"{'H' if tier else 'L'}{level}"
                return s + "".join(f".{c:02X}" for c in cons) if cons else s + ".B0"
        return None
    if family == "av1":
        i = 0
        while i < len(keyframe):
            header = keyframe[i]
            obu_type, has_ext, has_size = (header >> 3) & 0xF, (header >> 2) & 1, (header >> 1) & 1
            i += 1 + has_ext
            size, shift = 0, 0
            if has_size:
                while True:
                    b = keyframe[i]
                    i += 1
                    size |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
            else:
                size = len(keyframe) - i
            if obu_type == 1:  # sequence header
                bits = int.from_bytes(keyframe[i:i + 4], "big")
                profile = bits >> 29
                reduced = (bits >> 27) & 1
                if reduced:
                    level, tier = (bits >> 22) & 0x1F, 0
                else:
                    timing = (bits >> 26) & 1
                    if timing:
                        return f"av01.{profile}.08M.08"  # level not read past timing_info
                    # initial_display_delay_present(1) op_cnt_minus_1(5) op_idc(12) seq_level_idx(5) [tier]
                    level = (bits >> 3) & 0x1F
                    tier = ((bits >> 2) & 1) if level > 7 else 0
                return f"av01.{profile}.{level:02d}{'H' if tier else 'M'}.08"
            i += size
        return None
    return None
