"""The Frame and Screen shapes every part of the runtime agrees on."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The largest screen or frame side the runtime accepts, in physical pixels (three 5K monitors side
# by side fit). A larger claim (a damaged or hostile session.json, a remote hello) is refused before
# anything is allocated: one 65535x65535 BGRA frame would be 16 GiB.
MAX_SIDE = 16384
# How far a screen's origin may sit from 0 on the virtual desktop.
MAX_ORIGIN = 1 << 20


@dataclass(frozen=True, slots=True)
class Screen:
    """A captured screen: physical pixel size, origin on the virtual desktop, HiDPI scale.

    ``scale`` is physical pixels per logical point (1.0 on a classic display, 2.0 on Retina).
    """

    width: int
    height: int
    left: int = 0
    top: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"screen size must be positive, got {self.width}x{self.height}")
        if self.width > MAX_SIDE or self.height > MAX_SIDE:
            raise ValueError(f"screen size {self.width}x{self.height} is over the limit of {MAX_SIDE} pixels a side")
        if not (0.5 <= self.scale <= 4.0):
            raise ValueError(f"screen scale must be within [0.5, 4], got {self.scale}")

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_pixels(self, x: float, y: float) -> tuple[int, int]:
        """Normalised [0, 1] coordinates to a physical pixel inside this screen (not offset by origin)."""
        # The epsilon keeps exact pixel boundaries (205/800 * 800) from landing one pixel short.
        return (min(self.width - 1, int(x * self.width + 1e-6)), min(self.height - 1, int(y * self.height + 1e-6)))

    def to_normalised(self, px: float, py: float) -> tuple[float, float]:
        """A physical pixel (centre-sampled) to normalised coordinates, clamped into [0, 1]."""
        return (
            min(1.0, max(0.0, (px + 0.5) / self.width)),
            min(1.0, max(0.0, (py + 0.5) / self.height)),
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> Screen:
        """Strict: integers where integers belong, sizes within [1, MAX_SIDE], a finite scale.
        Raises ``ValueError`` naming the field (``TypeError`` if ``obj`` is not a dict)."""
        if not isinstance(obj, dict):
            raise TypeError(f"a screen is a JSON object, got {type(obj).__name__}")

        def whole(name: str, default: int | None, lo: int, hi: int) -> int:
            v = obj.get(name, default)
            if v is None:
                raise ValueError(f"{name!r} is missing")
            if isinstance(v, float) and v.is_integer() and lo <= v <= hi:
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name!r} must be an integer, got {type(v).__name__}")
            if not lo <= v <= hi:
                shown = v if v.bit_length() <= 64 else f"an integer of {v.bit_length()} bits"
                raise ValueError(f"{name!r} must be within [{lo}, {hi}], got {shown}")
            return v

        scale = obj.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (0.5 <= scale <= 4.0):
            shown = type(scale).__name__ if not isinstance(scale, int | float) else \
                (scale if not isinstance(scale, int) or scale.bit_length() <= 64 else "a huge integer")
            raise ValueError(f"'scale' must be a number within [0.5, 4], got {shown}")
        return cls(
            width=whole("width", None, 1, MAX_SIDE),
            height=whole("height", None, 1, MAX_SIDE),
            left=whole("left", 0, -MAX_ORIGIN, MAX_ORIGIN),
            top=whole("top", 0, -MAX_ORIGIN, MAX_ORIGIN),
            scale=float(scale),
        )


@dataclass(slots=True)
class Frame:
    """One captured picture.

    ``pixels`` is H x W x 4 uint8 in BGRA order (mss's own layout), ``t`` seconds on the
    session clock (monotonic, 0 at start), ``index`` its position in the stream.
    """

    pixels: np.ndarray
    t: float
    index: int
    screen: Screen

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def rgb(self) -> np.ndarray:
        """An RGB copy (H x W x 3) for consumers that need it; not for the hot path."""
        return np.ascontiguousarray(self.pixels[:, :, 2::-1])


Rect = tuple[int, int, int, int]  # left, top, width, height in frame pixels


@dataclass(slots=True)
class ChangedFrame(Frame):
    """A :class:`Frame` with the region that changed since the previous frame of its source:
    ``changed`` is a tuple of ``(left, top, width, height)`` rectangles in frame pixels, ``()`` for
    no change, ``None`` for "anything may have changed" (first grab, fallback). ``source`` tells
    sources apart (frames of two sources may carry consecutive indices): :meth:`follows`."""

    changed: tuple[Rect, ...] | None = None
    source: int = 0

    def follows(self, last: tuple[int, int] | None) -> bool:
        """Whether this frame comes right after the frame ``last`` = ``(source, index)`` of its own
        source, so that ``changed`` is relative to it."""
        return last is not None and last == (self.source, self.index - 1)

    def changed_area(self) -> int:
        """Pixels inside ``changed`` (the whole frame for None; overlaps counted twice)."""
        if self.changed is None:
            return self.width * self.height
        return sum(w * h for _, _, w, h in self.changed)
