"""The codec ladder: the only package that names codecs.

``open_writer`` gives the session recorder a Matroska writer with millisecond pts.
"""

from encoders.writer import EncoderError, VideoWriter, open_writer

__all__ = ["EncoderError", "VideoWriter", "open_writer"]
