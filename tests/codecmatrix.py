"""A corpus of stamped videos in every codec and container real collections hold.

Each entry is written in process with PyAV (its bundled FFmpeg); frames are
stamped with their index (videogen.stamped_frame), so a test can read back
which source frames every clip and window mp4 holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from videogen import write_stamped_video

FPS = 25  # a frame rate MPEG-1/2 allow; the default 176x144 is a legal H.263 size


@dataclass(frozen=True)
class Entry:
    codec: str  # PyAV encoder name
    suffix: str
    pix_fmt: str = "yuv420p"
    container_format: str | None = None  # when the suffix does not name the muxer
    options: dict = field(default_factory=dict)
    width: int = 176
    height: int = 144

    @property
    def name(self) -> str:
        return f"{self.codec}_{self.pix_fmt}{self.suffix}"


MATRIX = (
    Entry("libx264", ".mp4"), Entry("libx264", ".mkv"), Entry("libx264", ".mov"), Entry("libx264", ".ts"),
    Entry("libx264", ".m2ts", container_format="mpegts"), Entry("libx264", ".flv"), Entry("libx264", ".3gp"),
    Entry("libx264", ".mkv", "yuv422p"), Entry("libx264", ".mkv", "yuv420p10le"),
    Entry("libx265", ".mp4"), Entry("libx265", ".mkv"), Entry("libx265", ".ts"), Entry("libx265", ".mkv", "yuv420p10le"),
    Entry("libsvtav1", ".mkv"), Entry("libsvtav1", ".webm"), Entry("libsvtav1", ".mp4"),
    Entry("libvpx", ".webm"), Entry("libvpx", ".mkv"),
    Entry("libvpx-vp9", ".webm"), Entry("libvpx-vp9", ".mkv"), Entry("libvpx-vp9", ".mp4"),
    Entry("mpeg1video", ".mpg", container_format="mpeg"),
    Entry("mpeg2video", ".mpg", container_format="mpeg"), Entry("mpeg2video", ".ts"), Entry("mpeg2video", ".mxf"),
    Entry("mpeg2video", ".vob", container_format="vob"), Entry("mpeg2video", ".mpg", "yuv422p", container_format="mpeg"),
    Entry("mpeg4", ".mp4"), Entry("mpeg4", ".avi"), Entry("mpeg4", ".mkv"),
    Entry("msmpeg4v2", ".avi"), Entry("msmpeg4", ".avi"), Entry("wmv2", ".wmv", container_format="asf"),
    Entry("h263", ".3gp"), Entry("flv", ".flv"), 
    Entry("mjpeg", ".avi", "yuvj420p"), Entry("mjpeg", ".mov", "yuvj422p"),
    Entry("prores_ks", ".mov", "yuv422p10le"), Entry("prores_ks", ".mov", "yuva444p10le"),
    # DNxHR takes sizes from 256 wide.
    Entry("dnxhd", ".mov", "yuv422p", options={"profile": "dnxhr_lb"}, width=256),
    Entry("dnxhd", ".mxf", "yuv422p", options={"profile": "dnxhr_lb"}, width=256),
    Entry("ffv1", ".mkv"), Entry("ffv1", ".avi"), Entry("ffv1", ".mkv", "yuv420p10le"), Entry("ffv1", ".mkv", "yuv422p"),
    Entry("huffyuv", ".avi", "yuv422p"), Entry("utvideo", ".avi"), Entry("utvideo", ".avi", "yuv422p"),
    Entry("qtrle", ".mov", "rgb24"), Entry("cinepak", ".avi", "rgb24"), Entry("cinepak", ".mov", "rgb24"),
    Entry("rawvideo", ".avi"), Entry("rawvideo", ".mkv"), Entry("rawvideo", ".y4m", container_format="yuv4mpegpipe"),
)


# Codecs real collections hold that this FFmpeg cannot write: they are decoded
# like the rest, but no test file can be made here in process.
NOT_ENCODABLE = {
    "theora": "PyAV's FFmpeg has a Theora decoder but no encoder (libtheora is not built in)",
    "vp9 10-bit": "libvpx is built without high bit depth (profile 2 refused)",
}


def write_entry(entry: Entry, folder: Path, num_frames: int) -> Path:
    return write_stamped_video(
        folder / entry.name, num_frames, FPS, entry.width, entry.height, codec=entry.codec, container_format=entry.container_format,
        pix_fmt=entry.pix_fmt, gop=12, codec_options=entry.options,
    )
