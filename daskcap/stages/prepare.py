"""CaptionPreparationStage: explode clips into caption windows with their model input.

Each clip is decoded once, streaming: every decoded frame goes to its window's
mp4 encoder (and the clip's), and the frames sampled for the model are resized
to the model's pixel grid on the spot. No frame buffer grows with the clip.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
from av.video.reformatter import VideoReformatter
import numpy as np
import pandas as pd

from daskcap import schema
from daskcap.prompts import CAPTION_PROMPTS, caption_prompt
from daskcap.stages._params import Checks
from daskcap.video.decode import DecodeStats, DecodeTimeout, SeekFailed, iter_clip_frames
from daskcap.stages.preview import PreviewStage, encode_preview, preview_plan, warn_low_source
from daskcap.stages.transcode import H264_ENCODERS, SUPPORTED_ENCODERS, clip_codec, clip_options
from daskcap.video.encode import MP4_CODEC, MP4_CRF, MP4_PRESET, X264_PRESETS, Mp4Writer, StreamCopy, even_size
from daskcap.video.io import open_container
from daskcap.video.probe import frame_rate
from daskcap.video.windows import PIXEL_GRIDS, frame_size_for_model, num_sampled_frames, sample_indices, split_windows

log = logging.getLogger(__name__)

PREPROCESS_DTYPES = ("float32", "float16", "bfloat16", "uint8")
RESIZE_INTERPOLATION = "BICUBIC"  # what Qwen-VL's processor uses
_TO_STREAM_END = 2**62


@dataclass(frozen=True)
class CaptionPreparationStage:
    """Windows and sampled frames (docs/design.md, "Windows and model inputs"), with the reference's parameters.

    ``preprocess_dtype`` is the dtype the engine builds pixel values in; rows
    always hold uint8 frames. ``model_does_preprocess`` keeps sampled frames at
    the source size and leaves resizing to the model's processor.
    ``clip_mp4`` (daskcap) also encodes each clip's own mp4 in the same decode.
    ``mp4_preset`` and ``mp4_crf`` (daskcap) set libx264's speed/size trade-off
    and quality for those mp4s.
    """

    model_variant: str = "qwen"
    prompt_variant: str = "default"
    prompt_text: str | None = None
    sampling_fps: float = 2.0
    window_size: int = 256
    remainder_threshold: int = 128
    model_does_preprocess: bool = False
    preprocess_dtype: str = "float32"
    generate_previews: bool = True
    verbose: bool = False
    clip_mp4: bool = True
    timeout_s: float | None = 600.0  # daskcap: limit per clip (decode and encodes)
    mp4_preset: str = MP4_PRESET  # daskcap: libx264 preset of clip and window mp4s
    mp4_crf: int = MP4_CRF  # daskcap: libx264 quality target (0 lossless .. 51 worst)
    # How the clip's own mp4 is encoded; ClipTranscodingStage sets these (see stages/transcode.py).
    clip_encoder: str = "libx264"
    clip_encoder_threads: int = 0  # 0: the encoder's default
    clip_use_input_bit_rate: bool = False

    def __post_init__(self) -> None:
        checks = Checks("CaptionPreparationStage")
        checks.choice("model_variant", self.model_variant, PIXEL_GRIDS)
        checks.choice("prompt_variant", self.prompt_variant, CAPTION_PROMPTS)
        checks.text("prompt_text", self.prompt_text, optional=True)
        checks.number("sampling_fps", self.sampling_fps, above=0)
        if checks.number("window_size", self.window_size, 4, integer=True):
            checks.number("remainder_threshold", self.remainder_threshold, 0, self.window_size, integer=True)
        checks.choice("preprocess_dtype", self.preprocess_dtype, PREPROCESS_DTYPES)
        if self.timeout_s is not None:
            checks.number("timeout_s", self.timeout_s, above=0)
        checks.choice("mp4_preset", self.mp4_preset, X264_PRESETS)
        checks.number("mp4_crf", self.mp4_crf, 0, 51, integer=True)
        checks.choice("clip_encoder", self.clip_encoder, SUPPORTED_ENCODERS)
        checks.number("clip_encoder_threads", self.clip_encoder_threads, 0, integer=True)
        checks.done()

    def windows(self, num_frames: int) -> list[tuple[int, int]]:
        """The (first, last) frames of each caption window of a clip of ``num_frames`` frames."""
        return split_windows(num_frames, self.window_size, self.remainder_threshold)


@dataclass
class _Window:
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


class _ClipFailed(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _plan_windows(
    num_frames: int, fps: float, height: int, width: int, params: CaptionPreparationStage, preview: PreviewStage | None
) -> list[_Window]:
    windows = []
    for index, (start, end) in enumerate(params.windows(num_frames)):
        count = num_sampled_frames(end - start + 1, fps, params.sampling_fps)
        if params.model_does_preprocess:
            # Source size (4:2:0 storage needs even sides: an odd row/column is dropped).
            size = even_size(width, height)[::-1]
        else:
            size = frame_size_for_model(height, width, count, PIXEL_GRIDS[params.model_variant])
        window = _Window(index, start, end, sample_indices(start, end, count), *size)
        if preview is not None:
            positions, window.preview_size = preview_plan(end - start + 1, fps, *even_size(width, height), preview)
            window.preview_positions = [start + p for p in positions]
        windows.append(window)
    return windows


@contextlib.contextmanager
def _clip_frames(
    clip, stats: DecodeStats, seek: bool, deadline: float | None = None, on_packet: Callable[[av.Packet], None] | None = None
) -> Iterator[tuple[Iterator[av.VideoFrame], Fraction, av.video.stream.VideoStream]]:
    """The clip's decoded frames (streaming), the source frame rate and stream."""
    with open_container(clip.video_path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # The probe's rate, which planned the clip (the stream's own where they agree: it is exact).
        rate = frame_rate(stream)
        if rate is None or float(rate) != float(clip.fps):
            rate = Fraction(clip.fps).limit_denominator(100000)
        start = int(clip.source_start_frame)
        end = _TO_STREAM_END if clip.reaches_end else int(clip.source_end_frame)
        yield iter_clip_frames(container, stream, start, end, rate, stats, seek=seek, deadline=deadline, on_packet=on_packet), rate, stream


def _count_clip_frames(clip, deadline: float | None) -> int:
    stats = DecodeStats()
    with _clip_frames(clip, stats, seek=False, deadline=deadline) as (frames, _, _):
        for _ in frames:
            pass
    return stats.frames


class _CopyRefused(Exception):
    """The source could not be copied after all: decode again and encode."""


def _copyable(clip, stream: av.video.stream.VideoStream) -> bool:
    """The clip is its whole source, in the H.264 4:2:0 daskcap writes (known before any packet is read)."""
    whole = int(clip.source_start_frame) == 0 and bool(clip.reaches_end)
    return whole and StreamCopy.accepts(stream)


def _decode_clip(
    clip, windows: list[_Window], params: CaptionPreparationStage, seek: bool, deadline: float | None, allow_copy: bool = True
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
    pieces = params.generate_previews
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
    try:
        with _clip_frames(clip, stats, seek, deadline, copy.add if copy else None) as (frames, rate, stream):
            # Decided before the first packet is read: a copy that cannot apply never opens an output.
            if copy is not None and not _copyable(clip, stream):
                copy.stop()
            for position, frame in enumerate(frames):
                if position == 0:
                    if copy is not None and (not copy.usable or frame.rotation or frame.format.name != "yuv420p"):
                        copy.stop()  # a rotated source must be turned upright: encode it
                        copy = None
                    # A clip made of one window is its own mp4; a copied clip needs no encoding.
                    whole = params.clip_mp4 and copy is None and not (len(windows) == 1 and pieces) and not own_clip_encoder
                    cut = pieces and not (copy is not None and len(windows) == 1)
                    if whole or cut:
                        cuts = [w.start for w in windows]
                        options = {"preset": params.mp4_preset, "crf": str(params.mp4_crf)}
                        writer = Mp4Writer(frame.width, frame.height, rate, cuts, whole=whole, pieces=cut, options=options)
                    if own_clip_encoder and copy is None:
                        bit_rate = (stream.bit_rate or stream.container.bit_rate or None) if params.clip_use_input_bit_rate else None
                        options = clip_options(codec, params.clip_encoder_threads, bit_rate)
                        if codec == MP4_CODEC:
                            options.update(preset=params.mp4_preset, **({} if bit_rate else {"crf": str(params.mp4_crf)}))
                        clip_writer = Mp4Writer(frame.width, frame.height, rate, whole=True, options=options, codec=codec)
                if position >= len(window_of):
                    continue  # more frames than planned: the caller re-plans
                if writer is not None:
                    writer.add(frame)
                if clip_writer is not None:
                    clip_writer.add(frame)
                window = windows[window_of[position]]
                if position in wanted:
                    image = sampler.reformat(frame, window.width, window.height, format="yuv420p", interpolation=RESIZE_INTERPOLATION)
                    window.frames.append(image.to_ndarray())
                for _ in range(shown.get(position, 0)):
                    window.preview_frames.append(shrinker.reformat(frame, *window.preview_size, format="yuv420p"))
            if stats.frames != len(window_of):
                return stats, None  # the caller re-plans
            clip_bytes, window_bytes = writer.finish() if writer is not None else (None, [])
            if clip_writer is not None:
                clip_bytes, _ = clip_writer.finish()
            if copy is not None:
                clip_bytes = copy.finish() if not (stats.corrupt_packets or stats.stream_cut) else None
                if clip_bytes is None:
                    raise _CopyRefused
                if pieces and len(windows) == 1:
                    window_bytes = [clip_bytes]
    except DecodeTimeout as exc:
        raise _ClipFailed(schema.TIMED_OUT, f"gave up after {params.timeout_s:g} s on this clip (--video-timeout-s)") from exc
    except av.error.FFmpegError as exc:
        raise _ClipFailed(schema.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from exc
    except (ValueError, MemoryError) as exc:
        raise _ClipFailed(schema.ENCODE_FAILED, f"{type(exc).__name__}: {exc}") from exc
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


def _decode_warning(expected: int, decoded: int, stats: DecodeStats) -> str | None:
    """What an ``ok`` window should still tell its user about lost frames."""
    notes = []
    if decoded < expected:
        notes.append(f"{decoded} of {expected} expected frames decoded")
    if stats.corrupt_packets:
        notes.append(f"{stats.corrupt_packets} corrupt packet(s) skipped")
    if stats.stream_cut:
        notes.append("the stream ends early (truncated file)")
    return "warning: " + "; ".join(notes) if notes else None


def _clip_windows(clip, params: CaptionPreparationStage, preview: PreviewStage | None, seconds: dict[str, list[float]]) -> list[dict]:
    """The clip's window rows; [wall, CPU] seconds spent on previews are added to ``seconds``."""
    prompt = caption_prompt(params.prompt_variant, params.prompt_text)
    fps, height, width = float(clip.fps), int(clip.height), int(clip.width)
    expected = int(clip.num_frames)
    base = {
        "video_path": clip.video_path,
        "clip_id": clip.clip_id,
        "clip_index": clip.clip_index,
        "clip_start_s": clip.clip_start_s,
        "clip_end_s": clip.clip_end_s,
        "fps": fps,
        "prompt": prompt,
    }

    def failed_rows(spans, status: str, error: str) -> list[dict]:
        return [
            {**base, "window_index": i, "start_frame": start, "end_frame": end, "status": status, "error": error}
            for i, (start, end) in enumerate(spans)
        ]

    try:
        windows = _plan_windows(expected, fps, height, width, params, preview)
    except ValueError as exc:  # no model frame size for this video (aspect ratio)
        spans = params.windows(expected)
        return failed_rows(spans, schema.ENCODE_FAILED, str(exc))
    if not windows:
        return []
    deadline = time.monotonic() + params.timeout_s if params.timeout_s else None

    def decode(seek: bool) -> tuple[DecodeStats, bytes | None]:
        try:
            return _decode_clip(clip, windows, params, seek=seek, deadline=deadline)
        except (_CopyRefused, SeekFailed) as exc:
            # A shortcut did not apply: fresh windows (the first pass may have
            # filled them), encode this time, and read from the start where seeking failed.
            if isinstance(exc, SeekFailed):
                log.info("%s clip %d: %s; decoding from the start", clip.video_path, clip.clip_index, exc)
                seek = False
            windows[:] = _plan_windows(windows[-1].end + 1, fps, height, width, params, preview)
            return _decode_clip(clip, windows, params, seek=seek, deadline=deadline, allow_copy=False)

    try:
        stats, clip_bytes = decode(seek=True)
        if stats.frames != expected:
            # The decoded frames disagree with the probed count (variable frame
            # rate, a lying header, lost data): count what really decodes, from
            # the start of the file, and plan the windows on that.
            try:
                decoded = _count_clip_frames(clip, deadline)
            except DecodeTimeout as exc:
                raise _ClipFailed(schema.TIMED_OUT, f"gave up after {params.timeout_s:g} s on this clip (--video-timeout-s)") from exc
            log.info("%s clip %d: %d frames decode, %d expected; re-planning", clip.video_path, clip.clip_index, decoded, expected)
            windows[:] = _plan_windows(decoded, fps, height, width, params, preview)
            if not windows:
                return []
            stats, clip_bytes = decode(seek=False)
            if stats.frames != decoded:
                raise _ClipFailed(schema.DECODE_FAILED, f"decoding is not repeatable: {decoded} then {stats.frames} frames")
        if any(len(w.frames) != len(w.sampled_indices) for w in windows):
            raise _ClipFailed(schema.DECODE_FAILED, "the decoder returned fewer frames than the clip holds")
    except _ClipFailed as exc:
        return failed_rows([(w.start, w.end) for w in windows], exc.status, str(exc))
    warning = _decode_warning(expected, stats.frames, stats)
    if warning:
        log.warning("%s clip %d: %s", clip.video_path, clip.clip_index, warning)
    rows = []
    for window in windows:
        status, error, webp = schema.OK, warning, None
        if preview is not None:
            start, cpu = time.perf_counter(), time.process_time()
            try:
                webp = encode_preview(window.preview_frames, window.preview_size, preview)
            except (av.error.FFmpegError, ValueError, MemoryError) as exc:
                status, error = schema.PREVIEW_FAILED, f"{type(exc).__name__}: {exc}"
                log.warning("%s window %s/%d: preview failed: %s", clip.video_path, clip.clip_id, window.index, exc)
            window.preview_frames.clear()
            spent = seconds.setdefault("preview", [0.0, 0.0])
            spent[0] += time.perf_counter() - start
            spent[1] += time.process_time() - cpu
        rows.append(
            {
                **base,
                "window_index": window.index,
                "start_frame": window.start,
                "end_frame": window.end,
                "num_sampled_frames": len(window.sampled_indices),
                "sampled_frame_indices": window.sampled_indices,
                "sampled_width": window.width,
                "sampled_height": window.height,
                "sampled_frames": schema.pack_frames(np.stack(window.frames)),
                "window_mp4": window.mp4_bytes,
                "clip_mp4": clip_bytes if window.index == 0 else None,
                "preview_webp": webp,
                "status": status,
                "error": error,
            }
        )
    if preview is not None:
        warn_low_source(clip.video_path, fps, even_size(width, height)[1], preview)
    if params.verbose:
        log.info("%s clip %d: %d windows", clip.video_path, clip.clip_index, len(rows))
    return rows


def prepare_windows(clips: pd.DataFrame, params: CaptionPreparationStage, preview: PreviewStage | None = None) -> pd.DataFrame:
    """Explode clip rows into window rows; a clip that fails gives failed window rows.

    With ``preview`` (and ``generate_previews``), each window's preview is built
    from the frames decoded here, and the [wall, CPU] seconds it took are
    reported in the result's ``attrs[schema.LENT_SECONDS]["preview"]``.
    """
    rows = []
    seconds: dict[str, list[float]] = {}
    if not params.generate_previews:
        preview = None
    for clip in clips.itertuples(index=False):
        if clip.status != schema.OK:
            continue
        try:
            rows.extend(_clip_windows(clip, params, preview, seconds))
        except Exception as exc:  # noqa: BLE001 (one strange clip must not fail its partition)
            log.exception("%s clip %d: unexpected error", clip.video_path, clip.clip_index)
            spans = params.windows(int(clip.num_frames)) or [(0, 0)]
            rows.extend(
                {"video_path": clip.video_path, "clip_id": clip.clip_id, "clip_index": clip.clip_index,
                 "clip_start_s": clip.clip_start_s, "clip_end_s": clip.clip_end_s, "fps": clip.fps,
                 "window_index": i, "start_frame": start, "end_frame": end, "status": schema.DECODE_FAILED,
                 "error": f"unexpected {type(exc).__name__}: {exc}"}
                for i, (start, end) in enumerate(spans)
            )
    frame = schema.frame_from_rows(rows, schema.WINDOW_SCHEMA)
    frame.attrs[schema.LENT_SECONDS] = seconds
    return frame
