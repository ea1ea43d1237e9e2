"""Every command-line flag, declared once: its help, the stage fields it sets, and its
default, taken from those fields' dataclass defaults. ``daskcap run`` and
``jobs/split_clip_caption.py`` (NeMo Curator's flags) both build their parsers
from ``FLAGS``, and their pipelines with ``build_pipeline``.

Where the NeMo job's default differs on purpose, the flag's ``nemo`` says so once,
with the reason (``NEMO`` lists them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from daskcap.video.display import DEINTERLACE_MODES
from daskcap.engines.base import BACKENDS
from daskcap.engines.weights import DEFAULT_CAPTION_MODELS, DEFAULT_ENHANCE_MODELS
from daskcap.pipeline import Pipeline
from daskcap.prompts import CAPTION_PROMPTS, ENHANCE_PROMPTS
from daskcap.run.job import ClusterOptions
from daskcap.stages._params import ParamError
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage
from daskcap.stages.check import CaptionCheckStage
from daskcap.stages.clip import FixedStrideClipStage
from daskcap.stages.prepare import PREPROCESS_DTYPES, CaptionPreparationStage
from daskcap.stages.preview import PreviewStage
from daskcap.stages.read import VIDEO_EXTENSIONS, VideoReaderStage
from daskcap.stages.write import ClipWriterStage
from daskcap.storage import path_problems
from daskcap.video.encode import X264_PRESETS

_FROM_FIELD = object()  # the default is the first target field's


@dataclass(frozen=True)
class NemoDefault:
    value: Any
    why: str


@dataclass(frozen=True)
class Flag:
    """``--name``: sets each ``(stage class, field)`` of ``to``. ``switch``: a
    ``--name/--no-name`` pair; ``run_only``: not in the NeMo job."""

    name: str
    help: str
    to: tuple[tuple[type, str], ...] = ()
    default: Any = _FROM_FIELD
    type: Any = None
    choices: Any = None
    switch: bool = False
    group: str = ""
    nemo: NemoDefault | None = None
    run_only: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    def value(self, nemo: bool = False) -> Any:
        if nemo and self.nemo is not None:
            return self.nemo.value
        if self.default is not _FROM_FIELD:
            return self.default
        cls, name = self.to[0]
        field = {f.name: f for f in dataclasses.fields(cls)}[name]
        return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def json_object(text: str) -> dict:
    """An argparse type: a JSON object (``--vllm-kwargs '{"enforce_eager": true}'``)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object of vllm.LLM arguments, got {text}")
    return value


_PREP, _CAP, _ENH, _CHK = CaptionPreparationStage, CaptionGenerationStage, CaptionEnhancementStage, CaptionCheckStage
_MODELS = ((_CAP, "model_dir"), (_ENH, "model_dir"))
_NEMO_NAME = "NeMo Curator's script default; it also names the `<algorithm>_caption` keys of metas/v0"

FLAGS: tuple[Flag, ...] = (
    # input and clipping
    Flag("video-limit", "read at most this many videos (a directory's in sorted path order, a Parquet list's in its order); -1 reads all", ((VideoReaderStage, "video_limit"),), type=int, group="input and clipping"),
    Flag("fixed-stride-split-duration", "clip length and stride, in seconds", ((FixedStrideClipStage, "clip_len_s"),), type=float, group="input and clipping"),
    Flag("fixed-stride-min-clip-length-s", "drop tail clips shorter than this, in seconds", ((FixedStrideClipStage, "min_clip_length_s"),), type=float, group="input and clipping"),
    Flag("limit-clips", "keep at most this many clips per video; 0 keeps all", ((FixedStrideClipStage, "limit_clips"),), type=int, group="input and clipping"),
    Flag("video-extensions", "file name endings a directory is searched for (case-insensitive; space- or comma-separated); a single file, a glob or a Parquet list takes any name", ((VideoReaderStage, "video_extensions"),), default=" ".join(VIDEO_EXTENSIONS), group="input and clipping"),
    Flag("max-frame-pixels", "refuse videos whose frames hold more pixels than this (status read_failed, found when probed, before a frame is decoded); the default admits 8K", ((VideoReaderStage, "max_frame_pixels"),), type=int, group="input and clipping"),
    Flag("video-timeout-s", "give up on a video's probe, or on one of its clips, after this many seconds (status timed_out)", ((VideoReaderStage, "timeout_s"), (_PREP, "timeout_s")), type=float, group="input and clipping"),
    # caption windows
    Flag("captioning-window-size", "frames per caption window, at the clip's own frame rate", ((_PREP, "window_size"),), type=int, group="caption windows (CaptionPreparationStage)"),
    Flag("captioning-remainder-threshold", "a leftover of at least this many frames becomes its own window; a smaller one joins the last window", ((_PREP, "remainder_threshold"),), type=int, group="caption windows (CaptionPreparationStage)"),
    Flag("captioning-sampling-fps", "frames per second sampled for the model", ((_PREP, "sampling_fps"),), type=float, group="caption windows (CaptionPreparationStage)"),
    Flag("captioning-prompt-variant", "caption prompt", ((_PREP, "prompt_variant"),), choices=sorted(CAPTION_PROMPTS), group="caption windows (CaptionPreparationStage)"),
    Flag("captioning-prompt-text", "custom caption prompt (overrides the variant)", ((_PREP, "prompt_text"),), group="caption windows (CaptionPreparationStage)"),
    Flag("captioning-preprocess-dtype", "dtype the engine builds pixel values in", ((_PREP, "preprocess_dtype"),), choices=PREPROCESS_DTYPES,
         group="caption windows (CaptionPreparationStage)", nemo=NemoDefault("float16", "NeMo Curator's script default; daskcap run keeps float32, bit-exact with transformers' processor")),
    Flag("captioning-model-does-preprocess", "keep sampled frames at source size; the model's processor resizes them", ((_PREP, "model_does_preprocess"), (_CAP, "model_does_preprocess")), default=False, switch=True, group="caption windows (CaptionPreparationStage)"),
    Flag("mp4-preset", "libx264 preset of clip and window mp4s: faster presets make bigger files", ((_PREP, "mp4_preset"),), choices=X264_PRESETS, group="caption windows (CaptionPreparationStage)"),
    Flag("mp4-crf", "libx264 quality target of clip and window mp4s (0 lossless .. 51 worst)", ((_PREP, "mp4_crf"),), type=int, group="caption windows (CaptionPreparationStage)"),
    Flag("deinterlace", "deinterlace field-coded sources (FFmpeg's bwdif) for model input, previews and mp4s: auto when the stream says it is interlaced", ((_PREP, "deinterlace"),), choices=DEINTERLACE_MODES, group="caption windows (CaptionPreparationStage)"),
    # captions
    Flag("generate-captions", "caption every window with a vision-language model", default=False, switch=True, group="captions (CaptionGenerationStage)"),
    Flag("model-dir", "folder of <org>/<name> model weights; missing hub models are downloaded here once per node", _MODELS, default="models", group="captions (CaptionGenerationStage)"),
    Flag("captioning-algorithm", "caption model family: qwen or qwen2.5 (Qwen2.5-VL; NeMo Curator's old and new names) or qwen3 (Qwen3-VL, vLLM only)", ((_CAP, "model_variant"), (_PREP, "model_variant")),
         choices=sorted(DEFAULT_CAPTION_MODELS), group="captions (CaptionGenerationStage)", nemo=NemoDefault("qwen2.5", _NEMO_NAME)),
    Flag("captioning-model", "HF id or local path of the caption model (default: the algorithm's, e.g. Qwen/Qwen2.5-VL-7B-Instruct); implies --generate-captions", ((_CAP, "model"),), group="captions (CaptionGenerationStage)"),
    Flag("captioning-batch-size", "windows per forward pass of the transformers engine (vLLM batches everything queued)", ((_CAP, "caption_batch_size"),), type=int, group="captions (CaptionGenerationStage)",
         nemo=NemoDefault(8, "NeMo Curator's script default; it changes no output byte")),
    Flag("captioning-use-fp8-weights", "fp8 weights (vLLM engine only)", ((_CAP, "fp8"),), default=False, switch=True, group="captions (CaptionGenerationStage)"),
    Flag("captioning-max-output-tokens", "caption length limit, in tokens; a cut caption is marked finish_reason=length", ((_CAP, "max_output_tokens"),), type=int, group="captions (CaptionGenerationStage)"),
    Flag("captioning-use-vllm-mmcache", "keep vLLM's multimodal processor cache (off unless given, as in the reference's scripts)", default=False, switch=True, group="captions (CaptionGenerationStage)"),
    Flag("captioning-stage2-caption", "refine each caption in a second pass over the same frames", ((_CAP, "generate_stage2_caption"),), default=False, switch=True, group="captions (CaptionGenerationStage)"),
    Flag("captioning-stage2-prompt-text", "custom stage-2 prompt (the stage-1 caption is appended)", ((_CAP, "stage2_prompt_text"),), group="captions (CaptionGenerationStage)"),
    # enhanced captions
    Flag("enhance-captions", "rewrite each caption with a text LLM", default=False, switch=True, group="enhanced captions (CaptionEnhancementStage)"),
    Flag("enhance-captions-algorithm", "enhancement model family: qwen or qwen2.5 (Qwen2.5-14B) or qwen3 (Qwen3-14B)", ((_ENH, "model_variant"),), choices=sorted(DEFAULT_ENHANCE_MODELS),
         group="enhanced captions (CaptionEnhancementStage)", nemo=NemoDefault("qwen2.5", "NeMo Curator's script default")),
    Flag("enhance-captions-model", "HF id or local path of the text model (default: Qwen/Qwen2.5-14B-Instruct)", ((_ENH, "model"),), group="enhanced captions (CaptionEnhancementStage)"),
    Flag("enhance-captions-batch-size", "captions per forward pass of the transformers engine", ((_ENH, "model_batch_size"),), type=int, group="enhanced captions (CaptionEnhancementStage)"),
    Flag("enhance-captions-use-fp8-weights", "fp8 weights (vLLM engine only)", ((_ENH, "fp8"),), default=False, switch=True, group="enhanced captions (CaptionEnhancementStage)"),
    Flag("enhance-captions-max-output-tokens", "enhanced caption length limit, in tokens", ((_ENH, "max_output_tokens"),), type=int, group="enhanced captions (CaptionEnhancementStage)"),
    Flag("enhance-captioning-prompt-variant", "enhancement prompt", ((_ENH, "prompt_variant"),), choices=sorted(ENHANCE_PROMPTS), group="enhanced captions (CaptionEnhancementStage)"),
    Flag("enhance-captions-prompt-text", "custom enhancement prompt (the caption is appended)", ((_ENH, "prompt_text"),), group="enhanced captions (CaptionEnhancementStage)"),
    # caption checks (also `daskcap check`)
    Flag("caption-checks", "flag empty, truncated, repetitive, refused, duplicate, too short, non-English and invalid captions", default=True, switch=True, group="caption checks"),
    Flag("check-repetition-ngram", "repetitive: word n-grams of this length that occur more than once ...", ((_CHK, "repetition_ngram"),), type=int, group="caption checks"),
    Flag("check-repetition-share", "... cover at least this share of the words", ((_CHK, "repetition_share"),), type=float, group="caption checks"),
    Flag("check-min-words", "too_short: fewer words than this ...", ((_CHK, "min_words"),), type=int, group="caption checks"),
    Flag("check-short-ratio", "... or than this times the median of the clip's other windows", ((_CHK, "short_ratio"),), type=float, group="caption checks"),
    Flag("check-duplicate-similarity", "duplicate: two windows of a clip whose word pairs overlap this much (Jaccard; 1 = identical only)", ((_CHK, "duplicate_similarity"),), type=float, group="caption checks"),
    Flag("check-language", "not_english: flag text in another language (skipped when the prompt asks for one)", ((_CHK, "check_language"),), switch=True, group="caption checks"),
    # engines
    Flag("engine", "auto: vLLM when importable and a CUDA device is visible, else transformers", ((_CAP, "engine"), (_ENH, "engine")), choices=BACKENDS, group="engines"),
    Flag("engine-workers", "engine workers of the embedded cluster (default: one per GPU, else 1)", ((ClusterOptions, "engine_workers"),), type=int, group="engines"),
    # endpoints (engines/endpoint.py): a stage given one sends its requests there instead of to an in-process engine
    Flag("captioning-endpoint", "OpenAI-compatible base URL (e.g. http://host:8000/v1) the captions are asked of; implies --generate-captions. --captioning-model names the served model (default: the one the server lists)", ((_CAP, "endpoint"),), group="endpoints"),
    Flag("enhance-captions-endpoint", "OpenAI-compatible base URL the enhancements are asked of; implies --enhance-captions. --enhance-captions-model names the served model (default: the one the server lists)", ((_ENH, "endpoint"),), group="endpoints"),
    Flag("endpoint-api-key-env", "NAME of the environment variable holding the endpoints' API key (read on the workers; never the key itself)", ((_CAP, "endpoint_api_key_env"), (_ENH, "endpoint_api_key_env")), group="endpoints"),
    Flag("endpoint-video", "how a window is sent: mp4 (its mp4 as a base64 video_url, as vLLM's Qwen-VL serving takes it) or frames (its sampled frames as PNG images, for any vision chat API)", ((_CAP, "endpoint_video"),), choices=("mp4", "frames"), group="endpoints"),
    Flag("endpoint-max-concurrency", "requests in flight to each endpoint for the whole job (shared by the request workers)", ((_CAP, "endpoint_max_concurrency"), (_ENH, "endpoint_max_concurrency")), type=int, group="endpoints"),
    Flag("endpoint-timeout-s", "seconds to wait for one answer", ((_CAP, "endpoint_timeout_s"), (_ENH, "endpoint_timeout_s")), type=float, group="endpoints"),
    Flag("endpoint-max-retries", "retries of a request answered with 429, 5xx or a timeout before its window fails (a server that is not there is waited for, up to --endpoint-breaker-s)", ((_CAP, "endpoint_max_retries"), (_ENH, "endpoint_max_retries")), type=int, group="endpoints"),
    Flag("endpoint-breaker-s", "stop the job when a worker's requests have had no success for this many seconds (a rerun resumes)", ((_CAP, "endpoint_breaker_s"), (_ENH, "endpoint_breaker_s")), type=float, group="endpoints"),
    Flag("vllm-kwargs", "JSON object of vllm.LLM arguments for both model stages, over daskcap's own (e.g. '{\"enforce_eager\": true}')", default=None, type=json_object, group="engines"),
    # previews
    Flag("generate-previews", "make an animated WebP preview per window", ((_PREP, "generate_previews"), (ClipWriterStage, "generate_previews")), switch=True, group="previews (PreviewStage)",
         nemo=NemoDefault(False, "NeMo Curator's script makes previews only when asked (--generate-previews)")),
    Flag("preview-target-fps", "preview frame rate", ((PreviewStage, "target_fps"),), type=float, group="previews (PreviewStage)"),
    Flag("preview-target-height", "preview height in pixels (even); width keeps the aspect ratio", ((PreviewStage, "target_height"),), type=int, group="previews (PreviewStage)"),
    Flag("preview-quality", "WebP quality, 0-100", ((PreviewStage, "quality"),), type=int, group="previews (PreviewStage)"),
    Flag("preview-compression-level", "WebP compression effort, 0 (fast) - 6 (small)", ((PreviewStage, "compression_level"),), type=int, group="previews (PreviewStage)"),
    # output
    Flag("upload-clips", "write each clip's mp4 to OUTPUT/clips/", ((ClipWriterStage, "upload_clips"),), switch=True, group="output"),
    Flag("write-model-input", "keep the sampled frames (model input) in the window table; large", ((ClipWriterStage, "write_model_input"),), switch=True, group="output"),
    Flag("write-metas", "also write NeMo Curator's JSON: metas/v0/<clip_id>.json, processed_videos/, processed_clip_chunks/", ((ClipWriterStage, "write_metas"),), switch=True, group="output"),
    Flag("overwrite", "start over: replace an existing output (by default a rerun with the same settings resumes it)", default=False, switch=True, group="output"),
    Flag("retry-failed", "rerun into an earlier output, reprocessing only the videos and windows that failed", default=False, switch=True, group="output"),
    Flag("dry-run", "process everything, write nothing", ((ClipWriterStage, "dry_run"),), switch=True, group="output"),
    Flag("report", "write OUTPUT/report/index.html, a page to review previews and captions", default=True, switch=True, group="output", run_only=True),
    # cluster
    Flag("scheduler", "address of an existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, else an embedded cluster)", default=os.environ.get("DASK_SCHEDULER_ADDRESS"), group="cluster"),
    Flag("tls-ca-file", "CA certificate of a TLS cluster (--scheduler tls://...; cluster/local.sh --tls writes DIR/tls/ca.pem)", ((ClusterOptions, "tls_ca_file"),), group="cluster"),
    Flag("tls-cert", "this client's certificate for a TLS cluster", ((ClusterOptions, "tls_cert"),), group="cluster"),
    Flag("tls-key", "this client's private key for a TLS cluster", ((ClusterOptions, "tls_key"),), group="cluster"),
    Flag("n-workers", "worker processes of the embedded cluster (default: one per core)", ((ClusterOptions, "n_workers"),), type=int, group="cluster"),
    Flag("listen-host", "address the embedded cluster's scheduler and workers listen on; anything but loopback lets whoever reaches it run code here (a warning says so)", ((ClusterOptions, "listen_host"),), group="cluster"),
    Flag("dashboard-address", "HOST:PORT of the embedded cluster's dashboard (default: LISTEN_HOST, any port)", ((ClusterOptions, "dashboard_address"),), group="cluster"),
    Flag("windows-per-partition", "caption windows per task; bounds memory per task", ((ClusterOptions, "windows_per_partition"),), type=int, group="cluster"),
    Flag("videos-per-shard", "videos probed and planned together; the client keeps only each shard's counts (a resume keeps the first run's shards)", ((ClusterOptions, "videos_per_shard"),), type=int, group="cluster"),
    # display
    Flag("verbose", "log per-video and per-clip details", default=False, switch=True, group="display"),
    Flag("quiet", "no progress bars", default=False, switch=True, group="display"),
)

NEMO = {flag.name: flag.nemo for flag in FLAGS if flag.nemo is not None}  # the NeMo job's own defaults, and why
CHECK_FLAGS = tuple(flag for flag in FLAGS if flag.group == "caption checks" and flag.name != "caption-checks")  # also `daskcap check`


def add_flags(parser: argparse.ArgumentParser, flags: tuple[Flag, ...] = FLAGS, *, nemo: bool = False) -> None:
    """Add ``flags`` to ``parser`` in their groups (the NeMo job: its defaults, no run-only flags)."""
    groups: dict[str, Any] = {}
    for flag in flags:
        if nemo and flag.run_only:
            continue
        group = groups.get(flag.group) or groups.setdefault(flag.group, parser.add_argument_group(flag.group))
        options: dict[str, Any] = {"default": flag.value(nemo), "help": flag.help, "dest": flag.dest}
        if flag.switch:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update({k: v for k, v in (("type", flag.type), ("choices", flag.choices)) if v is not None})
        group.add_argument(f"--{flag.name}", **options)


def stage_args(args: argparse.Namespace, cls: type) -> dict:
    """The keyword arguments of stage ``cls`` that the flags set."""
    return {field: getattr(args, flag.dest) for flag in FLAGS for target, field in flag.to if target is cls and hasattr(args, flag.dest)}


def wants_captions(args: argparse.Namespace) -> bool:
    return bool(args.generate_captions or args.captioning_model or args.captioning_endpoint or wants_enhancement(args))


def wants_enhancement(args: argparse.Namespace) -> bool:
    return bool(args.enhance_captions or args.enhance_captions_endpoint)


def build_pipeline(args: argparse.Namespace, *, name: str = "daskcap-run", transcode=None, caption_models=None, enhanced_caption_models=None) -> Pipeline:
    """Parsed flags (``args.input``, ``args.output`` and ``FLAGS``) as a pipeline; raise
    ParamError with every bad flag. The NeMo job adds its transcode stage and metas keys."""
    problems: list[str] = []

    def make(factory, **kwargs):
        try:
            return factory(**kwargs)
        except ParamError as exc:
            problems.extend(exc.problems)
            return None

    options = stage_args(args, ClusterOptions)
    pipeline = make(Pipeline, name=name, scheduler=args.scheduler, overwrite=args.overwrite, retry_failed=args.retry_failed,
                    progress=not args.quiet, caption_checks=args.caption_checks, **options) or Pipeline(name=name)
    for what in ("input", "output"):
        if not getattr(args, what):
            problems.append(f"{what.upper()} is required (as an argument or as `{what}` in --config)")
    if args.input and args.output:
        problems += path_problems(args.input, args.output)
    verbose = {"verbose": args.verbose}
    captions = wants_captions(args)
    stages = [
        make(VideoReaderStage, input_video_path=args.input, **verbose, **stage_args(args, VideoReaderStage)),
        make(FixedStrideClipStage, **stage_args(args, FixedStrideClipStage)),
        transcode,
        make(CaptionPreparationStage, **verbose, **stage_args(args, CaptionPreparationStage)),
        make(PreviewStage, **verbose, **stage_args(args, PreviewStage)) if args.generate_previews else None,
    ]
    vllm = {"vllm_kwargs": args.vllm_kwargs or {}, **verbose}
    if captions:
        stages.append(make(CaptionGenerationStage, disable_mmcache=not args.captioning_use_vllm_mmcache, **vllm, **stage_args(args, CaptionGenerationStage)))
    if wants_enhancement(args):
        stages.append(make(CaptionEnhancementStage, **vllm, **stage_args(args, CaptionEnhancementStage)))
    if captions and args.caption_checks:
        stages.append(make(CaptionCheckStage, **stage_args(args, CaptionCheckStage)))
    names = {"caption_models": caption_models, "enhanced_caption_models": enhanced_caption_models}
    stages.append(make(ClipWriterStage, output_path=args.output, input_path=args.input, generate_captions=captions, **verbose,
                       **{k: v for k, v in names.items() if v is not None}, **stage_args(args, ClipWriterStage)))
    if problems:
        raise ParamError(problems)
    for stage in stages:
        if stage is not None:
            pipeline.add_stage(stage)
    pipeline.build()  # stage-list problems surface here
    return pipeline
