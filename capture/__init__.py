"""Where frames come from: the Frame and Screen shapes, the live screen (mss), recorded video."""

from capture.frame import ChangedFrame, Frame, Screen

__all__ = ["ChangedFrame", "Frame", "Screen"]
