"""One streaming decode of a clip for CaptionPreparationStage: every frame goes to its
window's mp4 encoder (and the clip's), the frames sampled for the model are resized
to the model's pixel grid as they pass, and those a preview shows are shrunk. No
frame buffer grows with the clip. ``params`` is the CaptionPreparationStage."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from daskcap import schema
from daskcap.stages.preview import PreviewStage, preview_plan
from daskcap.stages.transcode import H264_ENCODERS, clip_codec, clip_options
from daskcap.video.decode import TIME_TOLERANCE_S, DecodeStats, DecodeTimeout, check_deadline, first_frame_origin, iter_clip_frames, seek_before
from daskcap.video.display import Display, FrameShaper, tone_map_to_sdr
from daskcap.video.encode import MP4_CODEC, Mp4Writer, StreamCopy, even_size
from daskcap.video.io import open_container
from daskcap.video.probe import frame_rate
from daskcap.video.windows import PIXEL_GRIDS, frame_size_for_model, num_sampled_frames, sample_by_time, sample_indices

log = logging.getLogger(__name__)

RESIZE_INTERPOLATION = "BICUBIC"  # what Qwen-VL's processor uses
_TO_STREAM_END = 2**62


@dataclass
class ClipWindow:
    """One window being built while its clip decodes."""

    index: int
    start: int
    end: int
    sampled_indices: list[int]
    height: int
    width: int
    frames: list[np.ndarray] = field(default_factory=list)
    mp4_bytes: bytes | None = None
    # The preview: clip positions it shows, its size, and those frames shrunk.
    preview_positions: list[int] = field(default_factory=list)
    preview_size: tuple[int, int] = (0, 0)
    preview_frames: list[av.VideoFrame] = field(default_factory=list)


class ClipFailed(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def plan_windows(
    num_frames: int, fps: float, height: int, width: int, params, preview: PreviewStage | None,
    frame_times: list[float] | None = None,
) -> list[ClipWindow]:
    """The clip's windows, sized for a picture of ``width`` x ``height`` as shown (video/display.py).

    ``frame_times`` (a variable-rate clip: each frame's time) sample the model's frames evenly in
    time, as many as the window's duration asks; a constant rate gives the same by frame index.
    """
    windows = []
    for index, (start, end) in enumerate(params.windows(num_frames)):
        frames, window_fps = end - start + 1, fps
        if frame_times is not None:
            window_fps = frames / _window_seconds(frame_times, start, end)
        count = num_sampled_frames(frames, window_fps, params.sampling_fps)
        sampled = sample_indices(start, end, count) if frame_times is None else sample_by_time(frame_times, start, end, count)
        if params.model_does_preprocess:
            # Source size (4:2:0 storage needs even sides: an odd row/column is dropped).
            size = even_size(width, height)[::-1]
        else:
            size = frame_size_for_model(height, width, count, PIXEL_GRIDS[params.model_variant])
        window = ClipWindow(index, start, end, sampled, *size)
        if preview is not None:
            positions, window.preview_size = preview_plan(frames, window_fps, *even_size(width, height), preview)
            window.preview_positions = [start + p for p in positions]
        windows.append(window)
    return windows


@contextlib.contextmanager
def _clip_frames(
    clip, stats: DecodeStats, seek: bool, deadline: float | None = None, on_packet: Callable[[av.Packet], None] | None = None
) -> Iterator[tuple[Iterator[av.VideoFrame], Fraction, av.video.stream.VideoStream]]:
    """The clip's decoded frames (streaming), the source frame rate and stream."""
    with open_container(clip.video_path) as container:
        stream = container.streams[int(clip.stream_index)]  # the one the probe chose (not always the first)
        stream.thread_type = "AUTO"
        # The probe's rate, which planned the clip (the stream's own where they agree: it is exact).
        rate = frame_rate(stream)
        if rate is None or float(rate) != float(clip.fps):
            rate = Fraction(clip.fps).limit_denominator(100000)
        start = int(clip.source_start_frame)
        end = _TO_STREAM_END if clip.reaches_end else int(clip.source_end_frame)
        frames = iter_clip_frames(container, stream, start, end, rate, stats, seek=seek, deadline=deadline, on_packet=on_packet,
                                  span_s=clip_span_s(clip))
        yield frames, rate, stream


def clip_span_s(clip) -> tuple[float, float] | None:
    """A variable-rate clip's time span (its frames are those in it); None for a constant rate (frame indices)."""
    if not clip.variable_frame_rate:
        return None
    return float(clip.clip_start_s), float("inf") if clip.reaches_end else float(clip.clip_end_s)


def clip_frame_times(clip, deadline: float | None) -> list[float]:
    """The presentation times (seconds from frame 0) of a variable-rate clip's frames, from its packets (no decode
    past the first frame): what its windows are planned and its model frames sampled on."""
    start_s, end_s = clip_span_s(clip)
    with open_container(clip.video_path) as container:
        stream = container.streams[int(clip.stream_index)]
        rate = Fraction(clip.fps).limit_denominator(100000)
        origin = first_frame_origin(container, stream, rate, deadline)
        if int(clip.source_start_frame) > 0:
            seek_before(container, stream, origin, int(clip.source_start_frame), rate)
        else:
            container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
        times = []
        for count, packet in enumerate(container.demux(stream)):
            if count % 256 == 0:
                check_deadline(deadline, "counting frames")
            if packet.dts is not None and float((packet.dts - origin) * stream.time_base) > end_s + 1.0:
                break  # past the end by more than any reordering
            if not packet.size or packet.is_discard or packet.pts is None:
                continue
            seconds = float((packet.pts - origin) * stream.time_base)
            if start_s - TIME_TOLERANCE_S <= seconds < end_s - TIME_TOLERANCE_S:
                times.append(seconds)
    return sorted(times)


def _window_seconds(frame_times: list[float], start: int, end: int) -> float:
    """A window's duration: its first frame to its last, plus one frame at its own rate."""
    span = frame_times[end] - frame_times[start]
    return span + (span / (end - start) if end > start else 1 / 30)


def count_clip_frames(clip, deadline: float | None) -> int:
    stats = DecodeStats()
    with _clip_frames(clip, stats, seek=False, deadline=deadline) as (frames, _, _):
        for _ in frames:
            pass
    return stats.frames


class CopyRefused(Exception):
    """The source could not be copied after all: decode again and encode."""


def _copyable(clip, stream: av.video.stream.VideoStream) -> bool:
    """The clip is its whole source, in the H.264 4:2:0 daskcap writes (known before any packet is read), and
    the bitstream says all a player needs: a pixel aspect only the container holds (mp4 'pasp', Matroska's
    display size) would be lost in a copy."""
    whole = int(clip.source_start_frame) == 0 and bool(clip.reaches_end)
    coded = stream.codec_context.sample_aspect_ratio or 1
    return whole and StreamCopy.accepts(stream) and (stream.sample_aspect_ratio or 1) == coded


def decode_clip(
    clip, windows: list[ClipWindow], params, seek: bool, deadline: float | None, allow_copy: bool = True
) -> tuple[DecodeStats, bytes | None]:
    """Stream the clip once through every window; return the decode stats and the clip's mp4.

    Every frame goes through one encoder (key frames at window starts) whose
    output is both the clip's mp4 and, cut at those key frames, the windows'
    mp4s; sampled and preview frames are shrunk as they pass. A clip that is
    a whole H.264 file is not encoded again: its packets are copied.
    """
    stats = DecodeStats()
    window_of = np.full(windows[-1].end + 1, -1, dtype=np.int64)
    for window in windows:
        window_of[window.start : window.end + 1] = window.index
    wanted = {i for w in windows for i in w.sampled_indices}
    shown = {}  # clip position -> how many times its window's preview shows it
    for window in windows:
        for position in window.preview_positions:
            shown[position] = shown.get(position, 0) + 1
    pieces = params.window_mp4s
    # The clip's own encoder, when it is not the windows' libx264 (ClipTranscodingStage).
    codec = clip_codec(params.clip_encoder) if params.clip_mp4 else MP4_CODEC
    own_clip_encoder = params.clip_mp4 and (codec != MP4_CODEC or params.clip_encoder_threads or params.clip_use_input_bit_rate)
    # Only the clip's mp4 (and a single window's, which is the same file) can be a copy:
    # an H.264 source stays H.264 (at its own bit rate), whatever H.264 encoder was asked for.
    copy_ok = allow_copy and params.clip_encoder in H264_ENCODERS
    copy = StreamCopy() if copy_ok and (params.clip_mp4 or (pieces and len(windows) == 1)) else None
    writer = clip_writer = None
    # Scalers kept between frames (frame.reformat would set one up per call).
    sampler, shrinker = VideoReformatter(), VideoReformatter()
    display = Display.from_row(clip)

    def shown_at(scaler: VideoReformatter, frame: av.VideoFrame, width: int, height: int, interpolation: str | None) -> av.VideoFrame:
        """Model input and previews: BT.601 limited-range yuv420p whatever the source's matrix and range (HDR tone-mapped)."""
        if display.hdr:
            return tone_map_to_sdr(frame, width, height, display, interpolation or "BILINEAR")
        return scaler.reformat(frame, width, height, format="yuv420p", interpolation=interpolation, **display.model_colour)
    try:
        with _clip_frames(clip, stats, seek, deadline, copy.add if copy else None) as (frames, rate, stream):
            # Decided before the first packet is read: a copy that cannot apply never opens an output.
            if copy is not None and not _copyable(clip, stream):
                copy.stop()
            shaper = FrameShaper(display, stream, display.deinterlaces(params.deinterlace))
            for position, frame in enumerate(_shaped(frames, shaper)):
                if position == 0:
                    if copy is not None and (not copy.usable or shaper.active or frame.format.name != "yuv420p"):
                        copy.stop()  # a rotated source is turned upright, an interlaced one deinterlaced: encode it
                        copy = None
                    # A clip made of one window is its own mp4; a copied clip needs no encoding.
                    whole = params.clip_mp4 and copy is None and not (len(windows) == 1 and pieces) and not own_clip_encoder
                    cut = pieces and not (copy is not None and len(windows) == 1)
                    if whole or cut:
                        cuts = [w.start for w in windows]
                        options = {"preset": params.mp4_preset, "crf": str(params.mp4_crf)}
                        writer = Mp4Writer(frame.width, frame.height, rate, cuts, whole=whole, pieces=cut, options=options, display=display, timestamps=bool(clip.variable_frame_rate))
                    if own_clip_encoder and copy is None:
                        bit_rate = (stream.bit_rate or stream.container.bit_rate or None) if params.clip_use_input_bit_rate else None
                        options = clip_options(codec, params.clip_encoder_threads, bit_rate)
                        if codec == MP4_CODEC:
                            options.update(preset=params.mp4_preset, **({} if bit_rate else {"crf": str(params.mp4_crf)}))
                        clip_writer = Mp4Writer(frame.width, frame.height, rate, whole=True, options=options, codec=codec, display=display, timestamps=bool(clip.variable_frame_rate))
                if position >= len(window_of):
                    continue  # more frames than planned: the caller re-plans
                if writer is not None:
                    writer.add(frame)
                if clip_writer is not None:
                    clip_writer.add(frame)
                window = windows[window_of[position]]
                if position in wanted:
                    window.frames.append(shown_at(sampler, frame, window.width, window.height, RESIZE_INTERPOLATION).to_ndarray())
                for _ in range(shown.get(position, 0)):
                    window.preview_frames.append(shown_at(shrinker, frame, *window.preview_size, None))
            if stats.frames != len(window_of):
                return stats, None  # the caller re-plans
            clip_bytes, window_bytes = writer.finish() if writer is not None else (None, [])
            if clip_writer is not None:
                clip_bytes, _ = clip_writer.finish()
            if copy is not None:
                clip_bytes = copy.finish() if not (stats.corrupt_packets or stats.stream_cut) else None
                if clip_bytes is None:
                    raise CopyRefused
                if pieces and len(windows) == 1:
                    window_bytes = [clip_bytes]
    except DecodeTimeout as exc:
        raise ClipFailed(schema.TIMED_OUT, f"gave up after {params.timeout_s:g} s on this clip (--video-timeout-s)") from exc
    except av.error.FFmpegError as exc:
        raise ClipFailed(schema.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from exc
    except (ValueError, MemoryError) as exc:
        raise ClipFailed(schema.ENCODE_FAILED, f"{type(exc).__name__}: {exc}") from exc
    finally:
        for encoder in (writer, clip_writer):
            if encoder is not None:
                encoder.abort()  # no-op once finished
        if copy is not None:
            copy.stop()
    for window, mp4 in zip(windows, window_bytes):
        window.mp4_bytes = mp4
    if params.clip_mp4 and clip_bytes is None:
        clip_bytes = windows[0].mp4_bytes
    return stats, clip_bytes if params.clip_mp4 else None


def _shaped(frames: Iterator[av.VideoFrame], shaper: FrameShaper) -> Iterator[av.VideoFrame]:
    """The clip's frames as shown: upright, deinterlaced where asked (untouched when neither applies)."""
    if not shaper.active:
        yield from frames
        return
    for frame in frames:
        yield from shaper.shape(frame)
    yield from shaper.flush()


def decode_warning(expected: int, decoded: int, stats: DecodeStats) -> str | None:
    """What an ``ok`` window should still tell its user about lost frames."""
    notes = []
    if decoded < expected:
        notes.append(f"{decoded} of {expected} expected frames decoded")
    if stats.corrupt_packets:
        notes.append(f"{stats.corrupt_packets} corrupt packet(s) skipped")
    if stats.stream_cut:
        notes.append("the stream ends early (truncated file)")
    return "warning: " + "; ".join(notes) if notes else None
