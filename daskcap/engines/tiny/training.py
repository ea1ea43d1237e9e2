"""Training the tiny models: seeded, deterministic, about a minute of CPU each."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daskcap.engines.tiny.data import caption_batches, enhance_batches
from daskcap.engines.tiny.models import build_lm, build_vlm
from daskcap.engines.tiny.text import build_tokenizer
from daskcap.synthetic import COLOURS, DIRECTIONS

ANSWER_WEIGHT = 10.0


def _answer_token_ids(tokenizer):
    """The tokens that carry the answer as captions spell them (" red", " left", and " moves" or
    " stays", where a still square is told apart from a moving one)."""
    import torch

    words = (*COLOURS, *DIRECTIONS, "moves", "stays")
    return torch.tensor(sorted({tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" " + word))[0] for word in words}))


def _first_answer(labels: list[int]) -> int:
    """Where the answer starts in a row of labels."""
    return next(i for i, label in enumerate(labels) if label != -100)


def _labelled(tokenizer, prompts_rendered: list[str], targets: list[str]):
    """input_ids, attention_mask and labels (the answer only), right-padded."""
    import torch

    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = []
    for prompt, target in zip(prompts_rendered, targets):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = tokenizer(target, add_special_tokens=False)["input_ids"] + [end]
        rows.append((prompt_ids + answer, [-100] * len(prompt_ids) + answer))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    # The words that carry the answer weigh more than the template around them, and
    # so does each answer's first token, where the prompt picks the sentence to say.
    weights = torch.where(torch.isin(labels, _answer_token_ids(tokenizer)), ANSWER_WEIGHT, 1.0)
    for row, (_, row_labels) in enumerate(rows):
        weights[row, _first_answer(row_labels)] = ANSWER_WEIGHT
    return input_ids, mask, labels, weights


def _train(model, steps: int, learning_rate: float, step_inputs) -> list[float]:
    """AdamW with a short warm-up and cosine decay; returns the loss per step."""
    import math

    import torch

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    return _train_steps(model, optimizer, schedule, step_inputs, steps)


def _train_steps(model, optimizer, schedule, step_inputs, steps: int) -> list[float]:
    """Weighted next-token loss on the answers only (see ``_labelled``)."""
    import torch

    model.train()
    losses = []
    for _ in range(steps):
        inputs = dict(next(step_inputs))
        labels, weights = inputs.pop("labels")[:, 1:], inputs.pop("label_weights")[:, 1:]
        logits = model(**inputs).logits[:, :-1].float()
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        weights = weights * (labels != -100)
        loss = (per_token * weights).sum() / weights.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _vlm_inputs(tokenizer, batches):
    import torch

    from daskcap.engines.hf_engine import video_inputs

    for requests, targets in batches:
        texts, video = video_inputs(tokenizer, requests)
        input_ids, mask, labels, weights = _labelled(tokenizer, texts, targets)
        yield dict(input_ids=input_ids, attention_mask=mask, labels=labels, label_weights=weights, **{k: torch.from_numpy(v) for k, v in video.items()})


def _lm_inputs(tokenizer, batches):
    from daskcap.engines.chat import render, text_messages

    for texts, targets in batches:
        rendered = [render(tokenizer, text_messages(text)) for text in texts]
        input_ids, mask, labels, weights = _labelled(tokenizer, rendered, targets)
        yield dict(input_ids=input_ids, attention_mask=mask, labels=labels, label_weights=weights)


@dataclass(frozen=True)
class TrainingPlan:
    seed: int = 0
    vlm_steps: int = 300  # the 32-wide heads (2 of them) learn colour in 300; 200 left it at 78%
    vlm_batch: int = 8
    vlm_learning_rate: float = 5e-3
    lm_steps: int = 300
    lm_batch: int = 16
    lm_learning_rate: float = 1.5e-3  # 2e-3 already diverges now and then
    vocab_size: int = 700
    eval_windows: int = 120


class _Deterministic:
    """Seeded torch with deterministic kernels and a fixed thread count, restored on exit."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._saved = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        torch.manual_seed(self.seed)
        return self

    def __exit__(self, *exc):
        import torch

        torch.use_deterministic_algorithms(self._saved[0])
        torch.set_num_threads(self._saved[1])


def _prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """The same batches in the same order, made in a thread while the model trains on the last ones."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(next, batches) for _ in range(depth)]
        while True:
            batch = pending.pop(0).result()
            pending.append(pool.submit(next, batches))
            yield batch


def train_vlm(path: Path, plan: TrainingPlan) -> dict:
    """Captions for synthetic clips; the designed vision front end stays fixed, the rest learns.

    The patch embedding, the motion units and the frame-wide motion head are
    frozen (training them at this learning rate overwrites the motion detectors
    before the language model has learned to read them); the patch merger and
    the whole language model are trained.
    """
    tokenizer = build_tokenizer(plan.vocab_size)
    with _Deterministic(plan.seed):
        model = build_vlm(tokenizer)
        for name, parameter in model.model.visual.named_parameters():
            parameter.requires_grad_(name.startswith("merger."))
        start = time.perf_counter()
        batches = _prefetched(_vlm_inputs(tokenizer, caption_batches(plan.seed, plan.vlm_batch)))
        losses = _train(model, plan.vlm_steps, plan.vlm_learning_rate, batches)
        seconds = time.perf_counter() - start
        model.requires_grad_(True)
    _save(model, tokenizer, path, "Qwen2.5-VL (tiny), trained to name a square's colour and motion")
    _save_preprocessor(path)
    return {"train_s": round(seconds, 1), "steps": plan.vlm_steps, "final_loss": round(float(np.mean(losses[-20:])), 4)}


def train_lm(path: Path, plan: TrainingPlan) -> dict:
    tokenizer = build_tokenizer(plan.vocab_size)
    with _Deterministic(plan.seed + 1):
        model = build_lm(tokenizer)
        start = time.perf_counter()
        losses = _train(model, plan.lm_steps, plan.lm_learning_rate, _lm_inputs(tokenizer, enhance_batches(plan.seed + 1, plan.lm_batch)))
        seconds = time.perf_counter() - start
    _save(model, tokenizer, path, "Qwen2 text model (tiny), trained to enrich a colour-and-motion caption")
    return {"train_s": round(seconds, 1), "steps": plan.lm_steps, "final_loss": round(float(np.mean(losses[-20:])), 4)}



def _save_preprocessor(path: Path) -> None:
    """``preprocessor_config.json`` as Qwen2.5-VL checkpoints ship it: vLLM builds its image
    and video processors from it. Written as data, because transformers' video processor
    needs torchvision, which the main venv does not have.

    The pixel cap is daskcap's own per-frame maximum, not the checkpoint's 12.8 MP: vLLM
    sizes its start-up profile with a dummy video at the cap, and daskcap never sends more.
    """
    import json

    from daskcap.engines.vision import CLIP_MEAN_VALUES, CLIP_STD_VALUES
    from daskcap.video.windows import QWEN2_5_VL

    spec = QWEN2_5_VL.patches
    config = {
        "min_pixels": 4 * spec.factor**2,
        "max_pixels": QWEN2_5_VL.max_pixels,
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "merge_size": spec.merge_size,
        "image_mean": list(CLIP_MEAN_VALUES),
        "image_std": list(CLIP_STD_VALUES),
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
    }
    (path / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def _save(model, tokenizer, path: Path, description: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "README.md").write_text(
        f"# {description}\n\nBuilt and trained offline by `daskcap tiny-models` for tests and the demo, on synthetic "
        "clips of one coloured square moving over grey noise. It only knows those clips: real captions need real weights.\n"
    )
    return path
