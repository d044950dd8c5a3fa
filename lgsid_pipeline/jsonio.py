"""Small JSON files written atomically (reports, global model summaries)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def write_json(path: Path, payload: Any) -> Path:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: Path) -> Any | None:
    """The JSON content of ``path``, or None if it does not exist."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
