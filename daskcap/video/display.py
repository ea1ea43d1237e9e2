"""The picture as a viewer sees it: which stream, turned upright, at its display aspect, in its colours.

Decided once per video from its stream and first frame (``Display.of``), carried on the
video and clip rows, and applied wherever frames become pixels (``FrameShaper``): the
model's sampled frames, previews, window and clip mp4s.

- Stream: the one a player takes (``best_video_stream``): never an attached picture, the
  default one first, a one-frame cover or thumbnail track only when nothing else exists.
- Rotation: the display matrix (phones store portrait video landscape). Frames are turned
  upright before anything else sees them, mp4s included.
- Pixel aspect: SAR (anamorphic DVD and broadcast). Sizes are planned on the display size;
  re-encoded mp4s keep the stored pixels and carry the SAR, as the source does.
- Colour: the matrix and range the stream is tagged with (untagged: BT.709 from 720 lines
  up, BT.601 below, as players decide; yuvj* formats are full range). Model input and
  previews are converted to BT.601 limited range, which is how they are stored (WebP's own
  colour space; ``schema.unpack_frames`` reads it so); mp4s keep the source's values and tags.
  HDR (PQ or HLG transfer) is tone-mapped to SDR BT.709 for the model and previews.
- Interlaced (field-coded) sources are deinterlaced (bwdif, a frame per frame) unless off.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

ATTACHED_PIC = 0x400  # AV_DISPOSITION_ATTACHED_PIC
DEFAULT = 0x1  # AV_DISPOSITION_DEFAULT

# FFmpeg's enum values (AVColorSpace, AVColorRange, AVColorTransferCharacteristic, AVFieldOrder).
_MATRICES = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020", 10: "bt2020"}
_RANGES = {1: "limited", 2: "full"}
_TRANSFERS = {1: "bt709", 6: "bt709", 14: "bt709", 15: "bt709", 13: "srgb", 16: "smpte2084", 18: "arib-std-b67"}
_PRIMARIES = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020"}
_FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")
DEINTERLACE_MODES = ("auto", "on", "off")

_SWS_MATRIX = {"bt601": Colorspace.ITU601, "bt709": Colorspace.ITU709, "bt2020": Colorspace.BT2020}
_SWS_RANGE = {"limited": ColorRange.MPEG, "full": ColorRange.JPEG}
# Encoder tags of what the source is (FFmpeg enum values), for mp4s that keep its pixels.
_TAG_MATRIX = {"bt601": 6, "bt709": 1, "bt2020": 9}
_TAG_RANGE = {"limited": 1, "full": 2}


def best_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream a player shows: not an attached picture (cover art); the default one; one that
    holds more than a single frame (a thumbnail track) when such a stream exists; then the most frames,
    then the largest."""
    streams = [s for s in container.streams.video if not (int(s.disposition) & ATTACHED_PIC)]
    if not streams:
        return None

    def rank(stream: av.video.stream.VideoStream) -> tuple:
        frames = int(stream.frames or 0)
        context = stream.codec_context
        area = context.width * context.height if context is not None else 0
        still = frames == 1 or (context is not None and context.name in ("png", "mjpeg", "bmp", "gif", "webp") and frames <= 1)
        return (not still, bool(int(stream.disposition) & DEFAULT), frames, area, -stream.index)

    return max(streams, key=rank)


@dataclass(frozen=True)
class Display:
    """How a video's stored frames are shown. ``rotation``: degrees counterclockwise (0, 90, 180, 270)."""

    width: int  # stored
    height: int
    stream_index: int = 0
    rotation: int = 0
    sample_aspect_ratio: Fraction = Fraction(1)
    color_space: str = "bt601"
    color_range: str = "limited"
    color_transfer: str = "bt709"
    color_primaries: str = "bt601"
    field_order: str = "progressive"

    @classmethod
    def of(cls, stream: av.video.stream.VideoStream, frame: av.VideoFrame) -> Display:
        context = stream.codec_context
        width, height = context.width or frame.width, context.height or frame.height
        # FFmpeg's guess, as players decide: the container's (mp4 pasp, Matroska display size) over the bitstream's.
        sar = stream.sample_aspect_ratio or context.sample_aspect_ratio
        sar = Fraction(sar) if sar and sar > 0 else Fraction(1)
        hd = height >= 720 or width >= 1280  # the players' rule for untagged video

        def tag(names: dict, attribute: str, default: str) -> str:
            # The frame's tag, else the stream's; "unspecified" (2, or 0 for the range) is no tag.
            for source in (frame, context):
                name = names.get(int(getattr(source, attribute, 0) or 0))
                if name is not None:
                    return name
            return default

        full = frame.format.name.startswith("yuvj") or tag(_RANGES, "color_range", "limited") == "full"
        return cls(
            width=width, height=height, stream_index=stream.index,
            rotation=round(float(frame.rotation or 0) / 90) * 90 % 360,  # players turn by quarter turns
            sample_aspect_ratio=sar,
            color_space=tag(_MATRICES, "colorspace", "bt709" if hd else "bt601"),
            color_range="full" if full else "limited",
            color_transfer=tag(_TRANSFERS, "color_trc", "bt709"),
            color_primaries=tag(_PRIMARIES, "color_primaries", "bt709" if hd else "bt601"),
            field_order=_field_order(context, frame),
        )

    @property
    def display_width(self) -> int:
        return self._shown()[0]

    @property
    def display_height(self) -> int:
        return self._shown()[1]

    def _shown(self) -> tuple[int, int]:
        width = max(2, round(self.width * self.sample_aspect_ratio))  # players widen (or narrow) the picture
        return (self.height, width) if self.rotation in (90, 270) else (width, self.height)

    @property
    def hdr(self) -> bool:
        return self.color_transfer in HDR_TRANSFERS

    @property
    def interlaced(self) -> bool:
        return self.field_order in ("tt", "bb", "tb", "bt")

    def row(self) -> dict:
        """The video (and clip) row's columns."""
        sar = self.sample_aspect_ratio
        return {
            "stream_index": self.stream_index, "rotation": self.rotation,
            "display_width": self.display_width, "display_height": self.display_height,
            "sample_aspect_ratio": f"{sar.numerator}:{sar.denominator}",
            "color_space": self.color_space, "color_range": self.color_range, "color_transfer": self.color_transfer,
            "color_primaries": self.color_primaries, "field_order": self.field_order,
        }

    @classmethod
    def from_row(cls, row) -> Display:
        numerator, denominator = str(row.sample_aspect_ratio).split(":")
        return cls(
            width=int(row.width), height=int(row.height), stream_index=int(row.stream_index), rotation=int(row.rotation),
            sample_aspect_ratio=Fraction(int(numerator), int(denominator)), color_space=row.color_space,
            color_range=row.color_range, color_transfer=row.color_transfer, color_primaries=row.color_primaries,
            field_order=row.field_order,
        )

    def deinterlaces(self, mode: str) -> bool:
        return mode == "on" or (mode == "auto" and self.interlaced)

    @property
    def model_colour(self) -> dict:
        """swscale arguments that bring this stream's YUV to BT.601 limited range (the stored model input)."""
        return {
            "src_colorspace": _SWS_MATRIX[self.color_space], "dst_colorspace": Colorspace.ITU601,
            "src_color_range": _SWS_RANGE[self.color_range], "dst_color_range": ColorRange.MPEG,
        }

    @property
    def kept_colour(self) -> dict:
        """swscale arguments that keep this stream's YUV values (a bit depth or chroma change only)."""
        matrix, value_range = _SWS_MATRIX[self.color_space], _SWS_RANGE[self.color_range]
        return {"src_colorspace": matrix, "dst_colorspace": matrix, "src_color_range": value_range, "dst_color_range": value_range}

    def mp4_tags(self) -> dict:
        """The colour and aspect an mp4 that keeps the source's pixels must say it has (encoder settings)."""
        sar = self.sample_aspect_ratio if self.rotation in (0, 180) else 1 / self.sample_aspect_ratio
        return {
            "colorspace": _TAG_MATRIX[self.color_space], "color_range": _TAG_RANGE[self.color_range],
            "color_primaries": {"bt601": 6, "bt709": 1, "bt2020": 9}[self.color_primaries],
            "color_trc": {"bt709": 1, "srgb": 13, "smpte2084": 16, "arib-std-b67": 18}[self.color_transfer],
            "sample_aspect_ratio": sar,
        }


def _field_order(context, frame: av.VideoFrame) -> str:
    order = _FIELD_ORDERS.get(int(getattr(context, "field_order", 0) or 0))
    if order is not None:
        return order
    return "tt" if frame.interlaced_frame else "progressive"


class FrameShaper:
    """Turns decoded frames upright and deinterlaced (one filter graph per clip, only where needed).

    ``shape(frame)`` returns the frames to use (a deinterlacer may hold one back; ``flush()``
    returns the rest). Without rotation or deinterlacing frames pass through untouched.
    """

    def __init__(self, display: Display, stream: av.video.stream.VideoStream, deinterlace: bool):
        filters = []
        if deinterlace:
            filters.append(("bwdif", "mode=send_frame:parity=auto:deint=all"))
        filters += {90: [("transpose", "cclock")], 180: [("hflip", ""), ("vflip", "")], 270: [("transpose", "clock")]}.get(
            display.rotation, [])
        self._graph = None
        self._stream = stream
        self._filters = filters

    @property
    def active(self) -> bool:
        return bool(self._filters)

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format,
            time_base=frame.time_base or self._stream.time_base,
        )
        previous = source
        for name, args in self._filters:
            node = graph.add(name, args) if args else graph.add(name)
            previous.link_to(node)
            previous = node
        sink = graph.add("buffersink")
        previous.link_to(sink)
        graph.configure()
        self._graph = graph

    def shape(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        if not self._filters:
            return [frame]
        if self._graph is None:
            self._build(frame)
        self._graph.push(frame)
        return self._pull()

    def flush(self) -> list[av.VideoFrame]:
        if self._graph is None:
            return []
        self._graph.push(None)
        return self._pull()

    def _pull(self) -> list[av.VideoFrame]:
        frames = []
        while True:
            try:
                frames.append(self._graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return frames


# HDR to SDR, for the model's frames and previews: BT.2100 (PQ or HLG) to BT.709 with a Hable-style curve.
_BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]], dtype=np.float32)
_SDR_WHITE_NITS = 203.0  # BT.2408's reference white


def _pq_to_nits(signal: np.ndarray) -> np.ndarray:
    m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
    power = np.power(np.clip(signal, 0, 1), 1 / m2)
    return 10000.0 * np.power(np.maximum(power - c1, 0) / (c2 - c3 * power), 1 / m1)


def _hlg_to_nits(signal: np.ndarray) -> np.ndarray:
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    linear = np.where(signal <= 0.5, signal**2 / 3, (np.exp((signal - c) / a) + b) / 12)
    return 1000.0 * linear


def _hable(x: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return ((x * (a * x + c * b) + d * e) / (x * (a * x + b) + d * f)) - e / f


def tone_map_to_sdr(frame: av.VideoFrame, width: int, height: int, display: Display, interpolation: str) -> av.VideoFrame:
    """An HDR frame resized to ``width`` x ``height`` and mapped to SDR BT.709, as BT.601 limited yuv420p."""
    rgb = frame.reformat(width, height, format="rgb48le", src_colorspace=_SWS_MATRIX[display.color_space],
                         src_color_range=_SWS_RANGE[display.color_range], interpolation=interpolation).to_ndarray()
    signal = rgb.astype(np.float32) / 65535.0
    nits = _pq_to_nits(signal) if display.color_transfer == "smpte2084" else _hlg_to_nits(signal)
    linear = nits / _SDR_WHITE_NITS
    if display.color_primaries == "bt2020":
        linear = np.clip(linear @ _BT2020_TO_BT709.T, 0, None)
    white = 10000.0 / _SDR_WHITE_NITS if display.color_transfer == "smpte2084" else 1000.0 / _SDR_WHITE_NITS
    mapped = _hable(linear * 2.0) / _hable(np.float32(white * 2.0))
    encoded = np.where(mapped < 0.018, 4.5 * mapped, 1.099 * np.power(np.clip(mapped, 0.018, 1), 0.45) - 0.099)
    sdr = av.VideoFrame.from_ndarray(np.clip(encoded * 255 + 0.5, 0, 255).astype(np.uint8), format="rgb24")
    return sdr.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG)
