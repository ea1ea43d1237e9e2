"""NeMo Curator users switch by changing their imports: NeMo's names, arguments, executor and files.

The end-to-end test builds its pipeline the way NeMo Curator's tutorial builder
(``create_video_splitting_pipeline``) does: the same classes and every keyword
argument it passes, then ``pipeline.run(executor)``, with tiny models laid out
under ``model_dir`` as NeMo lays out weights.
"""

from __future__ import annotations

import io
import json
import shutil
from argparse import Namespace
from pathlib import Path

import av
import pandas as pd
import pytest
from videogen import decode_stamps

import daskcap
from daskcap import (  # the imports a NeMo script changes to
    CaptionEnhancementStage,
    CaptionGenerationStage,
    CaptionPreparationStage,
    ClipTranscodingStage,
    ClipWriterStage,
    DaskExecutor,
    FixedStrideExtractorStage,
    Pipeline,
    PreviewStage,
    VideoReader,
)
from daskcap import schema
from daskcap.stages._params import ParamError
from daskcap.stages.clip import make_clips
from daskcap.stages.prepare import prepare_windows
from daskcap.stages.read import VideoReaderStage, read_videos



# --- names and arguments --------------------------------------------------------------------------


def test_nemo_names_are_daskcaps_classes():
    assert VideoReader is daskcap.VideoReaderStage and FixedStrideExtractorStage is daskcap.FixedStrideClipStage
    assert VideoReader(input_video_path="v", video_limit=None, verbose=True).verbose
    assert FixedStrideExtractorStage(clip_len_s=10.0, clip_stride_s=10.0, min_clip_length_s=2.0, limit_clips=0, verbose=True).stride_s == 10.0


@pytest.mark.parametrize("variant", ["qwen", "qwen2.5", "qwen3"])
def test_model_variants_old_and_new(variant):
    assert CaptionPreparationStage(model_variant=variant).model_variant == variant
    assert CaptionGenerationStage(model_variant=variant).model_name.startswith("Qwen/Qwen")
    enhance = CaptionEnhancementStage(model_variant=variant, captioning_model_variant=variant)
    assert enhance.model_name in ("Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen3-14B")


def test_vllm_kwargs_reach_the_engine_config_and_override_daskcaps():
    from daskcap.engines.base import LoadedModel
    from daskcap.engines.vllm_engine import llm_kwargs

    stage = CaptionGenerationStage(vllm_kwargs={"gpu_memory_utilization": 0.5, "enforce_eager": True})
    kwargs = llm_kwargs(stage.engine_config(), LoadedModel("/m", "qwen2.5-vl"))
    assert kwargs["gpu_memory_utilization"] == 0.5 and kwargs["enforce_eager"] is True  # no duplicate-keyword error
    assert stage.engine_config() == CaptionGenerationStage(vllm_kwargs={"enforce_eager": True, "gpu_memory_utilization": 0.5}).engine_config()
    with pytest.raises(ParamError, match="vllm_kwargs"):
        CaptionEnhancementStage(vllm_kwargs=["not", "a", "dict"])


def test_what_daskcap_does_not_do_is_refused_in_one_line():
    with pytest.raises(ParamError, match="generate_embeddings=True"):
        ClipWriterStage(output_path="o", input_path="i", upload_clips=True, dry_run=False, generate_embeddings=True,
                        generate_previews=True, generate_captions=True)
    with pytest.raises(ParamError, match="use_hwaccel"):
        ClipTranscodingStage(use_hwaccel=True)
    with pytest.raises(ParamError, match="encoder"):
        ClipTranscodingStage(encoder="libaom-av1")
    with pytest.raises(ParamError, match="config"):
        Pipeline("p", config={"execution_mode": "streaming"})


def test_another_frameworks_executor_is_named_in_the_error():
    class XennaExecutor:  # what a NeMo script passes
        pass

    with pytest.raises(TypeError, match="DaskExecutor.*XennaExecutor"):
        Pipeline("p").run(XennaExecutor())


def test_clip_writer_path_helpers():
    assert ClipWriterStage.get_output_path_clips("s3://b/out/") == "s3://b/out/clips"
    assert ClipWriterStage.get_output_path_clips("out", filtered=True) == "out/filtered_clips"
    assert ClipWriterStage.get_output_path_previews("out") == "out/previews"
    assert ClipWriterStage.get_output_path_metas("out", "v0") == "out/metas/v0"
    assert ClipWriterStage.get_output_path_processed_videos("out") == "out/processed_videos"
    assert ClipWriterStage.get_output_path_processed_clip_chunks("out") == "out/processed_clip_chunks"


# --- how clips are encoded ------------------------------------------------------------------------


def _clip_mp4s(video: Path, **prepare) -> list[bytes]:
    videos = read_videos(pd.DataFrame({"video_path": [str(video)]}), VideoReaderStage(str(video)))
    clips = make_clips(videos, FixedStrideExtractorStage(clip_len_s=2.0, clip_stride_s=2.0, min_clip_length_s=0.5, limit_clips=0))
    windows = prepare_windows(clips, CaptionPreparationStage(window_size=32, remainder_threshold=16, **prepare))
    assert (windows["status"] == schema.OK).all(), windows["error"].tolist()
    return [w for w in windows["clip_mp4"] if w is not None]


def _stream(mp4: bytes):
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, stream.container.bit_rate


def test_transcoding_stage_encoders(stamped):
    video = stamped(150, 30)  # five 1 s... three 2 s clips of 60, 60 and 30 frames
    expected = [list(range(0, 60)), list(range(60, 120)), list(range(120, 150))]
    vp9 = _clip_mp4s(video, clip_encoder="libvpx-vp9", clip_encoder_threads=2)
    assert [_stream(m)[0] for m in vp9] == ["vp9"] * 3  # VP9 in the .mp4, as NeMo writes it
    assert [decode_stamps(m) for m in vp9] == expected
    nvenc = _clip_mp4s(video, clip_encoder="h264_nvenc")  # no NVENC here: libx264, H.264 either way
    assert [_stream(m)[0] for m in nvenc] == ["h264"] * 3 and [decode_stamps(m) for m in nvenc] == expected
    plain = _clip_mp4s(video)
    kept = _clip_mp4s(video, clip_use_input_bit_rate=True)
    with av.open(str(video)) as source:
        source_rate = source.streams.video[0].bit_rate or source.bit_rate
    assert [decode_stamps(m) for m in kept] == expected
    # At the source's bit rate, not libx264's quality target: the sizes follow the source.
    assert abs(sum(map(len, kept)) * 8 / 5.0 - source_rate) < abs(sum(map(len, plain)) * 8 / 5.0 - source_rate)


# --- the tutorial's pipeline, end to end ----------------------------------------------------------


def tutorial_args(videos: Path, output: Path, model_dir: Path) -> Namespace:
    """The tutorial's argparse namespace at its defaults, with what its README's example command sets."""
    return Namespace(
        video_dir=str(videos), output_path=str(output), model_dir=str(model_dir), video_limit=None, verbose=False,
        upload_clips=True, dry_run=False, splitting_algorithm="fixed_stride", fixed_stride_split_duration=5.0,
        fixed_stride_min_clip_length_s=2.0, limit_clips=0, transcode_cpus_per_worker=6.0, transcode_encoder="h264_nvenc",
        transcode_encoder_threads=1, transcode_ffmpeg_batch_size=16, transcode_use_hwaccel=False,
        transcode_use_input_video_bit_rate=False, clip_re_chunk_size=32, generate_embeddings=False,
        embedding_algorithm="cosmos-embed1-224p", generate_previews=True, preview_target_fps=1, preview_target_height=240,
        generate_captions=True, captioning_algorithm="qwen2.5", captioning_window_size=256, captioning_remainder_threshold=128,
        captioning_prompt_variant="default", captioning_prompt_text=None, captioning_sampling_fps=2.0,
        captioning_preprocess_dtype="float16", captioning_stage2_caption=True, captioning_stage2_prompt_text=None,
        captioning_batch_size=8, captioning_use_fp8_weights=False, captioning_max_output_tokens=24,
        captioning_use_vllm_mmcache=False, enhance_captions=True, enhance_captions_algorithm="qwen2.5",
        enhance_captions_batch_size=128, enhance_captions_use_fp8_weights=False, enhance_captions_max_output_tokens=48,
        enhance_captioning_prompt_variant="default", enhance_captions_prompt_text=None, enhanced_caption_models="qwen_lm",
    )


def create_video_splitting_pipeline(args: Namespace) -> Pipeline:
    """Stage by stage and argument by argument as NeMo's tutorial builder does (fixed stride, no
    motion or aesthetic filter, no embeddings), in this project's own words."""
    pipeline = Pipeline(name="video_splitting", description="Split videos into clips")
    pipeline.add_stage(VideoReader(input_video_path=args.video_dir, video_limit=args.video_limit, verbose=args.verbose))
    pipeline.add_stage(FixedStrideExtractorStage(
        clip_len_s=args.fixed_stride_split_duration, clip_stride_s=args.fixed_stride_split_duration,
        min_clip_length_s=args.fixed_stride_min_clip_length_s, limit_clips=args.limit_clips,
    ))
    pipeline.add_stage(ClipTranscodingStage(
        num_cpus_per_worker=args.transcode_cpus_per_worker, encoder=args.transcode_encoder,
        encoder_threads=args.transcode_encoder_threads, encode_batch_size=args.transcode_ffmpeg_batch_size,
        use_hwaccel=args.transcode_use_hwaccel, use_input_bit_rate=args.transcode_use_input_video_bit_rate,
        num_clips_per_chunk=args.clip_re_chunk_size, verbose=args.verbose,
    ))
    pipeline.add_stage(CaptionPreparationStage(
        model_variant=args.captioning_algorithm, prompt_variant=args.captioning_prompt_variant,
        prompt_text=args.captioning_prompt_text, sampling_fps=args.captioning_sampling_fps,
        window_size=args.captioning_window_size, remainder_threshold=args.captioning_remainder_threshold,
        preprocess_dtype=args.captioning_preprocess_dtype, generate_previews=args.generate_previews, verbose=args.verbose,
    ))
    pipeline.add_stage(PreviewStage(target_fps=args.preview_target_fps, target_height=args.preview_target_height, verbose=args.verbose))
    pipeline.add_stage(CaptionGenerationStage(
        model_dir=args.model_dir, model_variant=args.captioning_algorithm, caption_batch_size=args.captioning_batch_size,
        fp8=args.captioning_use_fp8_weights, max_output_tokens=args.captioning_max_output_tokens,
        generate_stage2_caption=args.captioning_stage2_caption, stage2_prompt_text=args.captioning_stage2_prompt_text,
        disable_mmcache=not args.captioning_use_vllm_mmcache,
    ))
    pipeline.add_stage(CaptionEnhancementStage(
        model_dir=args.model_dir, model_variant=args.enhance_captions_algorithm,
        captioning_model_variant=args.captioning_algorithm, prompt_variant=args.enhance_captioning_prompt_variant,
        prompt_text=args.enhance_captions_prompt_text, model_batch_size=args.enhance_captions_batch_size,
        fp8=args.enhance_captions_use_fp8_weights, max_output_tokens=args.enhance_captions_max_output_tokens,
        verbose=args.verbose,
    ))
    pipeline.add_stage(ClipWriterStage(
        output_path=args.output_path, input_path=args.video_dir, upload_clips=args.upload_clips, dry_run=args.dry_run,
        generate_embeddings=args.generate_embeddings, generate_previews=args.generate_previews,
        generate_captions=args.generate_captions, embedding_algorithm=args.embedding_algorithm,
        caption_models=[args.captioning_algorithm], enhanced_caption_models=[args.enhanced_caption_models],
        verbose=args.verbose,
    ))
    return pipeline


@pytest.fixture(scope="module")
def nemo_layout(tmp_path_factory, tiny_models, samples, stamped):
    """Videos in a folder with a subfolder, and the tiny models where NeMo keeps Qwen's weights."""
    root = tmp_path_factory.mktemp("nemo")
    videos = root / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copyfile(samples / "bikes.mp4", videos / "bikes.mp4")
    shutil.copyfile(stamped(330, 30), videos / "sub" / "stamped.mp4")  # 11 s: clips of 5, 5 and 1 s (dropped)
    models = root / "models"
    shutil.copytree(tiny_models["vlm"], models / "Qwen" / "Qwen2.5-VL-7B-Instruct")
    shutil.copytree(tiny_models["lm"], models / "Qwen" / "Qwen2.5-14B-Instruct")
    return root, videos, models


def _check_nemo_files(output: Path, videos: Path) -> None:
    """metas/v0 window by window against the Parquet tables, and the per-video files."""
    windows = pd.read_parquet(output / "windows").sort_values(["clip_id", "window_index"])
    video_rows = pd.read_parquet(output / "videos")
    assert (windows["status"] == "ok").all() and windows["enhanced_caption"].notna().all()
    metas = sorted((output / "metas" / "v0").glob("*.json"))
    assert {p.stem for p in metas} == set(windows["clip_id"])
    for clip_id, group in windows.groupby("clip_id"):
        meta = json.loads((output / "metas" / "v0" / f"{clip_id}.json").read_text())
        first = group.iloc[0]
        assert meta["span_uuid"] == clip_id and meta["source_video"] == first["video_path"]
        assert meta["duration_span"] == [first["clip_start_s"], first["clip_end_s"]]
        assert meta["clip_location"] == f"{output}/clips/{clip_id}.mp4" and (output / "clips" / f"{clip_id}.mp4").is_file()
        assert meta["video_codec"] == "h264" and meta["valid"] is True and "errors" not in meta
        source = video_rows.set_index("video_path").loc[first["video_path"]]
        assert (meta["width_source"], meta["height_source"], meta["framerate_source"]) == (source["width"], source["height"], source["fps"])
        assert len(meta["windows"]) == len(group)
        for entry, window in zip(meta["windows"], group.itertuples(), strict=True):
            assert entry == {
                "start_frame": window.start_frame, "end_frame": window.end_frame,
                "qwen2.5_caption": window.caption, "qwen_lm_enhanced_caption": window.enhanced_caption,
            }
    for video in video_rows.itertuples():
        relpath = video.video_path.removeprefix(str(videos) + "/")
        processed = json.loads((output / "processed_videos" / f"{relpath}.json").read_text())
        assert processed["video"] == video.video_path and processed["num_total_clips"] == video.num_clips
        assert (processed["width"], processed["height"], processed["num_frames"]) == (video.width, video.height, video.num_frames)
        chunks = [json.loads(p.read_text()) for p in sorted((output / "processed_clip_chunks").glob(f"{relpath}_*.json"))]
        assert len(chunks) == processed["num_clip_chunks"] >= 1
        clip_ids = [c for chunk in chunks for c in chunk["clips"]]
        assert sorted(clip_ids) == sorted(windows.loc[windows["video_path"] == video.video_path, "clip_id"].unique())
        for chunk in chunks:
            for clip_id, by_span in chunk["all_windows"].items():
                rows = windows[windows["clip_id"] == clip_id]
                assert by_span == {f"{w.start_frame}_{w.end_frame}": w.caption for w in rows.itertuples()}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_tutorials_pipeline_runs_with_only_its_imports_changed(nemo_layout):
    root, videos, models = nemo_layout
    output = root / "out-embedded"
    pipeline = create_video_splitting_pipeline(tutorial_args(videos, output, models))
    assert "video_splitting" in pipeline.describe()
    pipeline.run(DaskExecutor(n_workers=1, engine_workers=1))
    _check_nemo_files(output, videos)
    # Windows, previews and clips as daskcap's own run makes them.
    windows = pd.read_parquet(output / "windows")
    # bikes (10 s) and stamped (11 s; its 1 s tail is under the 2 s minimum): two 5 s clips each, one window per clip.
    assert windows["preview_path"].notna().all() and len(windows) == 2 + 2
    stamped = windows[windows["video_path"].str.endswith("stamped.mp4")].sort_values(["clip_index", "window_index"])
    clip = (output / "clips" / f"{stamped['clip_id'].iloc[0]}.mp4").read_bytes()
    assert decode_stamps(clip) == list(range(150))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_tutorials_pipeline_on_an_existing_cluster(nemo_layout, cluster):
    root, videos, models = nemo_layout
    start, _ = cluster
    address = start(cpu=1, engines=1)
    output = root / "out-existing"
    pipeline = create_video_splitting_pipeline(tutorial_args(videos, output, models))
    summary = pipeline.run(DaskExecutor(scheduler=address))
    assert summary["cluster"]["scheduler"] == address
    _check_nemo_files(output, videos)


def test_vllm_settings_from_the_command_line_and_a_cpu_memory_share_that_fits(tmp_path):
    import argparse

    from daskcap import cli
    from daskcap.flags import build_pipeline
    from daskcap.engines.base import LoadedModel
    from daskcap.engines.vllm_engine import free_memory_share, llm_kwargs, memory_utilization

    parser = argparse.ArgumentParser()
    run_parser = cli._run_parser(parser.add_subparsers(dest="command"))
    (tmp_path / "in").mkdir()
    args = cli.apply_config(parser, run_parser, ["run", str(tmp_path / "in"), str(tmp_path / "out"), "--captioning-model", "m",
                                                 "--enhance-captions", "--vllm-kwargs", '{"enforce_eager": true, "swap_space": 0}'])
    job = build_pipeline(args).build()
    assert job.caption.vllm_kwargs == job.enhance.vllm_kwargs == {"enforce_eager": True, "swap_space": 0}
    with pytest.raises(SystemExit):
        cli.apply_config(parser, run_parser, ["run", "i", "o", "--vllm-kwargs", "[1, 2]"])
    # No GPU here: vLLM's CPU backend wants that share of the node's memory free at start-up.
    import psutil

    memory = psutil.virtual_memory()
    share = llm_kwargs(job.caption.engine_config(), LoadedModel("/m", "qwen2.5-vl"))["gpu_memory_utilization"]
    assert share == memory_utilization(False) and share <= 0.8 * free_memory_share() + 0.01  # of the tightest NUMA node
    assert share * memory.total <= memory.available
    assert memory_utilization(True) == 0.85
