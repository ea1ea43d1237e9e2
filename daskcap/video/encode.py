"""In-memory encoders: H.264 mp4 for clips and windows, animated WebP previews."""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction

import av

MP4_CODEC = "libx264"
MP4_OPTIONS = {"crf": "23", "preset": "veryfast"}


def even_size(width: int, height: int) -> tuple[int, int]:
    """yuv420p needs even sides: the even size just below (at least 2); frames are scaled to it."""
    return max(2, width - width % 2), max(2, height - height % 2)


class Mp4Writer:
    """Encode frames to an H.264 mp4 held in memory; ``finish()`` returns the bytes."""

    def __init__(self, width: int, height: int, rate: Fraction):
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, "w", format="mp4")
        self._stream = self._container.add_stream(MP4_CODEC, rate=rate)
        self._stream.width, self._stream.height = even_size(width, height)
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = dict(MP4_OPTIONS)
        self._time_base = Fraction(1) / rate
        self._count = 0
        self._closed = False

    def add(self, frame: av.VideoFrame) -> None:
        width, height = self._stream.width, self._stream.height
        if frame.width != width or frame.height != height or frame.format.name != "yuv420p":
            frame = frame.reformat(width, height, format="yuv420p")
        else:
            # A fresh frame object: resetting pts must not touch the caller's frame.
            frame = frame.reformat()
        frame.pts = self._count
        frame.time_base = self._time_base
        self._count += 1
        self._container.mux(self._stream.encode(frame))

    def finish(self) -> bytes:
        self._container.mux(self._stream.encode(None))
        self._container.close()
        self._closed = True
        return self._buffer.getvalue()

    def abort(self) -> None:
        """Release the encoder of an unfinished file (no-op once finished)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except (av.error.FFmpegError, ValueError):
            pass


def encode_webp(
    frames: Iterable[av.VideoFrame],
    width: int,
    height: int,
    fps: float,
    quality: int,
    compression_level: int,
) -> bytes:
    """An animated WebP that loops forever, one image per frame at ``fps``."""
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1000)
    # loop is a container (muxer) option; as a stream option it is ignored.
    with av.open(buffer, "w", format="webp", options={"loop": "0"}) as container:
        stream = container.add_stream("libwebp", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"quality": str(quality), "compression_level": str(compression_level)}
        count = 0
        for frame in frames:
            image = frame.reformat(width, height, format="yuv420p")
            image.pts = count
            image.time_base = Fraction(1) / rate
            count += 1
            container.mux(stream.encode(image))
        if count == 0:
            raise ValueError("no frames to encode")
        container.mux(stream.encode(None))
    return buffer.getvalue()
