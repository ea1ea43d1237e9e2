"""Bytes per window row at default settings, per column, on the real sample videos.

    python benchmarks/row_bytes.py [VIDEO_DIR]

Runs read -> clip -> prepare -> preview in process (no Dask) and prints the
in-memory size of each heavy column per window, plus the raw float32 tensor
the same model input would take (what the reference keeps in its rows).
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from daskcap.samples import sample_dir
from daskcap.stages.clip import FixedStrideClipStage, make_clips
from daskcap.stages.prepare import CaptionPreparationStage, prepare_windows
from daskcap.stages.preview import PreviewStage
from daskcap.stages.listing import list_videos
from daskcap.stages.read import VideoReaderStage, read_videos


def main(argv: list[str]) -> int:
    source = argv[0] if argv else str(sample_dir())
    reader = VideoReaderStage(source)
    videos = read_videos(list_videos(reader), reader)
    clips = make_clips(videos, FixedStrideClipStage())
    start = time.perf_counter()
    preview = PreviewStage()  # built while prepare decodes, as in a job
    windows = prepare_windows(clips, CaptionPreparationStage(), preview)
    seconds = time.perf_counter() - start
    sizes = pd.DataFrame(
        {
            "video": windows["video_path"].str.rsplit("/", n=1).str[-1],
            "window": windows["window_index"],
            "frames": windows["end_frame"] - windows["start_frame"] + 1,
            "sampled": windows["num_sampled_frames"],
            "grid": windows["sampled_width"].astype(str) + "x" + windows["sampled_height"].astype(str),
            "window_mp4": windows["window_mp4"].map(len),
            "model_input": windows["sampled_frames"].map(len),
            "rgb_uint8": windows["num_sampled_frames"] * windows["sampled_width"] * windows["sampled_height"] * 3,
            "preview_webp": windows["preview_webp"].map(len),
        }
    )
    sizes["float32_tensor"] = sizes["rgb_uint8"] * 4
    pd.set_option("display.width", 200)
    print(sizes.to_string(index=False))
    print("\nmean bytes per window row:")
    print(sizes[["window_mp4", "model_input", "rgb_uint8", "float32_tensor", "preview_webp"]].mean().round().astype(int).to_string())
    print(f"\nprepare + preview: {seconds:.2f} s for {len(windows)} windows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
