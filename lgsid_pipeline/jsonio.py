"""Small JSON files written atomically (reports, global model summaries)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lgsid_pipeline.atomic import write_file_atomic


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON to ``path`` whole or not at all."""
    text = json.dumps(payload, indent=2, default=str) + "\n"
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_json(path: Path) -> Any | None:
    """The JSON content of ``path``, or None if it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
