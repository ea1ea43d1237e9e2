"""PreviewStage: an animated, looping WebP per window.

prepare_windows builds previews from the frames it decodes anyway (see
``preview_plan``); ``make_previews`` fills the rest from each window's mp4.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import av
import pandas as pd

from daskcap import schema
from daskcap.stages._params import Checks
from daskcap.video.encode import encode_webp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreviewStage:
    """The reference's preview parameters. ``num_cpus_per_worker`` is kept for
    compatibility; daskcap sizes its workers at the cluster level."""

    target_fps: float = 1.0
    target_height: int = 240
    compression_level: int = 6
    quality: int = 50
    num_cpus_per_worker: float = 4.0
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = Checks("PreviewStage")
        checks.number("target_fps", self.target_fps, above=0)
        if checks.number("target_height", self.target_height, 2, integer=True) and self.target_height % 2:
            checks.fail(f"target_height must be even, got {self.target_height}")
        checks.number("compression_level", self.compression_level, 0, 6, integer=True)
        checks.number("quality", self.quality, 0, 100, integer=True)
        checks.number("num_cpus_per_worker", self.num_cpus_per_worker, above=0)
        checks.done()


def preview_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """Width keeping the aspect ratio, rounded to even, at ``target_height``."""
    target_width = max(2, int(round(width * target_height / height / 2)) * 2)
    return target_width, target_height


def preview_positions(num_frames: int, source_fps: float, target_fps: float) -> list[int]:
    """Window frame positions shown at ``target_fps``: the frame nearest each tick.

    At least two, first and last, so a window shorter than one tick still
    gives an animated WebP (one image would make a still one).
    """
    duration_s = num_frames / source_fps
    ticks = int(duration_s * target_fps + 1e-9)
    if ticks < 2:
        return [0, num_frames - 1]
    return [min(num_frames - 1, int(round(k * source_fps / target_fps))) for k in range(ticks)]


def preview_plan(num_frames: int, fps: float, width: int, height: int, params: PreviewStage) -> tuple[list[int], tuple[int, int]]:
    """The window positions a preview shows and its (width, height)."""
    return preview_positions(num_frames, fps, params.target_fps), preview_size(width, height, params.target_height)


def encode_preview(frames: list[av.VideoFrame], size: tuple[int, int], params: PreviewStage) -> bytes:
    return encode_webp(frames, *size, params.target_fps, params.quality, params.compression_level)


def warn_low_source(video_path: str, fps: float, source_height: int, params: PreviewStage) -> None:
    """Say once per video and process that the source is below the preview's rate or height."""
    if video_path in _warned:
        return
    if len(_warned) >= _WARNED_MAX:  # a long-lived worker sees millions of videos
        _warned.clear()
    _warned.add(video_path)
    if fps < params.target_fps:
        log.warning("%s: source %.2f fps is below the preview's %.2f fps", video_path, fps, params.target_fps)
    if source_height < params.target_height:
        log.warning("%s: source height %d is below the preview's %d", video_path, source_height, params.target_height)


_warned: set[str] = set()
_WARNED_MAX = 4096


def _window_preview(window_mp4: bytes, fps: float, params: PreviewStage) -> tuple[bytes, int]:
    """The preview's bytes and the source frame height, decoding the window's mp4."""
    with av.open(io.BytesIO(window_mp4), "r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        num_frames = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
        if not stream.frames:
            container.seek(0)
        source_height = stream.codec_context.height
        positions, size = preview_plan(num_frames, fps, stream.codec_context.width, source_height, params)
        picked = []
        wanted = iter(positions)
        next_position = next(wanted, None)
        for position, frame in enumerate(container.decode(stream)):
            while next_position is not None and position == next_position:
                # Shrink now so only small frames are held.
                picked.append(frame.reformat(*size, format="yuv420p"))
                next_position = next(wanted, None)
            if next_position is None:
                break
    return encode_preview(picked, size, params), source_height


def make_previews(windows: pd.DataFrame, params: PreviewStage) -> pd.DataFrame:
    """Fill ``preview_webp``; a window whose preview fails gets ``preview_failed``."""
    windows = windows.copy()
    previews = list(windows["preview_webp"])
    statuses = list(windows["status"])
    errors = list(windows["error"])
    for i, window in enumerate(windows.itertuples(index=False)):
        if window.status != schema.OK or isinstance(previews[i], bytes):
            continue  # failed, or previewed while its clip was decoded (prepare_windows)
        if window.window_mp4 is None:
            statuses[i], errors[i] = schema.PREVIEW_FAILED, "no window mp4 (run CaptionPreparationStage with generate_previews=True)"
            continue
        try:
            previews[i], source_height = _window_preview(window.window_mp4, window.fps, params)
            warn_low_source(window.video_path, window.fps, source_height, params)
        except Exception as exc:  # noqa: BLE001 (a failed preview is recorded, never fatal)
            statuses[i], errors[i] = schema.PREVIEW_FAILED, f"{type(exc).__name__}: {exc}"
            log.warning("%s window %s/%d: preview failed: %s", window.video_path, window.clip_id, window.window_index, exc)
    windows["preview_webp"] = pd.Series(previews, index=windows.index, dtype=windows["preview_webp"].dtype)
    windows["status"] = pd.Series(statuses, index=windows.index, dtype=windows["status"].dtype)
    windows["error"] = pd.Series(errors, index=windows.index, dtype=windows["error"].dtype)
    return windows
