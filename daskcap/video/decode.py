"""Decode the frames of one clip, streaming, in one pass."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av


@dataclass
class DecodeStats:
    frames: int = 0
    corrupt_packets: int = 0  # packets the decoder rejected (skipped)
    stream_cut: bool = False  # the demuxer failed before the end (truncated file)


class SeekFailed(Exception):
    """The demuxer cannot seek (elementary streams, some RealMedia files): decode the clip from the start."""


def seek_before(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, origin: Fraction, start_frame: int, rate: Fraction
) -> None:
    # Half a frame early, so rounding cannot land the seek just past the frame.
    target = math.floor(origin + (Fraction(start_frame) - Fraction(1, 2)) / rate / stream.time_base)
    try:
        container.seek(max(stream.start_time or 0, target), stream=stream, backward=True, any_frame=False)
    except av.error.FFmpegError as exc:
        raise SeekFailed(f"cannot seek to frame {start_frame} ({type(exc).__name__}: {exc})") from exc


def _origin(frame_pts: int, frames_before: int, rate: Fraction, time_base: Fraction) -> Fraction:
    """The timestamp frame 0 has, from a frame's timestamp and how many frames came before it."""
    return frame_pts - frames_before / rate / time_base


def first_frame_origin(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, rate: Fraction, deadline: float | None
) -> Fraction:
    """The timestamp of frame 0, decoded from the start of a fresh container.

    Not ``stream.start_time``: where a container stores no presentation times
    (AVI, elementary streams) and the stream has B-frames, FFmpeg's first frame
    comes out one frame or more after it, and frames counted from it would be
    shifted by that much.
    """
    count = 0
    for packet in _packets(container, stream, DecodeStats(), deadline):
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            continue
        for frame in frames:
            if frame.pts is not None:
                return _origin(frame.pts, count, rate, stream.time_base)
            count += 1
    return Fraction(stream.start_time or 0)


TIME_TOLERANCE_S = 0.0015  # timestamps rounded to milliseconds (Matroska) still fall on their side of a cut


class DecodeTimeout(TimeoutError):
    """Decoding ran past its deadline (a pathological or huge file)."""


def check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeTimeout(f"{what} ran past its time limit")


def _packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, stats: DecodeStats, deadline: float | None = None
) -> Iterator[av.Packet]:
    packets = container.demux(stream)
    while True:
        check_deadline(deadline, "decoding")
        try:
            yield next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError:
            stats.stream_cut = True
            return


def iter_clip_frames(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    start_frame: int,
    end_frame: int,
    rate: Fraction,
    stats: DecodeStats,
    seek: bool = True,
    deadline: float | None = None,
    on_packet: Callable[[av.Packet], None] | None = None,
    span_s: tuple[float, float] | None = None,
) -> Iterator[av.VideoFrame]:
    """Yield the decoded frames whose source index is in ``[start_frame, end_frame)``.

    With ``span_s`` (a variable-rate video) the frames whose time from frame 0 is in
    ``[start_s, end_s)`` instead: a grid of ``rate`` is too coarse where the rate changes.

    A frame's index is its presentation time x ``rate`` (rounded), so a clip is
    a time span, as in the reference; frames without timestamps continue the
    count of the frame before. ``container`` must be freshly opened: the first
    clip is read from the start without seeking (a seek to the start time can
    land past the first group of pictures in MPEG-PS). Packets the decoder
    rejects are skipped and counted in ``stats`` rather than ending the clip.
    ``on_packet`` sees every packet read, before it is decoded. Raises
    :class:`SeekFailed`, before any frame, where the container cannot seek.
    """
    # Timestamp of frame 0, found from the first frame that has one.
    origin: Fraction | None = None
    # Index of the last frame seen: known (-1) only when decoding from the start.
    previous = -1
    if seek and start_frame > 0:
        origin = first_frame_origin(container, stream, rate, deadline)
        seek_before(container, stream, origin, start_frame, rate)
        previous = None
    for packet in _packets(container, stream, stats, deadline):
        if on_packet is not None:
            on_packet(packet)
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            stats.corrupt_packets += 1
            continue
        for frame in frames:
            if frame.pts is not None:
                if origin is None:
                    origin = _origin(frame.pts, previous + 1, rate, stream.time_base)
                index = round((frame.pts - origin) * stream.time_base * rate)
            elif previous is not None:
                index = previous + 1
            else:
                continue  # after a seek with no timestamp we cannot place it
            previous = index
            if span_s is not None and frame.pts is not None:
                seconds = float((frame.pts - origin) * stream.time_base)
                if seconds < span_s[0] - TIME_TOLERANCE_S:
                    continue
                if seconds >= span_s[1] - TIME_TOLERANCE_S:
                    return
            elif index < start_frame:
                continue
            elif index >= end_frame:
                return
            stats.frames += 1
            yield frame
