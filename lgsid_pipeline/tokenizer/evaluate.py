"""Health and geography of a tokenizer's codes on one city (METHOD sections 4 and 6)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from lgsid_pipeline.alignment.evaluate import admin_labels
from lgsid_pipeline.metrics.codebook import collision_rate, largest_bucket, perplexity, utilisation
from lgsid_pipeline.metrics.geography import nmi_of_assignment
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.semantic_ids import unique_codes

# The keys every tokenizer entry of reports and bench/results/tokenizer.json carries.
SUMMARY_KEYS = (
    "utilisation_min",
    "collision_rate",
    "unique_after_dedup",
    "nmi_level1",
    "nmi_level2",
    "fit_seconds",
    "assign_items_per_s",
)


def code_health(tokens: np.ndarray, codes: list[str], codebook_sizes: list[int]) -> dict:
    """Per-level utilisation and perplexity, collisions before de-duplication, uniqueness."""
    tokens = np.asarray(tokens)
    out: dict[str, float | bool | int] = {}
    for level, k in enumerate(codebook_sizes, start=1):
        out[f"utilisation_level{level}"] = utilisation(tokens[:, level - 1], k)
        out[f"perplexity_level{level}"] = perplexity(tokens[:, level - 1], k)
    out["utilisation_min"] = min(
        out[f"utilisation_level{n}"] for n in range(1, len(codebook_sizes) + 1)
    )
    out["collision_rate"] = collision_rate(tokens)
    out["largest_bucket"] = largest_bucket(tokens)
    out["unique_after_dedup"] = bool(len(set(codes)) == len(codes))
    return out


def code_geography(tokens: np.ndarray, items: pd.DataFrame) -> dict[str, float]:
    """NMI of level-1 tokens (and of the level-1+2 prefix) against admin levels 1 and 2."""
    labels = admin_labels(items)
    tokens = np.asarray(tokens)
    out = {
        "nmi_level1": nmi_of_assignment(tokens[:, 0], labels["level1"]),
        "nmi_level2": nmi_of_assignment(tokens[:, 0], labels["level2"]),
    }
    if tokens.shape[1] > 1:
        out["nmi_prefix2_level2"] = nmi_of_assignment(tokens[:, :2], labels["level2"])
    return {k: float(v) for k, v in out.items()}


def reconstruction_error(x: np.ndarray, reconstructed: np.ndarray) -> float:
    """Mean relative L2 error ||x - x_hat|| / ||x|| of the tokenizer's reconstruction."""
    num = np.linalg.norm(x - reconstructed, axis=1)
    den = np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    return float(np.mean(num / den))


def tokenizer_report(
    tokenizer: Tokenizer,
    items: pd.DataFrame,
    embeddings: np.ndarray,
    codes: list[str] | None = None,
    assigned: tuple[np.ndarray, float, int] | None = None,
) -> dict:
    """Every figure of one tokenizer on one city's items: health, geography, reconstruction,
    fit time and assignment speed (items per second with the frozen tokenizer).

    ``assigned``: the tokens this tokenizer already gave ``items`` (row for row), with the
    seconds it took to assign the last ``n`` of them, so that they are not assigned again."""
    if assigned is None:
        started = time.perf_counter()
        tokens = tokenizer.assign(items, embeddings)
        seconds, timed = max(time.perf_counter() - started, 1e-9), len(tokens)
    else:
        tokens, seconds, timed = assigned
        seconds = max(seconds, 1e-9)
    if codes is None:
        codes = unique_codes(tokens, items["item_id"].astype(str).tolist())
    return {
        **code_health(tokens, codes, tokenizer.codebook_sizes),
        **code_geography(tokens, items),
        "reconstruction_error": reconstruction_error(embeddings, tokenizer._decode(tokens)),
        "fit_seconds": float(tokenizer.fit_seconds),
        "assign_items_per_s": float(timed / seconds),
        "items": int(len(tokens)),
    }
