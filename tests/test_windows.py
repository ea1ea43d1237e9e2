"""The windowing and sampling rules and the Qwen pixel grid (docs/design.md, "Windows and model inputs")."""

import pytest

from daskcap.video.windows import frame_size_for_model, num_sampled_frames, sample_indices, split_windows


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [
        (0, []),
        (3, []),  # fewer than 4 frames: no window
        (4, [(0, 3)]),
        (100, [(0, 99)]),
        (256, [(0, 255)]),  # exactly window_size
        (257, [(0, 256)]),  # leftover of 1 joins the last window
        (256 + 127, [(0, 382)]),  # just below the threshold: merged
        (256 + 128, [(0, 255), (256, 383)]),  # at the threshold: its own window
        (512, [(0, 255), (256, 511)]),
        (795, [(0, 255), (256, 511), (512, 794)]),
        (900, [(0, 255), (256, 511), (512, 767), (768, 899)]),
    ],
)
def test_split_windows_table(num_frames, expected):
    assert split_windows(num_frames, 256, 128) == expected


def test_split_windows_tiny_leftover_never_makes_a_window():
    # remainder_threshold=0 would make a 2-frame window; a window needs 4 frames.
    assert split_windows(258, 256, 0) == [(0, 257)]
    assert split_windows(260, 256, 0) == [(0, 255), (256, 259)]


def test_split_windows_cover_every_frame_once():
    for num_frames in range(4, 1200, 7):
        windows = split_windows(num_frames, 64, 20)
        covered = [i for start, end in windows for i in range(start, end + 1)]
        assert covered == list(range(num_frames))


@pytest.mark.parametrize(
    ("frames", "fps", "sampling_fps", "expected"),
    [
        (256, 30, 2.0, 18),  # 17.07 -> 18
        (256, 10, 2.0, 52),  # 51.2 -> 52
        (256, 25, 2.0, 20),  # 20.48 -> 20
        (300, 30, 2.0, 20),
        (4, 30, 2.0, 4),  # clamped up to the minimum
        (5, 1, 2.0, 4),  # upper bound floor_even(5) = 4
        (132, 30, 2.0, 8),  # 8.8 -> 8
        (2000, 1, 2.0, 768),  # capped at 768
        (900, 30, 0.5, 16),  # 15 -> 16 (round to even)
    ],
)
def test_num_sampled_frames(frames, fps, sampling_fps, expected):
    assert num_sampled_frames(frames, fps, sampling_fps) == expected


def test_sample_indices_span_the_window_inclusively():
    indices = sample_indices(256, 511, 18)
    assert indices[0] == 256 and indices[-1] == 511
    assert len(indices) == 18 and indices == sorted(set(indices))


@pytest.mark.parametrize(("height", "width"), [(720, 1280), (1080, 1920)])
def test_hd_frames_land_on_560x1008(height, width):
    assert frame_size_for_model(height, width, 18) == (560, 1008)


def test_small_frames_grow_to_the_minimum_budget():
    height, width = frame_size_for_model(144, 176, 18)
    assert height % 28 == 0 and width % 28 == 0
    assert height * width >= 128 * 28 * 28
    assert abs(width / height - 176 / 144) < 0.15


def test_many_frames_share_the_total_budget():
    height, width = frame_size_for_model(1080, 1920, 100)
    assert height * width * 100 / 2 <= 24576 * 28 * 28
    # ...but never below the per-frame floor (1.05 x min_pixels), as in Qwen's processor.
    height, width = frame_size_for_model(1080, 1920, 768)
    assert height * width <= 128 * 28 * 28 * 1.05


def test_extreme_aspect_ratio_is_refused_clearly():
    with pytest.raises(ValueError, match="aspect ratio"):
        frame_size_for_model(16, 4000, 18)


def test_qwen3_grid_uses_multiples_of_32():
    from daskcap.video.windows import QWEN3_VL

    height, width = frame_size_for_model(720, 1280, 18, QWEN3_VL)
    assert height % 32 == 0 and width % 32 == 0
    assert height * width <= 768 * 32 * 32
