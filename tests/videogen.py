"""Test videos made with PyAV: every frame stamped with its index.

A frame's index is drawn as ``STAMP_BITS`` vertical stripes (white = 1, most
significant bit on the left), wide enough to survive lossy coding and the
resize to the model grid, so a test can read back which source frames a
window or a sample got.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

STAMP_BITS = 11  # up to 2047 frames


def pack_rgb_frames(frames: np.ndarray) -> bytes:
    """(T, H, W, 3) RGB frames as the ``sampled_frames`` column holds them (yuv420p planes,
    packed by ``schema.pack_frames``): model input for window rows a test builds."""
    from daskcap import schema

    planes = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p").to_ndarray() for f in frames]
    return schema.pack_frames(np.stack(planes))


def stamped_frame(index: int, width: int, height: int) -> np.ndarray:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, :, 2] = 60  # a blue tint, so frames are not pure black
    for bit in range(STAMP_BITS):
        if index >> (STAMP_BITS - 1 - bit) & 1:
            x0 = bit * width // STAMP_BITS
            x1 = (bit + 1) * width // STAMP_BITS
            image[:, x0:x1, :] = 255
    return image


def read_stamp(image: np.ndarray) -> int:
    """The index stamped on an RGB frame, or on its luma plane alone (any size)."""
    height, width = image.shape[:2]
    luma = image.mean(axis=2) if image.ndim == 3 else image
    value = 0
    for bit in range(STAMP_BITS):
        x0 = bit * width // STAMP_BITS
        x1 = (bit + 1) * width // STAMP_BITS
        centre = luma[height // 4 : 3 * height // 4, x0 + (x1 - x0) // 4 : x1 - (x1 - x0) // 4]
        value = value << 1 | int(centre.mean() > 128)
    return value


def write_stamped_video(
    path: Path,
    num_frames: int,
    fps: Fraction | int | float = 30,
    width: int = 176,
    height: int = 128,
    codec: str = "libx264",
    container_format: str | None = None,
    pix_fmt: str = "yuv420p",
    preset: str = "ultrafast",
    gop: int = 250,
    *,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    container_options: dict | None = None,
    codec_options: dict | None = None,
    rotation: int | None = None,
    metadata: dict | None = None,
) -> Path:
    """``preset`` other than ultrafast gives B-frames; ``gop`` spaces the keyframes;
    ``codec_options`` go to the encoder last (they win); ``pts`` (in ``time_base``)
    makes variable frame rates; ``rotation`` sets a display matrix."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        if metadata:
            container.metadata.update(metadata)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        options = {"crf": "12", "preset": preset} if codec == "libx264" else {}
        if codec != "rawvideo":
            options["g"] = str(gop)
        stream.options = {**options, **(codec_options or {})}
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(stamped_frame(index, width, height), format="rgb24")
            frame.pts = index if pts is None else pts[index]
            frame.time_base = time_base or 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _open(video_bytes_or_path) -> av.container.InputContainer:
    """An mp4 in memory (bytes) or a video file (path), opened for reading."""
    source = io.BytesIO(video_bytes_or_path) if isinstance(video_bytes_or_path, bytes) else str(video_bytes_or_path)
    return av.open(source)


def decode_stamps(video_bytes_or_path) -> list[int]:
    """Stamps of every frame of an mp4 (bytes) or a video file (path)."""
    with _open(video_bytes_or_path) as container:
        return [read_stamp(_luma(frame)) for frame in container.decode(video=0)]


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma plane; read in place from the yuv420p that daskcap writes (no conversion)."""
    if frame.format.name in ("yuv420p", "yuvj420p"):
        plane = frame.planes[0]
        return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def video_packets(video_bytes_or_path) -> list[bytes]:
    """The video stream's packets, as bytes, of an mp4 (bytes) or a video file (path)."""
    with _open(video_bytes_or_path) as container:
        return [bytes(packet) for packet in container.demux(video=0) if packet.size]


def parse_webp(data: bytes) -> dict:
    """The RIFF chunks of an (animated) WebP: FFmpeg cannot decode animated WebP."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", "not a WebP file"
    info = {"chunks": [], "frames": [], "loop": None, "canvas": None}
    offset = 12
    while offset + 8 <= len(data):
        tag = data[offset : offset + 4]
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        body = data[offset + 8 : offset + 8 + size]
        info["chunks"].append(tag.decode())
        if tag == b"VP8X":
            info["animated"] = bool(body[0] & 0x02)
            info["canvas"] = (int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1)
        elif tag == b"ANIM":
            info["loop"] = int.from_bytes(body[4:6], "little")
        elif tag == b"ANMF":
            info["frames"].append(
                {
                    "width": int.from_bytes(body[6:9], "little") + 1,
                    "height": int.from_bytes(body[9:12], "little") + 1,
                    "duration_ms": int.from_bytes(body[12:15], "little"),
                }
            )
        offset += 8 + size + (size & 1)
    return info


def write_audio_only(path: Path, blocks: int = 16) -> Path:
    """An mp4 with one AAC stream and no video."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(blocks):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
