"""The transformers backend: runs anywhere torch runs (CPU here, CUDA on GPU workers)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

from daskcap.engines.base import REPETITION_PENALTY, Engine, EngineConfig, EngineError, Generation, LoadedModel, TextRequest, VideoRequest
from daskcap.engines.chat import expand_video_pad, render, text_messages, video_messages
from daskcap.engines.vision import QWEN2_5_VL_PATCHES, video_patches, video_token_count
from daskcap.video.windows import QWEN2_5_VL, frame_size_for_model

log = logging.getLogger(__name__)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _on_grid(frames: np.ndarray) -> np.ndarray:
    """Frames at the model grid; resizes those left at source size (model_does_preprocess)."""
    count, height, width, _ = frames.shape
    target = frame_size_for_model(height, width, count, QWEN2_5_VL)
    if target == (height, width):
        return frames
    import av

    return np.stack([
        av.VideoFrame.from_ndarray(frame, format="rgb24").to_ndarray(
            format="rgb24", width=target[1], height=target[0], interpolation="BICUBIC"
        )
        for frame in frames
    ])


def video_inputs(tokenizer, requests: Sequence[VideoRequest]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Qwen2.5-VL's inputs for a batch of windows: the rendered prompts (one video
    token per visual token) and the arrays ``generate`` takes with them."""
    texts, pixels, grids, seconds_per_grid = [], [], [], []
    for request in requests:
        patches, grid = video_patches(_on_grid(request.frames), QWEN2_5_VL_PATCHES)
        text = render(tokenizer, video_messages(request.prompt))
        texts.append(expand_video_pad(text, video_token_count(grid, QWEN2_5_VL_PATCHES)))
        pixels.append(patches)
        grids.append(grid)
        seconds_per_grid.append(QWEN2_5_VL_PATCHES.temporal_patch_size / request.sampled_fps)
    return texts, {
        "pixel_values_videos": np.concatenate(pixels),
        "video_grid_thw": np.array(grids, dtype=np.int64),
        "second_per_grid_ts": np.array(seconds_per_grid, dtype=np.float32),
    }


class TransformersEngine(Engine):
    backend = "transformers"

    def __init__(self, config: EngineConfig, model: LoadedModel):
        super().__init__(config, model)
        if config.fp8:
            raise EngineError(
                "fp8 weights need the vLLM engine (--engine vllm on a GPU worker); "
                "the transformers engine would silently run full precision"
            )
        if config.vllm_kwargs:
            log.warning("vllm_kwargs %s are vLLM settings: the transformers engine does not use them", config.vllm_kwargs)
        if self.family == "qwen3-vl":
            raise EngineError("Qwen3-VL captions need the vLLM engine; the transformers engine supports Qwen2.5-VL")
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load would interleave with the job's progress

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model_dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        # "uint8" (the reference's option to ship raw pixels) normalizes in float32 here.
        self.pixel_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "uint8": torch.float32}[
            config.preprocess_dtype
        ]
        if self.device == "cpu":
            self.pixel_dtype = torch.float32  # CPU matmuls want the model's own dtype
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        loader = AutoModelForCausalLM if self.family == "qwen-text" else AutoModelForImageTextToText
        self.model = loader.from_pretrained(self.model_path, dtype=model_dtype).to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        log.info("transformers engine: %s on %s", config.model, self.device)

    def caption(self, requests: list[VideoRequest]) -> dict[str, Generation]:
        if self.family == "qwen-text":
            raise EngineError(f"{self.config.model} is a text model; captions need a vision-language model")
        results = {}
        for chunk in _chunks(requests, self.config.batch_size):
            texts, video = video_inputs(self.tokenizer, chunk)
            inputs = {name: self._torch.from_numpy(value).to(self.device) for name, value in video.items()}
            inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self.pixel_dtype)
            results.update(self._generate(chunk, texts, inputs))
        return results

    def complete(self, requests: list[TextRequest]) -> dict[str, Generation]:
        results = {}
        for chunk in _chunks(requests, self.config.batch_size):
            texts = [render(self.tokenizer, text_messages(request.prompt)) for request in chunk]
            results.update(self._generate(chunk, texts, {}))
        return results

    def _generate(self, chunk, texts: list[str], extra: dict) -> dict[str, Generation]:
        torch = self._torch
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        max_tokens = max(request.max_tokens for request in chunk)
        with torch.inference_mode():
            output = self.model.generate(
                **tokens, **extra, max_new_tokens=max_tokens, do_sample=False, repetition_penalty=REPETITION_PENALTY
            )
        prompt_length = tokens["input_ids"].shape[1]
        results = {}
        for row, request in enumerate(chunk):
            generated = output[row, prompt_length:].tolist()[: request.max_tokens]
            stop = next((i for i, token in enumerate(generated) if token in self.eos_ids), None)
            kept = generated if stop is None else generated[:stop]
            results[request.request_id] = Generation(
                text=self.tokenizer.decode(kept, skip_special_tokens=True).strip(),
                prompt_tokens=int(tokens["attention_mask"][row].sum()),
                output_tokens=len(kept),
                finish_reason="stop" if stop is not None else "length",
            )
        return results

    def close(self) -> None:
        del self.model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()
