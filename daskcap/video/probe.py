"""Probe a video: duration, frame rate, frame count, size, codec."""

from __future__ import annotations

import errno
import math
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from daskcap import schema
from daskcap.video.decode import DecodeTimeout, check_deadline
from daskcap.video.display import Display, best_video_stream
from daskcap.video.io import file_size, open_container


class ProbeError(Exception):
    """A video that cannot be used, with the status its row gets."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class VideoInfo:
    size_bytes: int
    container: str
    codec: str
    duration_s: float
    fps: float
    width: int
    height: int
    num_frames: int
    frame_count_source: str  # "header" or "counted"
    pixel_format: str | None = None
    audio_codec: str | None = None  # the first audio stream's, None without audio
    display: Display | None = None  # how it is shown: stream, rotation, aspect, colour, fields
    variable_frame_rate: bool = False  # frames unevenly spaced in time (phones, screen recordings, edits)


def _header_is_trustworthy(header_frames: int, duration_s: float, fps: float) -> bool:
    if header_frames <= 0:
        return False
    if duration_s <= 0:
        return True
    expected = duration_s * fps
    return abs(header_frames - expected) <= max(2.0, 0.02 * expected)


@dataclass(frozen=True)
class _Count:
    frames: int
    span_s: float  # first timestamp to the end of the last packet; 0.0 without timestamps
    frame_s: float | None  # the time from one frame to the next, as the packets tell it
    variable: bool = False  # the packets' spacing varies: a variable frame rate


def _count_frames(path: str, stream_index: int, deadline: float | None) -> _Count:
    """Count the video packets (one per frame) and measure their time span and spacing.

    Demux only, no decode. The span (first timestamp to the end of the last
    packet) is the stream's real length even when the header has none, when
    timestamps start late, or when a gap interrupts them. Packets an edit list
    discards (``-ss`` cuts copied into mp4) are not shown, so not counted.
    """
    count, first, last, end, timed, durations = 0, None, None, None, 0, 0
    stamps = []
    with open_container(path) as container:
        stream = container.streams[stream_index]
        for packet in container.demux(stream):
            if not packet.size or packet.is_discard:
                continue
            count += 1
            if count % 256 == 0:
                check_deadline(deadline, "counting frames")
            durations += packet.duration or 0
            if packet.pts is not None:
                stamps.append(packet.pts)
                timed += 1
                first = packet.pts if first is None else min(first, packet.pts)
                last = packet.pts if last is None else max(last, packet.pts)
                packet_end = packet.pts + (packet.duration or 0)
                end = packet_end if end is None else max(end, packet_end)
        span = float((end - first) * stream.time_base) if first is not None and end > first else 0.0
        if timed == count >= 2 and last > first:
            frame_s = float((last - first) * stream.time_base) / (count - 1)
        else:  # not every packet timed (raw H.264 has none): the parser's packet durations
            frame_s = float(durations * stream.time_base) / count if durations else None
    return _Count(count, span, frame_s, _uneven(stamps))


def _uneven(stamps: list[int]) -> bool:
    """Whether presentation times are unevenly spaced: the rate changes (the wide gaps, 90th percentile, over
    1.5 times the narrow ones, 10th) or the frames pause (a gap over 1.5 times the usual one). Timestamp
    rounding (Matroska's milliseconds: 33 and 34 ms at 29.97 fps) counts as even."""
    if len(stamps) < 4:
        return False
    gaps = np.diff(np.unique(np.asarray(stamps, dtype=np.int64)))
    if len(gaps) < 3:
        return False
    narrow, usual, wide = np.percentile(gaps, [10, 50, 90])
    return bool(narrow > 0 and (wide > 1.5 * narrow or gaps.max() > 1.5 * usual))


def stream_duration_s(stream: av.video.stream.VideoStream) -> float:
    """The video stream's own duration, 0.0 when the header has none.

    The container's duration is not used: some formats (Matroska with a start
    offset) report the end time there, not the length.
    """
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return 0.0


def _candidate_rates(stream: av.video.stream.VideoStream) -> list[Fraction]:
    rates = (stream.average_rate, stream.guessed_rate, stream.base_rate)
    return [Fraction(rate) for rate in rates if rate and rate > 0 and math.isfinite(float(rate))]


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    rates = _candidate_rates(stream)
    return rates[0] if rates else None


def _rate_of_packets(rates: list[Fraction], frame_s: float | None) -> Fraction | None:
    """The first of the stream's ``rates`` that its packets' spacing agrees with (within 1%), if one does.

    The average rate is not always the one the timestamps follow: FFmpeg 8 gives
    DV its 1/60000 time base as average rate, and elementary streams (.m2v,
    .m4v, .h264) the raw demuxer's 25 fps whatever their headers say.
    """
    if not frame_s:
        return None
    return next((rate for rate in rates if abs(float(rate) * frame_s - 1) <= 0.01), None)


def _check_frame_size(width: int, height: int, max_frame_pixels: int | None) -> None:
    if max_frame_pixels and width * height > max_frame_pixels:
        raise ProbeError(schema.READ_FAILED, f"frames of {width}x{height} ({width * height} pixels) are over the limit of "
                                             f"{max_frame_pixels} pixels (--max-frame-pixels)")


def probe(path: str, timeout_s: float | None = None, *, max_frame_pixels: int | None = None) -> VideoInfo:
    """Probe ``path``; raise :class:`ProbeError` when it is not a usable video.

    The header's frame count is used when it agrees with duration x fps;
    otherwise (0, missing, or off) the frames are counted from the stream.
    One frame is decoded to prove the stream is decodable. Counting frames
    stops with status ``timed_out`` after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        size = file_size(path)
        if size == 0:
            raise ProbeError(schema.READ_FAILED, "empty file (0 bytes)")
        with open_container(path) as container:
            stream = best_video_stream(container)
            if stream is None:
                what = "only a cover picture" if container.streams.video else "no video stream"
                raise ProbeError(schema.NO_VIDEO_STREAM, f"the file has {what}")
            if stream.codec_context is None:
                tag = getattr(stream, "codec_tag", "") or "unknown"
                raise ProbeError(schema.READ_FAILED, f"unsupported video codec (tag {tag!r}): FFmpeg has no decoder for it")
            rates = _candidate_rates(stream)
            rate = rates[0] if rates else None
            width, height = stream.codec_context.width, stream.codec_context.height
            codec = stream.codec_context.name
            if rate is None:
                raise ProbeError(schema.BAD_METADATA, "the video stream has no usable frame rate")
            duration_s = stream_duration_s(stream)
            header_frames = int(stream.frames or 0)
            _check_frame_size(width, height, max_frame_pixels)  # before a frame of that size is decoded
            first = next(container.decode(stream), None)
            if first is None:
                raise ProbeError(schema.READ_FAILED, "the video stream has no decodable frames")
            width, height = width or first.width, height or first.height
            _check_frame_size(width, height, max_frame_pixels)
            display = Display.of(stream, first)
            edited = _has_edit_list(container, stream, duration_s)
            container_name = container.format.name
            pixel_format = first.format.name
            audio = container.streams.audio
            audio_codec = audio[0].codec_context.name if audio and audio[0].codec_context is not None else None
    except ProbeError:
        raise
    except FileNotFoundError as exc:
        raise ProbeError(schema.READ_FAILED, f"file not found: {exc.filename or path}") from exc
    except PermissionError as exc:
        raise ProbeError(schema.READ_FAILED, f"permission denied: {path}") from exc
    except av.error.FFmpegError as exc:
        if exc.errno == errno.ENOENT:
            raise ProbeError(schema.READ_FAILED, f"file not found: {path}") from exc
        if exc.errno == errno.EACCES:
            raise ProbeError(schema.READ_FAILED, f"permission denied: {path}") from exc
        raise ProbeError(schema.READ_FAILED, f"not a readable video ({type(exc).__name__}: {exc.strerror})") from exc
    except (OSError, ValueError) as exc:
        raise ProbeError(schema.READ_FAILED, f"{type(exc).__name__}: {exc}") from exc

    if width <= 0 or height <= 0:
        raise ProbeError(schema.BAD_METADATA, f"invalid frame size {width}x{height}")
    fps = float(rate)
    # An mp4/mov whose nominal and average rates differ may be variable-rate (phones): its packets tell.
    # (Matroska and WebM headers hold no frame count: their packets are counted anyway.)
    suspect = container_name.startswith("mov") and any(abs(float(r) / float(rate) - 1) > 0.01 for r in rates[1:])
    variable = False
    if _header_is_trustworthy(header_frames, duration_s, fps) and not edited and not suspect:
        num_frames, source = header_frames, "header"
    else:
        try:
            count = _count_frames(path, display.stream_index, deadline)
        except DecodeTimeout as exc:
            raise ProbeError(schema.TIMED_OUT, f"gave up after {timeout_s:g} s counting frames (--video-timeout-s)") from exc
        num_frames, source, variable = count.frames, "counted", count.variable
        fps = float(_rate_of_packets(rates, count.frame_s) or rate)
        duration_s = count.span_s or num_frames / fps
    if duration_s <= 0:
        duration_s = num_frames / fps
    return VideoInfo(
        size_bytes=size,
        container=container_name,
        codec=codec,
        duration_s=duration_s,
        fps=fps,
        width=width,
        height=height,
        num_frames=num_frames,
        frame_count_source=source,
        pixel_format=pixel_format,
        audio_codec=audio_codec,
        display=display,
        variable_frame_rate=variable,
    )


def _has_edit_list(container: av.container.InputContainer, stream: av.video.stream.VideoStream, duration_s: float) -> bool:
    """Whether the header's counts may include frames an edit list hides (mp4/mov: the movie's duration
    is the edited one, the track's the media's): then the frames are counted instead."""
    if not container.format.name.startswith("mov") or not container.duration or duration_s <= 0:
        return False
    return float(container.duration) / av.time_base < duration_s - 0.5 / float(frame_rate(stream) or 30)
