"""In-memory encoders: H.264 mp4 for clips and windows, animated WebP previews."""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterable, Sequence
from fractions import Fraction

import av
from av.video.reformatter import VideoReformatter

from daskcap.video.display import Display

MP4_CODEC = "libx264"
# libx264 presets, fastest first. "superfast" is the default: on this project's
# benchmark inputs it encodes 1.4-1.8x faster than "veryfast" for files
# 1.4-2x larger at the same quality target (crf); see benchmarks/README.md.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
MP4_PRESET = "superfast"
MP4_CRF = 23
MP4_OPTIONS = {"crf": str(MP4_CRF), "preset": MP4_PRESET}


def even_size(width: int, height: int) -> tuple[int, int]:
    """yuv420p needs even sides: the even size just below (at least 2); frames are scaled to it."""
    return max(2, width - width % 2), max(2, height - height % 2)


class Mp4Writer:
    """One H.264 encode of a clip, in memory, cut into window mp4s without re-encoding.

    A key frame (IDR) is forced at every cut; x264 closes its groups of pictures
    there, so the packets of each piece are contiguous in decode order and make a
    playable mp4 with the encoder's own headers. ``whole`` also muxes every
    packet into one mp4 of the clip: every frame is encoded once, however many
    files it ends up in. ``finish()`` returns the clip's bytes (or None) and the
    pieces' bytes.
    """

    def __init__(
        self,
        width: int,
        height: int,
        rate: Fraction,
        cuts: Sequence[int] = (0,),
        *,
        whole: bool = True,
        pieces: bool = False,
        options: dict[str, str] | None = None,
        codec: str = MP4_CODEC,
        display: Display | None = None,
        timestamps: bool = False,
    ):
        if not cuts or cuts[0] != 0 or list(cuts) != sorted(set(cuts)):
            raise ValueError(f"cuts must start at 0 and increase, got {list(cuts)}")
        self._rate = rate
        self._cuts = list(cuts)
        self._width, self._height = even_size(width, height)
        self._codec = codec
        if codec == MP4_CODEC:
            self._options = {**MP4_OPTIONS, **(options or {}), "forced-idr": "1"}
            if "b" in (options or {}):
                self._options.pop("crf")  # a bit rate, not a quality target
        else:  # the clip encoders of ClipTranscodingStage (one piece: no cut needs an IDR)
            self._options = dict(options or {})
        self._stream: av.video.stream.VideoStream | None = None
        self._whole = _Mp4Buffer() if whole else None
        self._want_pieces = pieces
        self._piece: _Mp4Buffer | None = None
        self._piece_index = -1
        self._pieces: list[bytes] = []
        self._count = 0
        self._closed = False
        self._reformatter = VideoReformatter()  # keeps its scaler between frames
        # The source's pixel values and what they mean (matrix, range, primaries, transfer, pixel aspect).
        self._tags = display.mp4_tags() if display is not None else {}
        self._keep = display.kept_colour if display is not None else {}
        # A variable-rate source keeps each frame's own time (from the clip's first); else frame n is at n / rate.
        self._timestamps = timestamps
        self._first_pts: int | None = None
        self._time_base: Fraction | None = None
        self._pts_of: list[int] = []  # with timestamps: each frame's pts in the encoder's time base
        self._position_of: dict[int, int] = {}  # and each pts's frame
        # The encoder's stream lives in the clip's container, or in one that is never written.
        self._encoder_home = self._whole or _Mp4Buffer()

    def add(self, frame: av.VideoFrame) -> None:
        if self._stream is None:
            self._stream = self._encoder_home.container.add_stream(self._codec, rate=self._rate)
            if self._timestamps and frame.pts is not None and frame.time_base:
                self._time_base, self._first_pts = frame.time_base, frame.pts
                self._stream.codec_context.time_base = self._time_base
            else:
                self._timestamps = False
            self._stream.width, self._stream.height = self._width, self._height
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = dict(self._options)
            for name, value in self._tags.items():
                setattr(self._stream.codec_context, name, value)
        # A no-op when the frame is already yuv420p at this size (the same object comes back).
        image = self._reformatter.reformat(frame, self._width, self._height, format="yuv420p", **self._keep)
        saved = image.pts, image.time_base, image.pict_type
        if self._timestamps:
            pts = frame.pts - self._first_pts if frame.pts is not None else None
            if pts is None or (self._pts_of and pts <= self._pts_of[-1]):
                pts = self._pts_of[-1] + 1 if self._pts_of else 0  # a missing or repeated stamp: just after the last
            image.pts, image.time_base = pts, self._time_base
            self._pts_of.append(pts)
            self._position_of[pts] = self._count
        else:
            image.pts, image.time_base = self._count, Fraction(1) / self._rate
        image.pict_type = _frame_type(frame.pict_type, cut=self._count in self._cuts)
        self._count += 1
        try:
            self._route(self._stream.encode(image))
        finally:
            image.pts, image.time_base, image.pict_type = saved  # the caller's frame, unchanged

    def _route(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if self._want_pieces:
                index = bisect.bisect_right(self._cuts, self._frame_of(packet.pts)) - 1
                if index != self._piece_index:
                    if index < self._piece_index:
                        raise ValueError("the encoder reordered frames across a window cut")
                    self._close_piece()
                    # Starting the encoder's container fills its stream's codec
                    # parameters (the x264 headers) that the piece's stream copies.
                    self._encoder_home.container.start_encoding()
                    self._piece = _Mp4Buffer()
                    self._piece.stream = self._piece.container.add_stream_from_template(self._stream)
                    self._piece_index = index
                shift = self._cut_shift(index, packet.time_base)
                self._piece.container.mux(_shifted_copy(packet, shift, self._piece.stream))
            if self._whole is not None:
                self._whole.container.mux(packet)

    def _frame_of(self, pts: int) -> int:
        if self._timestamps:
            return self._position_of[pts]
        return round(pts * self._stream.codec_context.time_base * self._rate)

    def _cut_shift(self, piece: int, time_base: Fraction) -> int:
        """Ticks of ``time_base`` before the first frame of ``piece``: a window's mp4 starts at 0."""
        if self._timestamps:
            return round(self._pts_of[self._cuts[piece]] * self._time_base / time_base)
        return round(Fraction(self._cuts[piece]) / self._rate / time_base)

    def _close_piece(self) -> None:
        if self._piece is not None:
            self._pieces.append(self._piece.close())
            self._piece = None

    def finish(self) -> tuple[bytes | None, list[bytes]]:
        if self._stream is None:
            raise ValueError("no frames to encode")
        self._route(self._stream.encode(None))
        self._close_piece()
        self._closed = True
        whole = self._whole.close() if self._whole is not None else None
        if self._whole is None:
            self._encoder_home.abort()
        if self._want_pieces and len(self._pieces) != len(self._cuts):
            raise ValueError(f"{len(self._pieces)} window mp4s for {len(self._cuts)} windows (fewer frames than windows?)")
        return whole, self._pieces

    def abort(self) -> None:
        """Release the encoder and muxers of an unfinished encode (no-op once finished)."""
        if self._closed:
            return
        self._closed = True
        for buffer in (self._piece, self._whole, self._encoder_home):
            if buffer is not None:
                buffer.abort()


class StreamCopy:
    """A source's video packets, unchanged, in a new mp4: the clip without re-encoding.

    Only a stream that ``accepts`` (H.264 in 4:2:0, what daskcap writes) is
    ever copied, and nothing is opened before its first packet. Feed it every
    packet of the stream from the start (``add``); it gives up (``usable``
    false) on packets that are not plain frames to show (no timestamps, or
    marked to be discarded by an edit list), and on any error of the muxer:
    a copy is only ever a shortcut, so the caller then encodes instead.
    """

    def __init__(self) -> None:
        self._out: _Mp4Buffer | None = None
        self._origin = 0
        self.usable = True

    @staticmethod
    def accepts(stream: av.video.stream.VideoStream) -> bool:
        """Whether the stream's packets may go into an mp4 as they are (decided before any is read)."""
        context = stream.codec_context
        return context.name == "h264" and context.format is not None and context.format.name == "yuv420p"

    def add(self, packet: av.Packet) -> None:
        if not self.usable or not packet.size:
            return
        if packet.pts is None or packet.dts is None or packet.is_discard or packet.is_corrupt:
            self.stop()
            return
        try:
            if self._out is None:
                if not self.accepts(packet.stream):
                    self.stop()
                    return
                self._out = _Mp4Buffer()
                self._out.stream = self._out.container.add_stream_from_template(packet.stream)
                self._origin = packet.stream.start_time or 0
            self._out.container.mux(_shifted_copy(packet, self._origin, self._out.stream))
        except (av.error.FFmpegError, ValueError):
            self.stop()

    def stop(self) -> None:
        """Stop copying (the copy will not be used)."""
        self.usable = False
        if self._out is not None:
            self._out.abort()
            self._out = None

    def finish(self) -> bytes | None:
        if not self.usable or self._out is None:
            return None
        try:
            data = self._out.close()
        except (av.error.FFmpegError, ValueError):
            data = None
        self._out = None
        return data


def _shifted_copy(packet: av.Packet, shift: int, stream: av.video.stream.VideoStream) -> av.Packet:
    """A copy of ``packet`` for ``stream``, ``shift`` ticks earlier (muxing consumes a packet)."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts = packet.pts - shift, packet.dts - shift
    copy.time_base, copy.is_keyframe, copy.stream = packet.time_base, packet.is_keyframe, stream
    return copy


_INTER = (av.video.frame.PictureType.P, av.video.frame.PictureType.B)


def _frame_type(source: av.video.frame.PictureType, cut: bool) -> av.video.frame.PictureType:
    """The frame type x264 is told: a key frame at a cut, else the source's P or B.

    Following the source's P/B decisions spares x264 its own frame-type
    analysis (20-25% of the encode at superfast, measured); its key frames are
    left to x264 (an intra-only source would otherwise make every frame one).
    """
    if cut:
        return av.video.frame.PictureType.I
    return source if source in _INTER else av.video.frame.PictureType.NONE


class _Mp4Buffer:
    """An mp4 container writing into memory."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self.container = av.open(self._buffer, "w", format="mp4")
        self.stream: av.video.stream.VideoStream | None = None

    def close(self) -> bytes:
        self.container.close()
        return self._buffer.getvalue()

    def abort(self) -> None:
        try:
            self.container.close()
        except (av.error.FFmpegError, ValueError):
            pass


def encode_webp(
    frames: Iterable[av.VideoFrame],
    width: int,
    height: int,
    fps: float,
    quality: int,
    compression_level: int,
) -> bytes:
    """An animated WebP that loops forever, one image per frame at ``fps``."""
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1000)
    # loop is a container (muxer) option; as a stream option it is ignored.
    with av.open(buffer, "w", format="webp", options={"loop": "0"}) as container:
        stream = container.add_stream("libwebp", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"quality": str(quality), "compression_level": str(compression_level)}
        count = 0
        for frame in frames:
            image = frame.reformat(width, height, format="yuv420p")
            image.pts = count
            image.time_base = Fraction(1) / rate
            count += 1
            container.mux(stream.encode(image))
        if count == 0:
            raise ValueError("no frames to encode")
        container.mux(stream.encode(None))
    return buffer.getvalue()
