"""The encoder ladder: rungs, colour conversion, the round-trip probe, the decision cache.

A *rung* is one way to encode (an FFmpeg encoder, its input pixel format, its options per purpose,
its alignment, optionally a downscale). ``choose()`` walks the ladder for a size and purpose: a rung is
ruled out by the known-limits table, by failing to open, or by a round trip (encode a desktop-like
picture, decode it, compare) that returns a wrong picture. The first rung that proves itself wins.
Probe results are cached per FFmpeg build, rung (codec + options), coded size and pixel format.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.logging
import cv2
import numpy as np

from encoders.limits import Limit, h264_level, limit_for
from encoders.picture import desktop_frame

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr unless told otherwise (read at init)
MS = Fraction(1, 1000)
PURPOSES = ("record", "stream")
MIN_PSNR = 35.0  # dB over B, G, R of the whole picture, for lossy rungs
MIN_TILE_PSNR = 18.0  # dB of the worst 64x64 tile: catches a green bar that barely moves the average
# What a downscale rung scales into: OpenDisplay's 4096x2304 ceiling (encoder-limits.md section 7).
DOWNSCALE_BOX = (4096, 2304)


class EncoderError(RuntimeError):
    """No encoder could be opened, or encoding failed."""


def ffmpeg_build() -> str:
    """A string that changes whenever the FFmpeg build (or PyAV) changes: the cache key's first part."""
    libs = ",".join(f"{k}={'.'.join(map(str, v))}" for k, v in sorted(av.library_versions.items()))
    return f"pyav={av.__version__};ffmpeg={getattr(av, 'ffmpeg_version_info', '?')};{libs}"


@dataclass
class Spec:
    """Where a rung is asked to encode: the original size, the coded size and the content inside it."""

    width: int
    height: int
    fps: float
    purpose: str
    keyint: int
    content_width: int  # after scaling (== width when not scaled), before padding
    content_height: int
    coded_width: int
    coded_height: int

    @property
    def scaled(self) -> bool:
        return (self.content_width, self.content_height) != (self.width, self.height)


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


@dataclass
class Rung:
    """One way to encode. Subclass and override the hooks (``preprocess``, ``before_encode``) for fakes."""

    name: str
    codec: str
    decoder: str
    family: str  # h264 | hevc | av1 | vp9 | mjpeg | ffv1
    kind: str  # hardware | software | last | downscale
    pix_fmt: str
    align: int = 2
    downscale: tuple[int, int] | None = None
    lossless: bool = False
    limit: Limit | None = None  # overrides the table entry for ``codec``

    # -- sizes -------------------------------------------------------------------------------------
    def spec(self, width: int, height: int, fps: float, purpose: str, keyint: int | None = None) -> Spec:
        cw, ch = width, height
        if self.downscale is not None:
            f = min(1.0, self.downscale[0] / width, self.downscale[1] / height)
            if f < 1.0:
                cw, ch = max(2, int(width * f) // 2 * 2), max(2, int(height * f) // 2 * 2)
        a = max(self.align, limit_for(self.codec).align if self.limit is None else self.limit.align)
        if keyint is None:
            keyint = max(1, round(fps * 2)) if purpose == "record" else max(1, round(fps * 10))
        return Spec(width, height, fps, purpose, keyint, cw, ch, _align(cw, a), _align(ch, a))

    def check_limits(self, spec: Spec) -> str | None:
        if self.downscale is not None and not spec.scaled:
            return "downscale rung: not needed at this size"
        return (self.limit or limit_for(self.codec)).check(spec.coded_width, spec.coded_height)

    # -- options -----------------------------------------------------------------------------------
    def options(self, spec: Spec) -> dict[str, str]:
        """Encoder options (AVOptions) for the purpose. ``stream``: no B-frames, no lookahead, a packet
        per frame, keyframes on demand. ``record``: a slower preset for the pixel rate, keyframe interval."""
        stream = spec.purpose == "stream"
        g = str(spec.keyint)
        w, h, fps = spec.coded_width, spec.coded_height, spec.fps
        c = self.codec
        if c == "libx264":
            rate = w * h * fps
            preset = "ultrafast" if stream or rate > 1920 * 1080 * 30 else (
                "superfast" if rate > 1920 * 1080 * 15 else "veryfast")
            lvl = h264_level(w, h, fps)
            # tune=zerolatency: bframes=0, rc-lookahead=0, sliced threads: one packet out per frame in,
            # also for record, so a killed recorder or a failed rung loses nothing buffered.
            # crf 19 where the pixel rate leaves room: small screens carry dense text (640x480 gave 35.3 dB at 21).
            crf = "23" if stream else ("19" if preset == "veryfast" else "21")
            return {"preset": preset, "tune": "zerolatency", "crf": crf, "g": g, "forced-idr": "1",
                    "level": f"{lvl // 10}.{lvl % 10}"}
        if c.endswith("_nvenc"):
            return {"preset": "p1" if stream else "p4", "tune": "ull" if stream else "hq", "zerolatency": "1",
                    "bf": "0", "rc": "vbr", "cq": "23", "g": g, "forced-idr": "1", "delay": "0"}
        if c.endswith("_qsv"):
            return {"preset": "veryfast" if stream else "medium", "bf": "0", "look_ahead": "0",
                    "async_depth": "1", "g": g, "forced_idr": "1", "global_quality": "25"}
        if c.endswith("_amf"):
            return {"usage": "ultralowlatency" if stream else "transcoding", "quality": "speed",
                    "bf": "0", "g": g, "rc": "cqp", "qp_i": "22", "qp_p": "24"}
        if c.endswith("_videotoolbox"):
            return {"realtime": "1", "allow_sw": "0", "bf": "0", "g": g, "prio_speed": "1" if stream else "0",
                    "q": "60"}
        if c.endswith("_vaapi"):
            return {"bf": "0", "g": g, "qp": "24", "async_depth": "1"}
        if c == "libvpx-vp9":
            tiles = str(max(0, min(4, (w // 256).bit_length() - 1)))
            return {"deadline": "realtime", "cpu-used": "8" if stream else "7", "lag-in-frames": "0",
                    "row-mt": "1", "tile-columns": tiles, "crf": "32", "b": "0", "g": g}
        if c == "libsvtav1":
            return {"preset": "12" if stream else "10", "crf": "30", "g": g,
                    "svtav1-params": "pred-struct=1:lookahead=0"}
        if c == "mjpeg":
            return {"qmin": "2", "qmax": "3", "strict": "-1"}
        if c == "ffv1":
            return {"level": "1", "g": "1"}  # version 1: no extradata, every frame intra
        return {"g": g}

    # -- hooks for fakes -----------------------------------------------------------------------------
    def preprocess(self, bgra: np.ndarray) -> np.ndarray:
        """Called on each BGRA picture before conversion (a fake can corrupt it here)."""
        return bgra

    def before_encode(self, index: int) -> None:
        """Called before each frame is encoded, ``index`` counting from 0 per session (fakes fail here)."""

    # -- identity --------------------------------------------------------------------------------------
    def cache_id(self, spec: Spec) -> str:
        opts = json.dumps(self.options(spec), sort_keys=True)
        return f"{self.name}:{self.codec}:{hashlib.sha1(opts.encode()).hexdigest()[:10]}"


def make_decoder(name: str, extradata: bytes | None = None) -> av.CodecContext:
    """A decoder context. libdav1d gets one thread: its worker threads log through PyAV's callback, which
    takes the GIL, while freeing the context holds the GIL and waits for them — a deadlock seen here."""
    dec = av.CodecContext.create(name, "r")
    if name == "libdav1d":
        dec.thread_count = 1
    if extradata:
        dec.extradata = extradata
    return dec


# -- colour conversion -------------------------------------------------------------------------------
def bgra_to_frame(bgra: np.ndarray, spec: Spec, pix_fmt: str) -> av.VideoFrame:
    """BGRA (original size) -> an ``av.VideoFrame`` at the coded size in ``pix_fmt``.

    Scaling (cv2 INTER_AREA), edge-replicating padding and BGRA->I420 (cv2.cvtColor, multi-threaded,
    BT.601 limited range, tagged as such) are all OpenCV; no swscale on the encode path.
    """
    if bgra.shape[0] != spec.height or bgra.shape[1] != spec.width:
        raise EncoderError(f"picture is {bgra.shape[1]}x{bgra.shape[0]}, encoder is {spec.width}x{spec.height}")
    img = bgra
    if spec.scaled:
        img = cv2.resize(img, (spec.content_width, spec.content_height), interpolation=cv2.INTER_AREA)
    pb, pr = spec.coded_height - spec.content_height, spec.coded_width - spec.content_width
    if pb or pr:
        img = cv2.copyMakeBorder(img, 0, pb, 0, pr, cv2.BORDER_REPLICATE)
    if pix_fmt in ("bgra", "bgr0"):
        return av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(img), format="bgra")
    if pix_fmt == "yuvj444p":
        ycc = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        ycc = cv2.cvtColor(ycc, cv2.COLOR_BGR2YCrCb)  # full range BT.601, as JPEG wants
        y, cr, cb = cv2.split(ycc)
        return av.VideoFrame.from_ndarray(np.stack([y, cb, cr]), format="yuvj444p")
    yuv = cv2.cvtColor(img, cv2.COLOR_BGRA2YUV_I420)
    if pix_fmt == "nv12":
        h, w = spec.coded_height, spec.coded_width
        uv = np.empty((h // 2, w), np.uint8)
        uv[:, 0::2] = yuv[h:h + h // 4].reshape(h // 2, w // 2)
        uv[:, 1::2] = yuv[h + h // 4:].reshape(h // 2, w // 2)
        frame = av.VideoFrame.from_ndarray(np.concatenate([yuv[:h], uv]), format="nv12")
    elif spec.coded_height % 4 == 0:
        frame = av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p")  # zero-copy
    else:  # chroma planes do not start on a row of the packed I420 array: from_ndarray copies them flat
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    frame.colorspace = 5  # BT.601 (what cv2's I420 conversion computes)
    frame.color_range = 1  # limited ("tv")
    return frame


def frame_to_bgra(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame -> BGRA at the coded size (the exact inverse of ``bgra_to_frame``'s maths)."""
    name = frame.format.name
    if name == "yuv420p":
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGRA_I420)
    if name == "nv12":
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGRA_NV12)
    return frame.to_ndarray(format="bgra")


def restore(bgra_coded: np.ndarray, decision: dict) -> np.ndarray:
    """Undo padding (crop) and scaling (resize back) recorded in ``decision``: the original size."""
    cw, ch = decision["content_width"], decision["content_height"]
    img = bgra_coded[:ch, :cw]
    if (cw, ch) != (decision["width"], decision["height"]):
        img = cv2.resize(img, (decision["width"], decision["height"]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


_CHANNEL_MEAN = np.array([[1 / 3, 1 / 3, 1 / 3, 0]], np.float32)  # B, G, R count; alpha does not


def psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(PSNR over B,G,R of the whole picture, PSNR of the worst 64x64 tile) of two BGRA pictures, in dB.

    All OpenCV, in 512-row stripes so an 8K comparison neither copies nor allocates the whole picture.
    """
    h, w = a.shape[:2]
    total, worst = 0.0, 0.0
    for y in range(0, h, 512):
        d = cv2.absdiff(a[y:y + 512], b[y:y + 512])
        sq = cv2.multiply(d, d, dtype=cv2.CV_32F)
        per_px = cv2.transform(sq, _CHANNEL_MEAN)
        total += float(cv2.sumElems(per_px)[0])
        sh = per_px.shape[0]
        tiles = cv2.resize(per_px, (max(1, w // 64), max(1, sh // 64)), interpolation=cv2.INTER_AREA)
        worst = max(worst, float(tiles.max()))
    mse = total / (h * w)

    def db(m: float) -> float:
        return 99.0 if m <= 1e-10 else min(99.0, 10 * float(np.log10(255 * 255 / m)))

    return round(db(mse), 2), round(db(worst), 2)


# -- sessions --------------------------------------------------------------------------------------
class Session:
    """An open encoder for one rung and spec. ``container`` given: it muxes into that container."""

    def __init__(self, rung: Rung, spec: Spec, container: Any = None):
        self.rung, self.spec, self.index = rung, spec, 0
        self.options = rung.options(spec)
        rate = Fraction(spec.fps).limit_denominator(1001) if spec.fps > 0 else Fraction(30)
        if container is not None:
            self.stream = container.add_stream(rung.codec, rate=rate)
            ctx = self.stream.codec_context
            self.stream.time_base = MS
        else:
            self.stream = None
            ctx = av.CodecContext.create(rung.codec, "w")
            ctx.framerate = rate
        ctx.width, ctx.height = spec.coded_width, spec.coded_height
        ctx.pix_fmt = rung.pix_fmt
        ctx.time_base = MS
        ctx.thread_count = min(4, os.cpu_count() or 2)
        if rung.pix_fmt in ("yuv420p", "nv12"):
            ctx.colorspace, ctx.color_range = 5, 1
            ctx.color_primaries, ctx.color_trc = 6, 6  # SMPTE 170M
        ctx.options = dict(self.options)
        with _ffmpeg_log() as logs:
            try:
                ctx.open(strict=False)
            except (av.error.FFmpegError, ValueError, OSError) as e:
                raise EncoderError(_explain(e, logs)) from e
        self.ctx = ctx
        self._encode = self.stream.encode if self.stream is not None else ctx.encode

    def encode(self, bgra: np.ndarray | None, pts: int = 0, keyframe: bool = False) -> list[av.Packet]:
        """Encode one BGRA picture (``None`` flushes). Raises ``EncoderError``."""
        with _ffmpeg_log() as logs:
            try:
                if bgra is None:
                    return list(self._encode(None))
                self.rung.before_encode(self.index)
                frame = bgra_to_frame(self.rung.preprocess(bgra), self.spec, self.rung.pix_fmt)
                frame.pts, frame.time_base = pts, MS
                if keyframe:
                    frame.pict_type = av.video.frame.PictureType.I
                packets = list(self._encode(frame))
                self.index += 1
                return packets
            except EncoderError:
                raise
            except (av.error.FFmpegError, ValueError, OSError, RuntimeError) as e:
                raise EncoderError(_explain(e, logs)) from e


class _ffmpeg_log:
    """Capture FFmpeg's log lines (for rejection reasons) without printing them."""

    def __enter__(self) -> list:
        self._level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)
        self._cap = av.logging.Capture()
        return self._cap.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._cap.__exit__(*exc)
        av.logging.set_level(self._level)


def _explain(e: BaseException, logs: list) -> str:
    lines = [str(m).strip() for (_lvl, _name, m) in logs if str(m).strip()]
    tail = "; ".join(dict.fromkeys(lines[-3:]))
    msg = re.sub(r"\{'.*'\}", "{...}", f"{type(e).__name__}: {e}")  # the options dict is in "options"
    return f"{msg} [{tail}]" if tail and tail not in msg else msg


# -- the probe -------------------------------------------------------------------------------------
def probe(rung: Rung, spec: Spec) -> dict:
    """Encode two desktop-like pictures (a keyframe, then motion), decode them back, compare.

    Returns ``{"ok", "stage", "reason", "psnr", "worst_tile_psnr", "bytes", "ms"}``.
    """
    try:
        return _probe(rung, spec)
    except Exception as e:  # noqa: BLE001 - a rung that breaks the probe is a rejected rung, not a crash
        return {"ok": False, "stage": "probe", "reason": f"probe error: {type(e).__name__}: {e}"}


def _probe(rung: Rung, spec: Spec) -> dict:
    t0 = time.perf_counter()
    try:
        sess = Session(rung, spec)
    except EncoderError as e:
        return {"ok": False, "stage": "open", "reason": f"open failed: {e}"}
    pictures = [desktop_frame(spec.width, spec.height, i) for i in (0, 1)]
    packets: list[av.Packet] = []
    try:
        for i, pic in enumerate(pictures):
            out = sess.encode(pic, i * 33, keyframe=(i == 0))
            if spec.purpose == "stream" and not out:
                return {"ok": False, "stage": "latency", "reason": f"no packet out for frame {i} in (stream "
                        "needs one packet per frame: lookahead or B-frames)"}
            packets += out
        packets += sess.encode(None)
    except EncoderError as e:
        return {"ok": False, "stage": "encode", "reason": f"encode failed: {e}"}
    if not packets or not packets[0].is_keyframe:
        return {"ok": False, "stage": "encode", "reason": "first packet is not a keyframe"}
    try:
        dec = make_decoder(rung.decoder, sess.ctx.extradata)
        frames = []
        with _ffmpeg_log():
            for p in packets:
                frames += dec.decode(av.Packet(bytes(p)))
            frames += dec.decode(None)
    except (av.error.FFmpegError, ValueError) as e:
        return {"ok": False, "stage": "decode", "reason": f"decode failed: {type(e).__name__}: {e}"}
    if len(frames) != len(pictures):
        return {"ok": False, "stage": "roundtrip", "reason": f"decoded {len(frames)} of {len(pictures)} pictures"}
    worst, src = (99.0, 99.0), 99.0
    for pic, fr in zip(pictures, frames, strict=True):
        got = frame_to_bgra(fr)
        if got.shape[:2] != (spec.coded_height, spec.coded_width):
            return {"ok": False, "stage": "roundtrip",
                    "reason": f"decoded {got.shape[1]}x{got.shape[0]}, coded {spec.coded_width}x{spec.coded_height}"}
        # The gate compares with what the encoder was given (the picture after scaling, padding and
        # conversion to its pixel format, decoded perfectly): 4:2:0 chroma loss on coloured text is the
        # pixel format's, not the encoder's, and alone costs ~35 dB over B,G,R on desktop content.
        ref = frame_to_bgra(bgra_to_frame(pic, spec, rung.pix_fmt))
        p = psnr(ref[:spec.content_height, :spec.content_width], got[:spec.content_height, :spec.content_width])
        worst = (min(worst[0], p[0]), min(worst[1], p[1]))
        if not spec.scaled:
            src = min(src, psnr(pic, got[:spec.height, :spec.width])[0])
    result = {"ok": True, "stage": "ok", "reason": "", "psnr": worst[0], "worst_tile_psnr": worst[1],
              "psnr_vs_source": src if not spec.scaled else None, "bytes": sum(p.size for p in packets), "ms": round((time.perf_counter() - t0) * 1000, 1)}
    floor = 60.0 if rung.lossless else MIN_PSNR
    if worst[0] < floor or worst[1] < MIN_TILE_PSNR:
        result.update(ok=False, stage="roundtrip", reason=(
            f"wrong picture: PSNR {worst[0]} dB (needs {floor}), worst 64x64 tile {worst[1]} dB "
            f"(needs {MIN_TILE_PSNR})"))
    return result


# -- the cache -------------------------------------------------------------------------------------
def cache_dir() -> Path:
    env = os.environ.get("DW_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("digital-worker"))


def _cache_file() -> Path:
    return cache_dir() / "encoders" / f"probe-{hashlib.sha1(ffmpeg_build().encode()).hexdigest()[:16]}.json"


def _cache_load() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _cache_store(key: str, value: dict) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _cache_load()
        data[key] = value
        data["_build"] = ffmpeg_build()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory only costs a re-probe next time


def cache_key(rung: Rung, spec: Spec) -> str:
    return f"{rung.cache_id(spec)}|{spec.purpose}|{spec.coded_width}x{spec.coded_height}|" \
           f"{spec.content_width}x{spec.content_height}|{rung.pix_fmt}"


# -- the ladder ------------------------------------------------------------------------------------
def _hw(name: str, family: str, pix_fmt: str, align: int = 2) -> Rung:
    return Rung(name, name, {"h264": "h264", "hevc": "hevc", "av1": "libdav1d"}[family], family, "hardware",
                pix_fmt, align)


def default_ladder() -> list[Rung]:
    """Hardware first (only encoders this FFmpeg build has), then software, the last rungs, downscale."""
    hw = [
        _hw("h264_nvenc", "h264", "bgra"), _hw("hevc_nvenc", "hevc", "bgra"), _hw("av1_nvenc", "av1", "bgra"),
        _hw("h264_qsv", "h264", "nv12", 16), _hw("hevc_qsv", "hevc", "nv12", 16),
        _hw("av1_qsv", "av1", "nv12", 16),
        _hw("h264_vaapi", "h264", "nv12", 16), _hw("hevc_vaapi", "hevc", "nv12", 16),
        _hw("h264_amf", "h264", "nv12", 16), _hw("hevc_amf", "hevc", "nv12", 16),
        _hw("av1_amf", "av1", "nv12", 16),
        _hw("h264_videotoolbox", "h264", "nv12", 16), _hw("hevc_videotoolbox", "hevc", "nv12", 16),
    ]
    sw = [
        Rung("libx264", "libx264", "h264", "h264", "software", "yuv420p"),
        Rung("libvpx-vp9", "libvpx-vp9", "vp9", "vp9", "software", "yuv420p"),
        Rung("libsvtav1", "libsvtav1", "libdav1d", "av1", "software", "yuv420p"),
    ]
    last = [
        Rung("mjpeg", "mjpeg", "mjpeg", "mjpeg", "last", "yuvj444p"),
        Rung("ffv1", "ffv1", "ffv1", "ffv1", "last", "bgra", align=1, lossless=True),
    ]
    down = [Rung("libx264@downscale", "libx264", "h264", "h264", "downscale", "yuv420p",
                 downscale=DOWNSCALE_BOX)]
    have = av.codecs_available
    return [r for r in hw + sw + last + down if r.codec in have and
            (r.decoder in have)]


def rung_summary(rung: Rung, spec: Spec) -> dict:
    return {"rung": rung.name, "codec": rung.codec, "kind": rung.kind}


def choose(width: int, height: int, fps: float, purpose: str, *, ladder: list[Rung] | None = None,
           refresh: bool = False, keyint: int | None = None, start: int = 0,
           exclude: tuple[str, ...] = ()) -> tuple[Rung, Spec, dict, int]:
    """Walk the ladder from index ``start``; return (rung, spec, decision, index of the rung)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
    if width < 1 or height < 1:
        raise ValueError(f"bad size {width}x{height}")
    ladder = default_ladder() if ladder is None else ladder
    cache = {} if refresh else _cache_load()
    rejected: list[dict] = []
    for i, rung in enumerate(ladder):
        if i < start or rung.name in exclude:
            continue
        spec = rung.spec(width, height, fps, purpose, keyint)
        why = rung.check_limits(spec)
        if why is not None:
            if rung.kind != "downscale" or spec.scaled:
                rejected.append({**rung_summary(rung, spec), "stage": "limits", "reason": why})
            continue
        key = cache_key(rung, spec)
        result = cache.get(key)
        from_cache = result is not None
        if result is None:
            result = probe(rung, spec)
            _cache_store(key, result)
        if not result["ok"]:
            rejected.append({**rung_summary(rung, spec), "stage": result["stage"], "reason": result["reason"]})
            continue
        decision = {
            "version": 1,
            "purpose": purpose,
            "rung": rung.name,
            "codec": rung.codec,
            "kind": rung.kind,
            "family": rung.family,
            "decoder": rung.decoder,
            "pix_fmt": rung.pix_fmt,
            "options": rung.options(spec),
            "fps": fps,
            "keyint": spec.keyint,
            "width": width,
            "height": height,
            "content_width": spec.content_width,
            "content_height": spec.content_height,
            "coded_width": spec.coded_width,
            "coded_height": spec.coded_height,
            "pad": [spec.coded_width - spec.content_width, spec.coded_height - spec.content_height],
            "scale": None if not spec.scaled else {
                "width": spec.content_width, "height": spec.content_height,
                "factor": round(spec.content_width / width, 6)},
            "psnr": result["psnr"],
            "worst_tile_psnr": result["worst_tile_psnr"],
            "psnr_vs_source": result.get("psnr_vs_source"),
            "proof_bytes": result["bytes"],
            "from_cache": from_cache,
            "ffmpeg": ffmpeg_build(),
            "rejected": rejected,
        }
        return rung, spec, decision, i
    detail = "; ".join(f"{r['rung']}: {r['reason']}" for r in rejected) or "empty ladder"
    raise EncoderError(f"no encoder for {width}x{height} ({purpose}): {detail}")
