"""``daskcap report OUTPUT``: a self-contained review page for a run's output.

The page (``OUTPUT/report/index.html``) is plain HTML, CSS and JS rendered
with Jinja2 from the Parquet tables and ``summary.json``; it needs no server
and no network (it works from ``file://``). Previews are referenced from
``OUTPUT/previews/``, not inlined.
"""

from __future__ import annotations

import json
import math


import pandas as pd
import pyarrow.parquet as pq
from jinja2 import Environment, PackageLoader, select_autoescape

from daskcap.stages.check import FLAGS
from daskcap.storage import atomic_write_bytes, output_fs, parquet_parts

# The columns the page shows; bytes (mp4s, previews, model input) stay out.
WINDOW_COLUMNS = [
    "video_path", "clip_id", "clip_index", "clip_start_s", "clip_end_s", "window_index", "start_frame", "end_frame",
    "fps", "num_sampled_frames", "preview_path", "caption", "stage1_caption", "enhanced_caption", "caption_model",
    "enhance_model", "caption_output_tokens", "caption_finish_reason", "status", "error", "caption_flags", "enhance_flags",
]
VIDEO_COLUMNS = ["video_path", "status", "error", "duration_s", "fps", "width", "height", "codec", "num_clips", "num_windows"]


def _read_table(fs, path: str, columns: list[str]) -> pd.DataFrame:
    frames = []
    for file in parquet_parts(fs, path):
        with fs.open(file, "rb") as handle:
            schema_names = pq.read_schema(handle).names
            handle.seek(0)
            frames.append(pq.read_table(handle, columns=[c for c in columns if c in schema_names]).to_pandas())
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    for column in columns:
        if column not in frame:
            frame[column] = None
    return frame[columns]


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-safe rows: NaN/NA become null."""
    rows = json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def _json_for_script(payload) -> str:
    # Safe inside <script type="application/json"> whatever a name or caption holds: no "<" at
    # all (a "</script>" would close it early, a "<!--<script" keep it open past its end), and
    # ASCII only (a name's undecodable bytes, kept as lone surrogates, could not be written as UTF-8).
    return json.dumps(payload, ensure_ascii=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def build_report(output_path: str) -> str:
    """Write ``OUTPUT/report/index.html``; return its path."""
    fs, root = output_fs(output_path)
    summary_path = f"{root}/summary.json"
    if not fs.exists(summary_path):
        raise FileNotFoundError(f"{output_path} has no summary.json: is it a daskcap output?")
    summary = json.loads(fs.cat(summary_path))
    windows = _read_table(fs, f"{root}/windows", WINDOW_COLUMNS)
    windows = windows.sort_values(["video_path", "clip_index", "window_index"], kind="stable")
    videos = _read_table(fs, f"{root}/videos", VIDEO_COLUMNS)
    stages = sorted(summary.get("stage_seconds", {}).items(), key=lambda item: -item[1])
    environment = Environment(loader=PackageLoader("daskcap.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    engine_workers = [w for w in summary.get("workers", {}).values() if w.get("engine")]
    models = sorted({m for w in engine_workers for m in w.get("model_loads", {})} | set(windows["caption_model"].dropna()) | set(windows["enhance_model"].dropna()))
    flag_counts = {
        flag: {what: summary[key]["by_flag"].get(flag, 0) for what, key in (("caption", "caption_flags"), ("enhanced", "enhance_flags")) if key in summary}
        for flag in FLAGS
    }
    html = environment.get_template("index.html.j2").render(
        summary=summary,
        flag_counts=flag_counts if any(key in summary for key in ("caption_flags", "enhance_flags")) else {},
        stages=stages,
        max_stage_seconds=max([s for _, s in stages], default=0) or 1,
        models=models,
        config_json=json.dumps(summary.get("config", {}), indent=2),
        windows_json=_json_for_script(_records(windows)),
        videos_json=_json_for_script(_records(videos)),
    )
    page = f"{root}/report/index.html"
    atomic_write_bytes(fs, page, html.encode())
    return page if "://" not in output_path else f"{output_path.rstrip('/')}/report/index.html"


def main(output_path: str) -> int:
    print(build_report(output_path))
    return 0


__all__ = ["build_report", "main"]
