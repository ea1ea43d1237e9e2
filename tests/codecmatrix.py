"""A corpus of stamped videos in every codec and container real collections hold.

Each entry is written in process with PyAV (its bundled FFmpeg); frames are
stamped with their index (videogen.stamped_frame), so a test can read back
which source frames every clip and window mp4 holds. What this FFmpeg cannot
write is listed in NOT_WRITABLE with the reason, checked by the tests.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from videogen import write_stamped_video

FPS = 25  # a frame rate MPEG-1/2 allow; the default 176x144 is a legal H.263 size
NTSC = Fraction(30000, 1001)
NUM_FRAMES = 48


@dataclass(frozen=True)
class Entry:
    codec: str  # PyAV encoder name
    suffix: str
    pix_fmt: str = "yuv420p"
    container_format: str | None = None  # when the suffix does not name the muxer
    options: dict = field(default_factory=dict)  # encoder options
    container_options: dict = field(default_factory=dict)
    variant: str = ""  # tells apart entries of one codec, pixel format and container
    width: int = 176
    height: int = 144
    fps: Fraction | int = FPS

    @property
    def name(self) -> str:
        return f"{self.codec}_{self.pix_fmt}{'_' + self.variant if self.variant else ''}{self.suffix}"


B_FRAMES = {"bf": "2"}  # MPEG-1/2/4: real DVDs, broadcasts and DivX files have them
X264_B_FRAMES = {"preset": "medium"}  # B-pyramid and, in mp4, an edit list
DNXHR_LB = {"profile": "dnxhr_lb"}  # DNxHR takes sizes from 256 wide; DNxHD only its broadcast ones

MATRIX = (
    # H.264: what daskcap copies (4:2:0 8-bit, whole file) and what it must encode.
    Entry("libx264", ".mp4"), Entry("libx264", ".mkv"), Entry("libx264", ".mov"), Entry("libx264", ".ts"),
    Entry("libx264", ".m2ts", container_format="mpegts", container_options={"mpegts_m2ts_mode": "1"}),
    Entry("libx264", ".flv"), Entry("libx264", ".3gp"),
    Entry("libx264", ".mp4", options=X264_B_FRAMES, variant="bframes"),
    Entry("libx264", ".mp4", options=X264_B_FRAMES, variant="bframes_ntsc", fps=NTSC),
    Entry("libx264", ".mkv", options=X264_B_FRAMES, variant="bframes"),
    Entry("libx264", ".ts", options=X264_B_FRAMES, variant="bframes"),
    Entry("libx264", ".mp4", "yuvj420p"),  # full range, as phones write
    Entry("libx264", ".mkv", "yuv422p"), Entry("libx264", ".mp4", "yuv444p"),
    Entry("libx264", ".mkv", "yuv420p10le"), Entry("libx264", ".mp4", "yuv420p10le"),
    Entry("libx264", ".mov", "yuv422p10le"),  # camera H.264 4:2:2 10-bit
    Entry("libx264", ".mts", container_format="mpegts", options=X264_B_FRAMES, container_options={"mpegts_m2ts_mode": "1"},
          variant="bframes_ntsc", fps=NTSC),  # AVCHD
    Entry("libx264", ".mkv", options={**X264_B_FRAMES, "x264-params": "open-gop=1"}, variant="open_gop"),
    Entry("libx264", ".ts", options={**X264_B_FRAMES, "x264-params": "open-gop=1"}, variant="open_gop"),
    Entry("libx264", ".mp4", options={**X264_B_FRAMES, "x264-params": "interlaced=1"}, variant="interlaced"),
    Entry("libx264", ".h264", container_format="h264", options=X264_B_FRAMES, variant="bframes"),  # no container
    Entry("libx264", ".h264", container_format="h264", options=X264_B_FRAMES, variant="bframes_ntsc", fps=NTSC),
    Entry("libx264", ".nut", options=X264_B_FRAMES, variant="bframes"),
    Entry("libx264", ".f4v"), Entry("libx264", ".m4v", container_format="ipod"),
    # HEVC (x265's defaults have B-frames).
    Entry("libx265", ".mp4"), Entry("libx265", ".mkv"), Entry("libx265", ".mov"), Entry("libx265", ".ts"),
    Entry("libx265", ".mkv", "yuv420p10le"), Entry("libx265", ".mov", "yuv422p10le"),
    Entry("libx265", ".hevc", container_format="hevc", variant="ntsc", fps=NTSC),
    # AV1, VP8, VP9.
    Entry("libsvtav1", ".mkv"), Entry("libsvtav1", ".webm"), Entry("libsvtav1", ".mp4"), Entry("libsvtav1", ".mkv", "yuv420p10le"),
    Entry("libvpx", ".webm"), Entry("libvpx", ".mkv"),
    Entry("libvpx-vp9", ".webm"), Entry("libvpx-vp9", ".mkv"), Entry("libvpx-vp9", ".mp4"), Entry("libvpx-vp9", ".webm", "yuv444p"),
    Entry("libvpx-vp9", ".ivf"), Entry("libsvtav1", ".ivf"),
    # MPEG-1/2: program and transport streams, MXF, DVD, a bare elementary stream.
    Entry("mpeg1video", ".mpg", container_format="mpeg"),
    Entry("mpeg1video", ".mpeg", container_format="mpeg", options=B_FRAMES, variant="bframes"),
    Entry("mpeg2video", ".mpg", container_format="mpeg"), Entry("mpeg2video", ".ts"), Entry("mpeg2video", ".mxf"),
    Entry("mpeg2video", ".vob", container_format="vob"), Entry("mpeg2video", ".mpg", "yuv422p", container_format="mpeg"),
    Entry("mpeg2video", ".vob", container_format="vob", options=B_FRAMES, variant="bframes_ntsc", fps=NTSC),
    Entry("mpeg2video", ".ts", options=B_FRAMES, variant="bframes"),
    Entry("mpeg2video", ".m2v", container_format="mpeg2video", options=B_FRAMES, variant="bframes"),
    Entry("mpeg2video", ".m2v", container_format="mpeg2video", variant="ntsc", fps=NTSC),
    Entry("mpeg2video", ".mpg", container_format="mpeg", options={**B_FRAMES, "flags": "+ildct+ilme"}, variant="interlaced"),
    # MPEG-4 part 2 and its Microsoft, H.263 and Sorenson relatives.
    Entry("mpeg4", ".mp4"), Entry("mpeg4", ".avi"), Entry("mpeg4", ".mkv"),
    Entry("mpeg4", ".avi", options=B_FRAMES, variant="bframes"),  # DivX/Xvid style
    Entry("mpeg4", ".divx", container_format="avi", options=B_FRAMES, variant="bframes"),
    Entry("mpeg4", ".m4v", container_format="m4v", options=B_FRAMES, variant="bframes_ntsc", fps=NTSC),  # no container
    Entry("msmpeg4", ".asf"),
    Entry("msmpeg4v2", ".avi"), Entry("msmpeg4", ".avi"),
    Entry("wmv1", ".wmv", container_format="asf"), Entry("wmv2", ".wmv", container_format="asf"), Entry("wmv2", ".asf"),
    Entry("h263", ".3gp"), Entry("h263", ".3g2"), Entry("flv", ".flv"), Entry("svq1", ".mov", "yuv410p"),
    Entry("rv10", ".rm"), Entry("rv20", ".rm"),
    # Intra-only and mezzanine codecs.
    Entry("mjpeg", ".avi", "yuvj420p"), Entry("mjpeg", ".mov", "yuvj422p"), Entry("mjpeg", ".mjpeg", "yuvj420p"),
    # DV takes only its broadcast sizes.
    Entry("dvvideo", ".dv", width=720, height=576), Entry("dvvideo", ".dv", "yuv411p", variant="ntsc", fps=NTSC, width=720, height=480),
    Entry("prores_ks", ".mov", "yuv422p10le"), Entry("prores_ks", ".mov", "yuva444p10le"),
    Entry("dnxhd", ".mov", "yuv422p", options=DNXHR_LB, width=256), Entry("dnxhd", ".mxf", "yuv422p", options=DNXHR_LB, width=256),
    Entry("dnxhd", ".mxf", "yuv422p10le", options={"profile": "dnxhr_hqx"}, width=256),
    Entry("dnxhd", ".mov", "yuv444p10le", options={"profile": "dnxhr_444"}, width=256),
    Entry("dnxhd", ".mov", "yuv422p", options={"b": "60M"}, variant="720p", width=1280, height=720),  # DNxHD proper
    Entry("ffv1", ".mkv"), Entry("ffv1", ".avi"), Entry("ffv1", ".mkv", "yuv420p10le"), Entry("ffv1", ".mkv", "yuv422p"),
    Entry("huffyuv", ".avi", "yuv422p"), Entry("utvideo", ".avi"), Entry("utvideo", ".avi", "yuv422p"),
    Entry("magicyuv", ".avi"),
    Entry("qtrle", ".mov", "rgb24"), Entry("cinepak", ".avi", "rgb24"), Entry("cinepak", ".mov", "rgb24"),
    Entry("rawvideo", ".avi"), Entry("rawvideo", ".mkv"), Entry("rawvideo", ".y4m", container_format="yuv4mpegpipe"),
)


def _no_encoder(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return True
    return False


def _muxer_refuses(container_format: str, codec: str) -> bool:
    with av.open(io.BytesIO(), "w", format=container_format) as container:
        try:
            container.add_stream(codec, rate=FPS)
        except ValueError:
            return True
    return False


# What real collections hold that this FFmpeg cannot write in process: no test
# file can be made for it here (the decoders are there). Each check is true
# while that stays so; once it turns false, the case belongs in MATRIX.
NOT_WRITABLE = {
    "Theora (.ogv, .mkv)": ("no Theora encoder: PyAV's FFmpeg is built without libtheora", lambda: _no_encoder("libtheora")),
    "VP9 10-bit (.webm, .mkv)": (
        "libvpx is built without high bit depth: libvpx-vp9 takes no 10-bit pixel format",
        lambda: not {"yuv420p10le", "yuv422p10le"} & {f.name for f in av.Codec("libvpx-vp9", "w").video_formats},
    ),
    "UtVideo in .mkv": (
        "FFmpeg's Matroska muxer takes UtVideo only below normal compliance, which PyAV cannot ask for",
        lambda: _muxer_refuses("matroska", "utvideo"),
    ),
}


def write_entry(entry: Entry, folder: Path, num_frames: int = NUM_FRAMES) -> Path:
    return write_stamped_video(
        folder / entry.name, num_frames, entry.fps, entry.width, entry.height, codec=entry.codec,
        container_format=entry.container_format, pix_fmt=entry.pix_fmt, gop=12, codec_options=entry.options,
        container_options=entry.container_options,
    )
