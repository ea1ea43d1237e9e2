"""Building the tiny models once: trained unless the directory already holds this very
build (its content hash), then checked on held-out clips."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from daskcap import prompts, synthetic
from daskcap.engines.tiny.data import SOURCE_SIZES, WINDOW_SECONDS, window_frames
from daskcap.engines.tiny.training import TrainingPlan, train_lm, train_vlm
from daskcap.synthetic import COLOURS, DIRECTIONS

log = logging.getLogger(__name__)

def words_in(text: str) -> tuple[set[str], set[str]]:
    """The colour and direction words a caption names."""
    tokens = {word.strip(".,;:!?").lower() for word in text.split()}
    return tokens & set(COLOURS), tokens & set(DIRECTIONS)


def evaluate(directory: Path, plan: TrainingPlan, backend: str = "transformers") -> dict:
    """Held-out accuracy through a production engine (``backend``: transformers or vllm,
    loaded as real weights are): clips drawn from another seed than training's."""
    from daskcap.engines.base import EngineConfig, TextRequest, VideoRequest
    from daskcap.engines.factory import build_engine

    rng = np.random.default_rng(10_000 + plan.seed)
    requests, truth = [], {}
    for i in range(plan.eval_windows):
        square = synthetic.random_square(rng)
        width, height = SOURCE_SIZES[i % len(SOURCE_SIZES)]
        frames, sampled_fps = window_frames(square, width, height, 30, float(rng.choice(WINDOW_SECONDS)))
        requests.append(VideoRequest(str(i), frames, sampled_fps, prompts.CAPTION_PROMPTS["default"], 32))
        truth[str(i)] = (square.colour, square.direction)
    vlm = build_engine(EngineConfig(str(directory / "vlm"), "", backend=backend, batch_size=16))
    try:
        captions = vlm.caption(requests)
        refined = vlm.caption([replace(r, prompt=prompts.stage2_prompt(None, captions[r.request_id].text)) for r in requests])
    finally:
        vlm.close()
    colour_ok = sum(words_in(captions[k].text)[0] == {c} for k, (c, _) in truth.items())
    direction_ok = sum(words_in(captions[k].text)[1] == {d} for k, (_, d) in truth.items())
    stage2_ok = sum(words_in(refined[k].text) == ({c}, {d}) for k, (c, d) in truth.items())
    lm = build_engine(EngineConfig(str(directory / "lm"), "", role="enhance", backend=backend, batch_size=32))
    try:
        enhanced = lm.complete([TextRequest(k, prompts.enhance_prompt("default", None, g.text), 64) for k, g in captions.items()])
    finally:
        lm.close()
    kept = sum(words_in(enhanced[k].text) == words_in(captions[k].text) for k in captions)
    return {
        "windows": plan.eval_windows,
        "colour_accuracy": round(colour_ok / plan.eval_windows, 3),
        "direction_accuracy": round(direction_ok / plan.eval_windows, 3),
        "stage2_both_right": round(stage2_ok / plan.eval_windows, 3),
        "enhancement_keeps_words": round(kept / plan.eval_windows, 3),
    }


def content_hash(plan: TrainingPlan) -> str:
    """What the models depend on: this code, the prompts, the pixel pipeline, the plan and the libraries."""
    import tokenizers
    import torch
    import transformers

    from daskcap.engines import chat, hf_engine, vision
    from daskcap.video import windows

    digest = hashlib.sha256()
    sources = sorted(Path(__file__).parent.glob("*.py"))  # this package
    sources += [Path(module.__file__) for module in (synthetic, prompts, chat, hf_engine, vision, windows)]
    for source in sources:
        digest.update(source.read_bytes())
    digest.update(repr((plan, torch.__version__, transformers.__version__, tokenizers.__version__)).encode())
    return digest.hexdigest()[:16]


RECORD = "tiny-models.json"


def build_tiny_models(directory: Path, plan: TrainingPlan = TrainingPlan()) -> dict[str, Path]:
    """DIR/vlm and DIR/lm, trained unless DIR already holds this very build."""
    from filelock import FileLock

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"vlm": directory / "vlm", "lm": directory / "lm"}
    wanted = content_hash(plan)
    with FileLock(str(directory / ".build.lock")):
        record = _read_record(directory)
        if record.get("content_hash") == wanted and all((p / "config.json").is_file() for p in paths.values()):
            return paths
        log.info("training tiny models into %s (about a minute)", directory)
        record = {"content_hash": wanted, "vlm": train_vlm(paths["vlm"], plan), "lm": train_lm(paths["lm"], plan)}
        record["held_out"] = evaluate(directory, plan)
        (directory / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return paths


def _read_record(directory: Path) -> dict:
    try:
        return json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def main(directory: str) -> int:
    paths = build_tiny_models(Path(directory))
    print(json.dumps({**{name: str(path) for name, path in paths.items()}, **_read_record(Path(directory))}, indent=2))
    return 0
