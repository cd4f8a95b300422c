"""The wire format shared by the server, the Python client and the browser viewer (docs/protocol.md).

Binary messages (server -> client) are frames: a fixed 32-byte little-endian header, then the payload::

    offset size field
    0      2    magic        b"DW"
    2      1    version      PROTOCOL_VERSION
    3      1    kind         1 = video packet (the codec named in ``hello``), 2 = JPEG picture
    4      1    flags        bit 0: keyframe (a decoder can start here; every JPEG is one)
    5      3    reserved     zero
    8      4    index        the server's capture counter (u32, from 0)
    12     4    pts_ms       presentation time, milliseconds on the desktop's session clock (u32)
    16     8    capture_us   wall clock (Unix microseconds) when the capture began (u64)
    24     4    capture_dur  capture time, microseconds (u32)
    28     4    encode_dur   encode time of this payload, microseconds (u32)

Text messages, both ways, are JSON objects with a ``type``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 1
MAGIC = b"DW"
HEADER = struct.Struct("<2sBBB3xIIQII")
HEADER_SIZE = HEADER.size  # 32
KIND_VIDEO = 1
KIND_JPEG = 2
FLAG_KEYFRAME = 1

MAX_MESSAGE_IN = 64 * 1024  # bytes: the largest message a server accepts from a client
MAX_MESSAGE_OUT = 256 * 1024 * 1024  # bytes: what a client should accept (a 5K keyframe is a few MiB)

FORMATS = ("video", "jpeg", "none")
CLIENT_TYPES = ("action", "keyframe", "stats", "subscribe", "expert", "state", "policy")
SERVER_TYPES = ("hello", "ack", "error", "applied", "state", "stats", "expert", "policy", "subscribed", "video")
REPLY_TYPES = ("ack", "error", "expert", "stats", "state", "subscribed")  # carry the request's ``id``
ROLES = ("controller", "viewer")


@dataclass(frozen=True, slots=True)
class FrameHeader:
    kind: int
    keyframe: bool
    index: int
    pts_ms: int
    capture_us: int
    capture_dur_us: int
    encode_dur_us: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, PROTOCOL_VERSION, self.kind, FLAG_KEYFRAME if self.keyframe else 0,
                           self.index & 0xFFFFFFFF, max(0, self.pts_ms) & 0xFFFFFFFF, self.capture_us,
                           min(self.capture_dur_us, 0xFFFFFFFF), min(self.encode_dur_us, 0xFFFFFFFF))

    @property
    def ready_us(self) -> int:
        """Wall-clock microseconds when the payload was ready to send (capture start + both stages)."""
        return self.capture_us + self.capture_dur_us + self.encode_dur_us


class ProtocolError(ValueError):
    """A message that does not follow docs/protocol.md. ``field`` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def unpack_header(data: bytes | bytearray | memoryview) -> FrameHeader:
    if len(data) < HEADER_SIZE:
        raise ProtocolError("header", f"frame message is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, flags, index, pts, cap, cap_dur, enc_dur = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise ProtocolError("magic", f"expected {MAGIC!r}, got {bytes(magic)!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"frame header version {version}, this client speaks {PROTOCOL_VERSION}")
    if kind not in (KIND_VIDEO, KIND_JPEG):
        raise ProtocolError("kind", f"unknown frame kind {kind}")
    return FrameHeader(kind, bool(flags & FLAG_KEYFRAME), index, pts, cap, cap_dur, enc_dur)


def pack_frame(header: FrameHeader, payload: bytes | bytearray | memoryview) -> bytes:
    return header.pack() + bytes(payload)


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def parse_client_message(text: str) -> dict[str, Any]:
    """A client's text message -> its JSON object, checked for shape (not for content)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError("message", f"not valid JSON: {str(e)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message", f"must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind not in CLIENT_TYPES:
        shown = repr(kind)[:40]
        raise ProtocolError("type", f"unknown message type {shown}; expected one of {', '.join(CLIENT_TYPES)}")
    mid = obj.get("id")
    if mid is not None and (isinstance(mid, bool) or not isinstance(mid, int | str) or len(str(mid)) > 64):
        raise ProtocolError("id", "must be an integer or a string of at most 64 characters")
    return obj


def parse_server_message(text: str | bytes) -> dict[str, Any]:
    """A server's text message -> its JSON object with a string ``type`` (a type this client does not
    know is returned too: clients ignore what they do not know)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ProtocolError("message", f"not valid JSON: {str(e)[:120]}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ProtocolError("message", "must be a JSON object with a string type")
    return obj


def check_hello(obj: dict[str, Any]) -> dict[str, Any]:
    """The server's first message: a ``hello`` of this protocol version, with a role and a screen."""
    if obj.get("type") != "hello":
        raise ProtocolError("type", f"the first message must be hello, got {str(obj.get('type'))[:40]!r}")
    if obj.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError("protocol", f"protocol {obj.get('protocol')!r}, this client speaks {PROTOCOL_VERSION}")
    if obj.get("role") not in ROLES:
        raise ProtocolError("role", f"must be one of {', '.join(ROLES)}")
    if not isinstance(obj.get("screen"), dict):
        raise ProtocolError("screen", "must be an object")
    return obj
