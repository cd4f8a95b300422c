"""The codec ladder: the only package that names codecs.

- ``open_writer(path, w, h, fps, purpose="record")`` -> ``VideoWriter`` (Matroska, ms pts, segments).
- ``open_encoder(w, h, fps, purpose="stream")`` -> ``Encoder`` (packets, ``codec_string()``).
- ``open_decoder(decision)`` -> ``Decoder`` (BGRA at the original size).
- ``choose(...)`` walks the ladder; ``default_ladder()``; ``Rung`` to build fakes; ``restore()``.
"""

from encoders.codec import Decoder, Encoder, Packet, codec_string, open_decoder, open_encoder
from encoders.ladder import EncoderError, Rung, choose, default_ladder, frame_to_bgra, restore
from encoders.writer import VideoWriter, open_writer

__all__ = [
    "Decoder", "Encoder", "EncoderError", "Packet", "Rung", "VideoWriter", "choose", "codec_string",
    "default_ladder", "frame_to_bgra", "open_decoder", "open_encoder", "open_writer", "restore",
]
