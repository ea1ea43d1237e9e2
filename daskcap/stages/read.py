"""VideoReaderStage: where the videos are, and probing each into a video row (listing: ``listing.py``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from daskcap import schema
from daskcap.stages._params import Checks
from daskcap.video.probe import ProbeError, probe

log = logging.getLogger(__name__)

# Every extension of a container FFmpeg demuxes that carries video: phone,
# camera, broadcast, web and legacy files alike. Matched case-insensitively;
# a file listed by name (a single file, a glob, a Parquet list) needs none.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".qt", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m2v", ".vob",
    ".ts", ".m2ts", ".mts", ".mxf", ".3gp", ".3g2", ".flv", ".f4v", ".ogv", ".ogg", ".wmv",
    ".asf", ".dv", ".y4m", ".ivf", ".divx", ".h264", ".264", ".hevc", ".h265", ".265", ".mjpeg", ".mjpg", ".nut", ".rm", ".rmvb",
)


def parse_extensions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``".mp4,.MOV mkv"`` (or a list) as lower-case extensions with their dot."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    return tuple(dict.fromkeys("." + item.strip().lstrip(".").lower() for item in items if item.strip().lstrip(".")))


@dataclass(frozen=True)
class VideoReaderStage:
    """Where the videos are: a directory (searched recursively), a glob, one
    video file, or a Parquet file with a ``path`` column; local or any fsspec URL.

    ``video_limit``: read at most this many videos (in sorted path order);
    -1 or 0 reads them all. ``video_extensions`` (daskcap): the file name
    endings a directory is searched for, case-insensitively.
    """

    input_video_path: str
    video_limit: int | None = -1  # None (NeMo's default), -1 or 0: all
    verbose: bool = False
    timeout_s: float | None = 600.0  # daskcap: per-video limit for probing
    video_extensions: tuple[str, ...] = VIDEO_EXTENSIONS  # daskcap: what a directory is searched for
    # daskcap: frames larger than this are refused at probe time (read_failed), before one is
    # decoded; the default admits DCI 8K (8192x4320). A tiny file can declare huge frames.
    max_frame_pixels: int = 8192 * 4320

    def __post_init__(self) -> None:
        object.__setattr__(self, "video_extensions", parse_extensions(self.video_extensions))
        checks = Checks("VideoReaderStage")
        if not self.video_extensions:
            checks.fail("video_extensions must name at least one extension, e.g. .mp4")
        checks.text("input_video_path", self.input_video_path)
        if self.video_limit is not None:
            checks.number("video_limit", self.video_limit, integer=True)
        if self.timeout_s is not None:
            checks.number("timeout_s", self.timeout_s, above=0)
        checks.number("max_frame_pixels", self.max_frame_pixels, 1, integer=True)
        checks.done()


def read_videos(paths: pd.DataFrame, params: VideoReaderStage) -> pd.DataFrame:
    """Probe every path into a video row; a bad file becomes a row with a failure status."""
    rows = []
    for path in paths["video_path"]:
        row = {"video_path": path, "status": schema.OK, "error": None}
        try:
            info = probe(path, params.timeout_s, max_frame_pixels=params.max_frame_pixels)
        except ProbeError as exc:
            row.update(status=exc.status, error=str(exc))
            log.warning("%s: %s", path, exc)
        except Exception as exc:  # noqa: BLE001 (one strange file must not fail its partition)
            row.update(status=schema.READ_FAILED, error=f"unexpected {type(exc).__name__} while probing: {exc}")
            log.exception("%s: unexpected error while probing", path)
        else:
            row.update(
                size_bytes=info.size_bytes,
                container=info.container,
                codec=info.codec,
                duration_s=info.duration_s,
                fps=info.fps,
                width=info.width,
                height=info.height,
                num_frames=info.num_frames,
                frame_count_source=info.frame_count_source,
                pixel_format=info.pixel_format,
                audio_codec=info.audio_codec,
                **info.display.row(),
                variable_frame_rate=info.variable_frame_rate,
            )
            if params.verbose:
                log.info("%s: %s %dx%d %.3f fps %d frames", path, info.codec, info.width, info.height, info.fps, info.num_frames)
        rows.append(row)
    return schema.frame_from_rows(rows, schema.VIDEO_SCHEMA)
