"""Known encoder limits, as data. They rule a rung out *before* it is probed.

Sources are the ones collected in ``shared/notes/encoder-limits.md``; each entry cites them. The ladder
still proves every decision with a round trip: a rung that passes this table can fail its probe.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    max_width: int = 16384
    max_height: int = 16384
    min_width: int = 1
    min_height: int = 1
    max_macroblocks: int | None = None  # (w/16)*(h/16) cap, where the hardware states one
    align: int = 2  # coded width/height are padded up to a multiple of this
    multiple_of_4096_forbidden: bool = False
    note: str = ""

    def check(self, width: int, height: int) -> str | None:
        """``None`` if a ``width``x``height`` coded picture is within the limit, else the reason."""
        if width > self.max_width or height > self.max_height:
            return f"known limit: max {self.max_width}x{self.max_height}, asked {width}x{height}" + (
                f" ({self.note})" if self.note else "")
        if width < self.min_width or height < self.min_height:
            return f"known limit: min {self.min_width}x{self.min_height}, asked {width}x{height}"
        if self.max_macroblocks is not None:
            mbs = ((width + 15) // 16) * ((height + 15) // 16)
            if mbs > self.max_macroblocks:
                return f"known limit: {mbs} macroblocks > {self.max_macroblocks}"
        if self.multiple_of_4096_forbidden and (width % 4096 == 0 or height % 4096 == 0):
            return "known limit: width or height a multiple of 4096"
        return None


LIMITS: dict[str, Limit] = {
    # rigaya/NVEnc GPUFeatures/rtx5090.txt, teslaT4_linux.txt; FFmpeg libavcodec/nvenc.c
    # nvenc_check_capabilities ("Width %d exceeds %d"); HandBrake #7728; ClassicOldSong/Apollo #223.
    "h264_nvenc": Limit(4096, 4096, 145, 49, 65536, 2, note="H.264 NVENC is 4096 wide on every generation"),
    # rtx5090.txt, teslaT4_linux.txt; rigaya/NVEnc #170 (8192 from Pascal on, 4096 on Maxwell-2).
    "hevc_nvenc": Limit(8192, 8192, 129, 33, 262144, 2),
    # rtx5090.txt (Ada/Blackwell only); obsproject/obs-studio #9431.
    "av1_nvenc": Limit(8192, 8192, 192, 128, None, 2),
    # intel/media-driver docs/media_features.md; intel/media-driver #764 #776 #565 #687;
    # intel/intel-vaapi-driver #318 ("constraints: width 32-4096 height 32-4096").
    "h264_qsv": Limit(4096, 4096, 32, 32, None, 16),
    "hevc_qsv": Limit(8192, 8192, 32, 32, None, 16),  # 8K from Ice Lake on (media_features.md)
    "av1_qsv": Limit(8192, 8192, 32, 32, None, 16),
    # Intel iHD 4096x4096; AMD Mesa width<=4096 height<=2304, min 256x128: stashapp/stash #4701,
    # ammen99/wf-recorder #275, immich-app/immich #6921. The stricter (AMD) numbers are used.
    "h264_vaapi": Limit(4096, 2304, 256, 128, None, 16),
    "hevc_vaapi": Limit(4096, 2304, 256, 128, None, 16),
    # aza547/wow-recorder #435 (5120x1440 AMF_OUT_OF_RANGE), k4yt3x/video2x #1342 (6480x3240),
    # GPUOpen AMF #193 #383 (height 2176 on some hardware), min 128x96.
    "h264_amf": Limit(4096, 2176, 128, 96, None, 16, note="AMF fails at 5120x1440"),
    "hevc_amf": Limit(4096, 2176, 128, 96, None, 16),
    "av1_amf": Limit(8192, 4352, 128, 96, None, 16),
    # AlexxIT/go2rtc PR #413; jellyfin/jellyfin #17803 (level 5.2 bound: 4096x2304);
    # peetzweg/opendisplay #271 (Intel Macs fail at 320x240).
    "h264_videotoolbox": Limit(4096, 2304, 320, 240, 36864, 16),
    # peetzweg/opendisplay PR #253 (5120x2880 HEVC works end to end).
    "hevc_videotoolbox": Limit(8192, 4352, 320, 240, None, 16),
    # x264 common/tables.c: Level 6.2 MaxFS 139,264 MBs; 4:2:0 needs even sizes
    # ("width not divisible by 2 (1921x1080)"; humble-video #128). 2x2 works [measured, PyAV 18.1].
    "libx264": Limit(16384, 16384, 2, 2, 139264, 2),
    # [measured, PyAV 18.1]: 16x16 works, "Image size is too small (2x2)."
    "libx265": Limit(16384, 16384, 16, 16, None, 2),
    # AOMediaCodec/SVT-AV1 #1; SVT-AV1 EbEncHandle.c ("Source Width must be at least 64" in older
    # versions, "less than or equal to 16384"); v4.1 takes 4x4 [measured, PyAV 18.1].
    "libsvtav1": Limit(16384, 8704, 64, 64, None, 2),
    # libvpx-vp9 8192x4320 works, 2x2 works [measured, PyAV 18.1]; VP9 frame size field is 16 bits.
    "libvpx-vp9": Limit(16384, 16384, 2, 2, None, 2),
    # mjpeg 8192x4320 works [measured, PyAV 18.1]; JPEG dimensions are 16-bit (65535).
    "mjpeg": Limit(65535, 65535, 1, 1, None, 2),
    "ffv1": Limit(65535, 65535, 1, 1, None, 1),
    # FFmpeg mpegvideo_enc.c ("MPEG-1 video does not support resolutions above 4095x4095").
    "mpeg1video": Limit(4095, 4095, 2, 2, None, 2),
    # FFmpeg libavcodec/mpeg12enc.c encode_init (multiples of 4096 refused without -strict -1).
    "mpeg2video": Limit(16383, 16383, 2, 2, None, 2, multiple_of_4096_forbidden=True),
}


def limit_for(codec: str) -> Limit:
    return LIMITS.get(codec, Limit())


# H.264 levels (x264 common/tables.c): level_idc, MaxMBPS, MaxFS. Also MB width^2 <= 8*MaxFS per side.
H264_LEVELS: list[tuple[int, int, int]] = [
    (10, 1485, 99), (11, 3000, 396), (12, 6000, 396), (13, 11880, 396), (20, 11880, 396),
    (21, 19800, 792), (22, 20250, 1620), (30, 40500, 1620), (31, 108000, 3600), (32, 216000, 5120),
    (40, 245760, 8192), (41, 245760, 8192), (42, 522240, 8704), (50, 589824, 22080),
    (51, 983040, 36864), (52, 2073600, 36864), (60, 4177920, 139264), (61, 8355840, 139264),
    (62, 16711680, 139264),
]


def h264_level(width: int, height: int, fps: float) -> int:
    """The smallest H.264 level_idc whose frame size, per-side and macroblock-rate limits fit.

    5120x2880 needs 6.0 (57,600 MBs > 36,864); 1080p30 is 4.0. Above 6.2 returns 62 (x264 only warns).
    """
    mbw, mbh = (width + 15) // 16, (height + 15) // 16
    fs = mbw * mbh
    rate = fs * max(fps, 1.0)
    for idc, max_mbps, max_fs in H264_LEVELS:
        if fs <= max_fs and rate <= max_mbps and mbw * mbw <= 8 * max_fs and mbh * mbh <= 8 * max_fs:
            return idc
    return 62


# VP9 levels (webmproject.org/vp9/levels): level*10, max luma picture size, max luma sample rate.
VP9_LEVELS: list[tuple[int, int, int]] = [
    (10, 36864, 829440), (11, 73728, 2764800), (20, 122880, 4608000), (21, 245760, 9216000),
    (30, 552960, 20736000), (31, 983040, 36864000), (40, 2228224, 83558400), (41, 2228224, 160432128),
    (50, 8912896, 311951360), (51, 8912896, 588251136), (52, 8912896, 1176502272),
    (60, 35651584, 1176502272), (61, 35651584, 2353004544), (62, 35651584, 4706009088),
]


def vp9_level(width: int, height: int, fps: float) -> int:
    size = width * height
    for lvl, max_size, max_rate in VP9_LEVELS:
        if size <= max_size and size * fps <= max_rate:
            return lvl
    return 62
