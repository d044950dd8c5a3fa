"""The report store: ``LGSID_HOME/reports/``, the figures and plots each stage leaves for
``lgsid report``, the UI and the benchmarks. It owns the layout (one method per kind of
report) and the reads and writes (JSON and PNG written whole, atomically)::

    reports/
      <city>.json                          evaluation summary (CTR AUC table, generative table)
      alignment/<city>.json                geography before/after alignment
      global/<model>.json                  reward_model, aligned_encoder
      tokenizers/<kind>.json               a tokenizer's fit (every city it covers)
      tokenizers/<city>/<kind>.json        health and geography of a city's codes
      recommenders/<city>/<name>.json      a backbone's, generative kind's or the floors' figures
      plots/<city or global>/<name>.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lgsid_pipeline.atomic import write_file_atomic
from lgsid_pipeline.config import lgsid_home, validate_city_slug
from lgsid_pipeline.jsonio import read_json, write_json

GLOBAL = "global"  # plots of the global models sit beside the per-city folders


class ReportStore:
    """Paths, reads and writes of the reports under one LGSID home."""

    def __init__(self, home: Path | None = None) -> None:
        self.root = (home or lgsid_home()) / "reports"

    # ------------------------------------------------------------------ layout

    def city_summary(self, city: str) -> Path:
        return self.root / f"{validate_city_slug(city)}.json"

    def alignment(self, city: str) -> Path:
        return self.root / "alignment" / f"{validate_city_slug(city)}.json"

    def global_model(self, name: str) -> Path:
        return self.root / GLOBAL / f"{name}.json"

    def tokenizer(self, kind: str) -> Path:
        return self.root / "tokenizers" / f"{kind}.json"

    def tokenizer_codes(self, city: str, kind: str) -> Path:
        return self.root / "tokenizers" / validate_city_slug(city) / f"{kind}.json"

    def recommender(self, city: str, name: str) -> Path:
        return self.root / "recommenders" / validate_city_slug(city) / f"{name}.json"

    def plot(self, scope: str, name: str) -> Path:
        """A PNG of a city (``scope`` = its slug) or of the global models (``GLOBAL``)."""
        if scope != GLOBAL:
            validate_city_slug(scope)
        return self.root / "plots" / scope / (name if name.endswith(".png") else f"{name}.png")

    # ------------------------------------------------------------------ reads and writes

    def read(self, path: Path) -> Any | None:
        """A report's content, or None if it was never written."""
        return read_json(path)

    def write(self, path: Path, payload: Any) -> Path:
        """Write a report whole or not at all."""
        return write_json(path, payload)

    def write_png(self, path: Path, png: bytes) -> Path:
        """Write a plot whole or not at all."""
        return write_file_atomic(path, lambda tmp: tmp.write_bytes(png))

    def tokenizer_codes_reports(self, city: str) -> dict[str, Any]:
        """Every tokenizer kind's codes report of ``city``, by kind."""
        folder = self.root / "tokenizers" / validate_city_slug(city)
        found = (
            {p.stem: self.read(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
        )
        return {kind: figures for kind, figures in found.items() if figures}
