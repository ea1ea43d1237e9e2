"""CaptionPreparationStage: explode clips into caption windows with their model input.

Each clip is decoded once, streaming (``clip_decode.py``): every decoded frame goes
to its window's mp4 encoder (and the clip's), and the frames sampled for the model
are resized to the model's pixel grid on the spot. No frame buffer grows with the
clip. This module turns that decode's windows into rows, previews included.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import av
import numpy as np
import pandas as pd

from daskcap import schema
from daskcap.prompts import CAPTION_PROMPTS, caption_prompt
from daskcap.stages._params import Checks
from daskcap.stages.clip_decode import (
    ClipFailed, CopyRefused, clip_frame_times, count_clip_frames, decode_clip, decode_warning, plan_windows,
)
from daskcap.stages.preview import PreviewStage, encode_preview
from daskcap.stages.transcode import SUPPORTED_ENCODERS
from daskcap.video.decode import DecodeStats, DecodeTimeout, SeekFailed
from daskcap.video.display import DEINTERLACE_MODES
from daskcap.video.encode import MP4_CRF, MP4_PRESET, X264_PRESETS
from daskcap.video.windows import PIXEL_GRIDS, split_windows

log = logging.getLogger(__name__)

PREPROCESS_DTYPES = ("float32", "float16", "bfloat16", "uint8")


@dataclass(frozen=True)
class CaptionPreparationStage:
    """Windows and sampled frames (docs/design.md, "Windows and model inputs"), with the reference's parameters.

    ``preprocess_dtype`` is the dtype the engine builds pixel values in; rows
    always hold uint8 frames. ``model_does_preprocess`` keeps sampled frames at
    the source size and leaves resizing to the model's processor.
    ``generate_previews`` (NeMo Curator's name) cuts each window's own mp4 from the
    clip's encode (``window_mp4s`` says so in code); previews are made by
    ``PreviewStage`` from the frames of the same decode, with or without them.
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
    deinterlace: str = "auto"  # daskcap: field-coded sources deinterlaced (bwdif): auto (when the stream says so), on, off

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
        checks.choice("deinterlace", self.deinterlace, DEINTERLACE_MODES)
        checks.done()

    @property
    def window_mp4s(self) -> bool:
        """Whether each window gets its own mp4 (``window_mp4``): NeMo Curator's
        ``generate_previews``, named for what it does here."""
        return self.generate_previews

    def windows(self, num_frames: int) -> list[tuple[int, int]]:
        """The (first, last) frames of each caption window of a clip of ``num_frames`` frames."""
        return split_windows(num_frames, self.window_size, self.remainder_threshold)


def _clip_windows(clip, params: CaptionPreparationStage, preview: PreviewStage | None, seconds: dict[str, list[float]]) -> list[dict]:
    """The clip's window rows; [wall, CPU] seconds spent on previews are added to ``seconds``."""
    prompt = caption_prompt(params.prompt_variant, params.prompt_text)
    # Windows are sized for the picture as shown (rotation and pixel aspect applied): video/display.py.
    fps, height, width = float(clip.fps), int(clip.display_height), int(clip.display_width)
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

    deadline = time.monotonic() + params.timeout_s if params.timeout_s else None
    times = None
    if clip.variable_frame_rate:
        # Frame indices on a constant grid do not fit: the clip's frames are those its packets' times put in
        # its span, counted before the decode, and the model's frames are sampled evenly in time.
        try:
            times = clip_frame_times(clip, deadline)
        except (av.error.FFmpegError, DecodeTimeout, SeekFailed) as exc:
            log.info("%s clip %d: frame times unknown (%s); frames by index", clip.video_path, clip.clip_index, exc)
        else:
            expected = len(times)
    try:
        windows = plan_windows(expected, fps, height, width, params, preview, times)
    except ValueError as exc:  # no model frame size for this video (aspect ratio)
        spans = params.windows(expected)
        return failed_rows(spans, schema.ENCODE_FAILED, str(exc))
    if not windows:
        return []

    def decode(seek: bool) -> tuple[DecodeStats, bytes | None]:
        try:
            return decode_clip(clip, windows, params, seek=seek, deadline=deadline)
        except (CopyRefused, SeekFailed) as exc:
            # A shortcut did not apply: fresh windows (the first pass may have
            # filled them), encode this time, and read from the start where seeking failed.
            if isinstance(exc, SeekFailed):
                log.info("%s clip %d: %s; decoding from the start", clip.video_path, clip.clip_index, exc)
                seek = False
            windows[:] = plan_windows(windows[-1].end + 1, fps, height, width, params, preview, times)
            return decode_clip(clip, windows, params, seek=seek, deadline=deadline, allow_copy=False)

    try:
        stats, clip_bytes = decode(seek=True)
        if stats.frames != expected:
            # The decoded frames disagree with the probed count (variable frame
            # rate, a lying header, lost data): count what really decodes, from
            # the start of the file, and plan the windows on that.
            try:
                decoded = count_clip_frames(clip, deadline)
            except DecodeTimeout as exc:
                raise ClipFailed(schema.TIMED_OUT, f"gave up after {params.timeout_s:g} s on this clip (--video-timeout-s)") from exc
            log.info("%s clip %d: %d frames decode, %d expected; re-planning", clip.video_path, clip.clip_index, decoded, expected)
            times_fit = times if times is not None and len(times) == decoded else None
            windows[:] = plan_windows(decoded, fps, height, width, params, preview, times_fit)
            if not windows:
                return []
            stats, clip_bytes = decode(seek=False)
            if stats.frames != decoded:
                raise ClipFailed(schema.DECODE_FAILED, f"decoding is not repeatable: {decoded} then {stats.frames} frames")
        if any(len(w.frames) != len(w.sampled_indices) for w in windows):
            raise ClipFailed(schema.DECODE_FAILED, "the decoder returned fewer frames than the clip holds")
    except ClipFailed as exc:
        return failed_rows([(w.start, w.end) for w in windows], exc.status, str(exc))
    warning = decode_warning(expected, stats.frames, stats)
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
    if params.verbose:
        log.info("%s clip %d: %d windows", clip.video_path, clip.clip_index, len(rows))
    return rows


def prepare_windows(clips: pd.DataFrame, params: CaptionPreparationStage, preview: PreviewStage | None = None) -> pd.DataFrame:
    """Explode clip rows into window rows; a clip that fails gives failed window rows.

    With ``preview``, each window's preview is built from the frames decoded
    here, and the [wall, CPU] seconds it took are reported in the result's
    ``attrs[schema.LENT_SECONDS]["preview"]``.
    """
    rows = []
    seconds: dict[str, list[float]] = {}
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
