"""The trained tiny models say something checkable, through the production caption path.

Clips of a coloured square moving over grey noise (daskcap.synthetic) go
through `daskcap run` (stage 1, stage 2, enhancement) and through the caption
stage directly; the captions must name the square's colour and the direction
it moves. These tests fail if the frames reach the model reversed, with their
colours swapped, or without the prompt.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from daskcap import schema
from daskcap.engines.host import EngineHost
from daskcap.engines.tiny import RECORD, TrainingPlan, build_tiny_models, content_hash, words_in
from daskcap.samples import SYNTHETIC_CLIPS, write_synthetic
from daskcap.stages.caption import CaptionGenerationStage, caption_windows
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.read import VideoReaderStage, read_videos
from daskcap.synthetic import REVERSED, MovingSquare, write_clip
from videogen import pack_rgb_frames

REPLACEMENT = "\ufffd"  # what invalid UTF-8 decodes to


def test_the_build_is_reused_while_its_content_hash_matches(tiny_models):
    directory = tiny_models["vlm"].parent
    record = json.loads((directory / RECORD).read_text())
    assert record["content_hash"] == content_hash(TrainingPlan())
    before = (tiny_models["vlm"] / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_models(directory) == tiny_models
    assert (tiny_models["vlm"] / "model.safetensors").stat().st_mtime_ns == before  # not trained again


def test_held_out_accuracy_meets_the_targets(tiny_models):
    held_out = json.loads((tiny_models["vlm"].parent / RECORD).read_text())["held_out"]
    assert held_out["colour_accuracy"] >= 0.95, held_out
    assert held_out["direction_accuracy"] >= 0.90, held_out
    assert held_out["enhancement_keeps_words"] >= 0.95, held_out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_daskcap_run_names_colour_and_motion_in_every_caption(tiny_models, tmp_path):
    videos = tmp_path / "videos"
    write_synthetic(videos)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "daskcap.cli", "run", str(videos), str(output),
         "--captioning-model", str(tiny_models["vlm"]), "--captioning-stage2-caption",
         "--enhance-captions", "--enhance-captions-model", str(tiny_models["lm"]),
         "--captioning-max-output-tokens", "32", "--enhance-captions-max-output-tokens", "64",
         "--n-workers", "1", "--engine-workers", "1", "--quiet", "--no-report"],
        capture_output=True, text=True, timeout=280,
    )
    assert result.returncode == 0, result.stderr
    windows = pd.read_parquet(output / "windows")
    assert len(windows) == len(SYNTHETIC_CLIPS) and (windows["status"] == schema.OK).all()
    right_colour = right_direction = 0
    for window in windows.itertuples():
        colour, direction = window.video_path.rsplit("/", 1)[1].removesuffix(".mp4").split("_")[1:]
        said = [words_in(getattr(window, column)) for column in ("stage1_caption", "caption", "enhanced_caption")]
        for text in (window.stage1_caption, window.caption, window.enhanced_caption):
            assert REPLACEMENT not in text, text
        # Each caption names one colour and one motion; the enhancement keeps the final caption's, right or wrong.
        assert all(len(colours) == len(directions) == 1 for colours, directions in said) and said[1] == said[2], said
        right_colour += (said[0][0] == {colour}) + (said[1][0] == {colour})
        right_direction += (said[0][1] == {direction}) + (said[1][1] == {direction})
        # Each prompt gets its own answer: stage 1's sentence, stage 2's rewrite, the longer enhancement.
        assert window.stage1_caption.startswith("A ") and window.caption.startswith("The "), window
        assert len(window.enhanced_caption) > len(window.caption)
    # Held out, colour and direction are each right 99-100% of the time (README): of these
    # twelve captions (stage 1 and final, six clips) one miss each is allowed.
    captions = 2 * len(SYNTHETIC_CLIPS)
    assert right_colour >= captions - 1, right_colour
    assert right_direction >= captions - 1, right_direction


@pytest.fixture(scope="module")
def square_windows(tmp_path_factory):
    """One window per clip: a red square moving left and a blue one moving up, 3 s each."""
    folder = tmp_path_factory.mktemp("squares")
    paths = [
        write_clip(folder / "red_left.mp4", MovingSquare("red", "left", start=(0.7, 0.5))),
        write_clip(folder / "blue_up.mp4", MovingSquare("blue", "up", start=(0.5, 0.7))),
    ]
    videos = read_videos(pd.DataFrame({"video_path": [str(p) for p in paths]}), VideoReaderStage("unused"))
    windows = prepare_windows(make_clips(videos, FixedStrideClipStage()), CaptionPreparationStage())
    assert len(windows) == 2 and (windows["status"] == schema.OK).all()
    return windows


def _caption(windows: pd.DataFrame, tiny_models, host: EngineHost) -> list[str]:
    stage = CaptionGenerationStage(model=str(tiny_models["vlm"]), max_output_tokens=32, engine="transformers")
    return caption_windows(windows, stage, host.handle(stage.engine_config()))["caption"].tolist()


def _with_frames(windows: pd.DataFrame, change) -> pd.DataFrame:
    """The windows with ``change`` applied to each one's (T, H, W, 3) RGB sampled frames."""
    changed = windows.copy()
    changed["sampled_frames"] = [
        pack_rgb_frames(change(schema.unpack_frames(w.sampled_frames, w.num_sampled_frames, w.sampled_height, w.sampled_width)))
        for w in windows.itertuples()
    ]
    return changed


def test_captions_follow_the_frames_order_and_colours(square_windows, tiny_models):
    host = EngineHost()
    truth = [("red", "left"), ("blue", "up")]
    as_sampled = [words_in(c) for c in _caption(square_windows, tiny_models, host)]
    assert [colours for colours, _ in as_sampled] == [{c} for c, _ in truth], as_sampled
    # Played backwards, the square moves the other way: wherever the model read the
    # motion right, the caption of the reversed frames must name the opposite direction.
    reversed_ = [words_in(c) for c in _caption(_with_frames(square_windows, lambda rgb: rgb[::-1]), tiny_models, host)]
    read_right = [i for i, (_, d) in enumerate(truth) if as_sampled[i][1] == {d}]
    assert read_right, as_sampled
    for i in read_right:
        assert reversed_[i] == ({truth[i][0]}, {REVERSED[truth[i][1]]}), (truth[i], reversed_[i])
    # Red and blue swapped (RGB read as BGR): the colour word must swap too.
    swapped = _caption(_with_frames(square_windows, lambda rgb: rgb[..., ::-1]), tiny_models, host)
    assert [words_in(c)[0] for c in swapped] == [{"blue"}, {"red"}], swapped
