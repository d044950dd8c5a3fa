"""Materialize what the recommender benchmarks start from: the real cities ingested,
aligned and tokenized with all three tokenizers (about 20 minutes on two cores).

Usage: LGSID_BENCH_HOME=... .venv/bin/python bench/prepare.py
"""

from __future__ import annotations

import time

from common import ensure_semantic_ids, isolated_home


def main() -> None:
    home = isolated_home("lgsid-prepare-")
    started = time.perf_counter()
    runs = ensure_semantic_ids()
    print(
        f"semantic IDs ready in {home} after {time.perf_counter() - started:.0f}s "
        f"({len(runs)} runs)"
    )


if __name__ == "__main__":
    main()
