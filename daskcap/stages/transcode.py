"""ClipTranscodingStage: how clip mp4s are encoded, with NeMo Curator's parameters.

daskcap encodes each clip in the same decode that makes its windows (see
``stages/prepare.py``), so this stage runs no task of its own: it sets how
``clips/<clip_id>.mp4`` is encoded. Without it, clips are H.264 (libx264, a
whole H.264 source packet-copied), as before.

- ``encoder``: ``h264_nvenc`` (NVENC where the worker's FFmpeg and GPU have it,
  else libx264 with one logged warning: the clip is H.264 either way),
  ``libopenh264`` (PyAV's FFmpeg has no OpenH264: libx264, with the same
  warning), ``libvpx-vp9`` (VP9 in the .mp4, as NeMo Curator writes it;
  constant quality 31 unless the input bit rate is kept), ``libx264``.
- ``use_input_bit_rate``: encode at the source video stream's bit rate.
- ``encoder_threads``: the clip encoder's threads.

NeMo's scheduling knobs (``num_cpus_per_worker``, ``encode_batch_size``,
``nb_streams_per_gpu``, ``num_clips_per_chunk``) are accepted and checked;
daskcap sizes its tasks with ``--windows-per-partition`` and its workers at the
cluster level. ``use_hwaccel`` (GPU decoding) is refused: daskcap decodes with
PyAV on the CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

from daskcap.stages._params import Checks

log = logging.getLogger(__name__)

SUPPORTED_ENCODERS = ("h264_nvenc", "libvpx-vp9", "libopenh264", "libx264")
H264_ENCODERS = ("h264_nvenc", "libopenh264", "libx264")
# NeMo Curator's libvpx-vp9 settings: constant quality 31 (bit rate 0), good deadline, speed 4.
VP9_OPTIONS = {"crf": "31", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1", "tile-columns": "2"}
NVENC_OPTIONS = {"rc": "vbr", "cq": "21", "tune": "hq", "spatial-aq": "1", "temporal-aq": "1", "rc-lookahead": "20"}


@dataclass(frozen=True)
class ClipTranscodingStage:
    num_cpus_per_worker: float = 6.0
    encoder: str = "h264_nvenc"
    encoder_threads: int = 1
    encode_batch_size: int = 16
    nb_streams_per_gpu: int = 3
    use_hwaccel: bool = False
    use_input_bit_rate: bool = False
    num_clips_per_chunk: int = 32
    ffmpeg_verbose: bool = False
    verbose: bool = False

    def __post_init__(self) -> None:
        checks = Checks("ClipTranscodingStage")
        checks.choice("encoder", self.encoder, SUPPORTED_ENCODERS)
        checks.number("encoder_threads", self.encoder_threads, 0, integer=True)
        checks.number("num_cpus_per_worker", self.num_cpus_per_worker, above=0)
        checks.number("encode_batch_size", self.encode_batch_size, 1, integer=True)
        checks.number("nb_streams_per_gpu", self.nb_streams_per_gpu, integer=True)
        checks.number("num_clips_per_chunk", self.num_clips_per_chunk, 1, integer=True)
        if self.use_hwaccel:
            checks.fail("use_hwaccel=True is not supported: daskcap decodes with PyAV on the CPU; leave it False")
        checks.done()


@cache
def _opens(codec: str) -> bool:
    """Whether this process's FFmpeg has ``codec`` and can open it (NVENC needs a GPU that has it)."""
    import av

    if codec not in av.codecs_available:
        return False
    try:
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
        return True
    except (av.error.FFmpegError, ValueError):
        return False


@cache
def clip_codec(encoder: str) -> str:
    """The encoder this worker really uses for ``encoder`` (one warning per process when it differs)."""
    if encoder in ("libx264", "libvpx-vp9") or _opens(encoder):
        return encoder
    log.warning("clip encoder %s is not available on this worker (PyAV's FFmpeg or no NVENC GPU): encoding H.264 with libx264", encoder)
    return "libx264"


def clip_options(codec: str, threads: int, bit_rate: int | None) -> dict[str, str]:
    """Encoder options of a clip mp4 (libx264's preset and quality come from CaptionPreparationStage)."""
    options = {"libvpx-vp9": dict(VP9_OPTIONS), "h264_nvenc": dict(NVENC_OPTIONS)}.get(codec, {})
    if threads:
        options["threads"] = str(threads)
    if bit_rate:
        options["b"] = str(bit_rate)
        options.pop("crf", None)
        if codec == "h264_nvenc":
            options.pop("cq", None)
    return options
