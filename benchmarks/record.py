"""What the benchmark scripts share: saving their record."""

from __future__ import annotations

import json
from pathlib import Path


def save(path: Path | None, record: dict) -> None:
    """Write ``record`` as JSON to ``path`` (nothing when no path was asked for)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
