"""What runs on workers, one partition at a time: the functions the shard's dataframes
map over (``frames.py``: ``clip_group`` -> ``prepare_partition`` -> ``write_task``;
probing's are in ``plan.py``), and the model hops between prepare and
write (``model_inputs`` -> ``caption_task`` -> ``enhance_task`` on engine workers ->
``write_captioned_task``), which the streaming runner (``stream.py``) submits as
futures. Each takes and returns plain frames.
"""

from __future__ import annotations

import functools

import pandas as pd

from daskcap.engines.host import current_host
from daskcap.run.plan import PARTITION, SHARD, ShardPlan, shard_group, shard_state
from daskcap.run.timing import STAGE_SECONDS, timed
from daskcap.stages.caption import CaptionEnhancementStage, CaptionGenerationStage, caption_windows, enhance_windows
from daskcap.stages.check import check_windows
from daskcap.stages.prepare import prepare_windows
from daskcap.stages.write import write_windows


def clip_group(partition: int, plan: ShardPlan) -> pd.DataFrame:
    """The clip rows of partition ``partition`` of a planned shard."""
    return shard_group(plan, partition)


def prepare_partition(clips: pd.DataFrame, job) -> pd.DataFrame:
    """prepare: a partition's window rows, with their previews made from the frames of the
    same decode (or ``preview_failed``); the seconds spent on them count as "preview"."""
    return timed(clips, "prepare", functools.partial(prepare_windows, preview=job.preview), job.prepare)


def _model_handle(params, slots: int | None):
    """This worker's engine for ``params``. A stage with an endpoint waits on a server, not on
    this worker: its task leaves the worker's thread pool (secede) so the worker prepares the
    next partitions meanwhile; its requests in flight are bounded by ``slots``."""
    if params.endpoint is not None:
        from distributed import secede

        secede()
    host = current_host()
    return host, host.handle(params.engine_config(slots))


def caption_task(frame: pd.DataFrame, params: CaptionGenerationStage, slots: int | None = None) -> pd.DataFrame:
    """On an engine worker (or, for an endpoint, a CPU worker): caption one partition's model
    inputs with this worker's persistent engine. The sampled frames and window mp4s are not
    sent back: the write takes them, when the output keeps them, from the prepared partition."""
    host, handle = _model_handle(params, slots)
    result = timed(frame, "caption", lambda f, p: caption_windows(f, p, handle), params)
    host.count(partitions_captioned=1, windows_captioned=int(result["caption"].notna().sum()))
    result["sampled_frames"] = None
    return result.drop(columns=["window_mp4"], errors="ignore")


def enhance_task(frame: pd.DataFrame, params: CaptionEnhancementStage, slots: int | None = None) -> pd.DataFrame:
    host, handle = _model_handle(params, slots)
    result = timed(frame, "enhance", lambda f, p: enhance_windows(f, p, handle), params)
    host.count(windows_enhanced=int(result["enhanced_caption"].notna().sum()))
    return result


# What the model stages read and write of a window: only these go to an engine worker.
WINDOW_ID = ["clip_id", "window_index"]
MODEL_COLUMNS = [
    *WINDOW_ID, "video_path", "start_frame", "end_frame", "fps", "num_sampled_frames", "sampled_height", "sampled_width",
    "sampled_frames", "prompt", "status", "error",
    "caption", "stage1_caption", "caption_model", "caption_prompt_tokens", "caption_output_tokens", "caption_finish_reason",
    "enhanced_caption", "enhance_model", "enhance_prompt_tokens", "enhance_output_tokens", "enhance_finish_reason",
]


def model_inputs(prepared: pd.DataFrame, with_mp4: bool = False) -> pd.DataFrame:
    """The model's part of a prepared partition (ids, sampled frames, prompt; the window mp4s
    too for an endpoint that takes them): previews stay on the CPU worker that made them."""
    inputs = prepared[MODEL_COLUMNS + (["window_mp4"] if with_mp4 else [])].copy()
    inputs.attrs = dict(prepared.attrs)
    return inputs


def join_captions(prepared: pd.DataFrame, captioned: pd.DataFrame, keep_model_input: bool) -> pd.DataFrame:
    """The prepared windows with the model stages' columns, matched by window id."""
    results = captioned.set_index(WINDOW_ID)
    joined = prepared.copy()
    at = pd.MultiIndex.from_frame(prepared[WINDOW_ID])
    for column in MODEL_COLUMNS:
        if column not in WINDOW_ID and column != "sampled_frames":
            joined[column] = results[column].reindex(at).to_numpy()
            joined[column] = joined[column].astype(prepared[column].dtype)
    if not keep_model_input:
        joined["sampled_frames"] = None
    joined.attrs = dict(captioned.attrs)  # the prepare seconds came along, the model stages' were added
    return joined


def write_captioned_task(prepared: pd.DataFrame, captioned: pd.DataFrame, job) -> pd.DataFrame:
    """On the CPU worker holding the prepared partition: join the captions back, then write."""
    return write_task(join_captions(prepared, captioned, job.writer.write_model_input), job)


def write_task(frame: pd.DataFrame, job) -> pd.DataFrame:
    """Check the captions (when the job asks), write one partition, then its completion
    marker (the last thing written); return its light index."""
    shard, number = frame.attrs[SHARD], frame.attrs[PARTITION]
    if job.check is not None:
        frame = timed(frame, "check", lambda f, p: check_windows(f, p, job.enhance_prompt), job.check)
    index = timed(frame, "write", lambda f, p: write_windows(f, p, f"part-{shard:05d}-{number:05d}"), job.writer)
    state = shard_state(job, shard)
    if state is not None:
        state.mark_done(number, index, index.attrs.get(STAGE_SECONDS, {}))
    return index
