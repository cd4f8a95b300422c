"""The Frame and Screen shapes every part of the runtime agrees on."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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
        return cls(
            width=int(obj["width"]),
            height=int(obj["height"]),
            left=int(obj.get("left", 0)),
            top=int(obj.get("top", 0)),
            scale=float(obj.get("scale", 1.0)),
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
