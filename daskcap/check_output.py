"""``daskcap check OUTPUT``: recompute the caption flags of a finished run.

New rules and thresholds then apply to old runs without running a model: each
window table part is read, its windows are checked (a part holds whole clips,
as the clip-level rules need), and the part is rewritten with the new
``caption_flags`` and ``enhance_flags``; ``summary.json`` gets the new counts
and the review page, when the run has one, is rebuilt.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from daskcap import schema
from daskcap.prompts import ENHANCE_PROMPTS
from daskcap.stages.check import CHECKED, FLAGS, CaptionCheckStage, check_windows, count_flags
from daskcap.storage import atomic_write_json, atomic_write_parquet, output_fs, parquet_parts

# What the checks read from a window table.
_INPUT_COLUMNS = ["clip_id", "prompt", "caption", "caption_finish_reason", "enhanced_caption", "enhance_finish_reason"]
EXAMPLE_CHARS = 70


@dataclass
class CheckResult:
    output: str
    written: bool
    counts: dict  # flags column -> count_flags(...)
    examples: dict = field(default_factory=dict)  # (flags column, flag) -> (clip_id, text)


def _enhance_prompt(summary: dict) -> str | None:
    enhance = (summary.get("config") or {}).get("enhance")
    if not enhance:
        return None
    return enhance.get("prompt_text") or ENHANCE_PROMPTS.get(enhance.get("prompt_variant", "default"))


def _with_flags(table: pa.Table, flags) -> pa.Table:
    """``table`` with its flag columns replaced (or added, for runs made before the checks)."""
    for _, _, column in CHECKED:
        values = pa.array(list(flags[column]), type=schema.WINDOW_SCHEMA.field(column).type)
        if column in table.column_names:
            table = table.set_column(table.column_names.index(column), schema.WINDOW_SCHEMA.field(column), values)
        else:
            table = table.append_column(schema.WINDOW_SCHEMA.field(column), values)
    return table


def check_output(output_path: str, params: CaptionCheckStage = CaptionCheckStage(), write: bool = True) -> CheckResult:
    """Recheck every window of a daskcap output; with ``write``, store the flags and counts."""
    fs, root = output_fs(output_path)
    summary_path = f"{root}/summary.json"
    if not fs.exists(summary_path):
        raise FileNotFoundError(f"{output_path} has no summary.json: is it a daskcap output?")
    summary = json.loads(fs.cat(summary_path))
    enhance_prompt = _enhance_prompt(summary)
    flag_lists: dict[str, list] = {column: [] for _, _, column in CHECKED}
    examples: dict = {}
    for part in parquet_parts(fs, f"{root}/windows"):
        table = pq.read_table(io.BytesIO(fs.cat(part)))
        present = [c for c in _INPUT_COLUMNS if c in table.column_names]
        windows = schema.table_to_frame(table.select(present))
        for column in set(_INPUT_COLUMNS) - set(present):
            windows[column] = None
        flagged = check_windows(windows, params, enhance_prompt)
        for text_column, _, column in CHECKED:
            flag_lists[column].extend(flagged[column])
            for clip_id, text, flags in zip(flagged["clip_id"], flagged[text_column], flagged[column], strict=True):
                for flag in flags or ():
                    examples.setdefault((column, flag), (clip_id, text))
        if write:
            atomic_write_parquet(fs, part, _with_flags(table, flagged))
    counts = {column: count_flags(values) for column, values in flag_lists.items()}
    if write:
        summary.update(counts)
        summary["caption_checks"] = asdict(params)
        atomic_write_json(fs, summary_path, summary)
        if fs.exists(f"{root}/report/index.html"):
            from daskcap.report import build_report

            build_report(output_path)
    return CheckResult(output_path, write, counts, examples)


def format_table(result: CheckResult) -> str:
    """flag, count, share of the checked texts, one example, per flags column."""
    lines = []
    for text_column, _, column in CHECKED:
        counts = result.counts[column]
        if not counts["checked"]:
            continue
        lines.append(f"{column}: {counts['flagged']} of {counts['checked']} {text_column}s flagged")
        lines.append(f"  {'flag':<13} {'count':>7} {'share':>7}  example")
        for flag in FLAGS:
            n = counts["by_flag"].get(flag, 0)
            example = ""
            if (column, flag) in result.examples:
                clip_id, text = result.examples[(column, flag)]
                shown = text.replace("\n", " ")
                shown = shown if len(shown) <= EXAMPLE_CHARS else shown[: EXAMPLE_CHARS - 1] + "…"
                example = f"{clip_id}: {shown!r}"
            lines.append(f"  {flag:<13} {n:>7} {n / counts['checked']:>7.1%}  {example}")
    if not lines:
        lines.append("no captions to check")
    lines.append(f"{'written to' if result.written else 'not written (--no-write):'} {result.output}")
    return "\n".join(lines)
