"""How much geography an embedding space holds (METHOD section 6), for before/after tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lgsid_pipeline.metrics.geography import coverage_by_level, nmi_vs_labels, similarity_at_k

GEOGRAPHY_KEYS = (
    "nmi_level1",
    "nmi_level2",
    "p_at_5",
    "p_at_10",
    "c_at_5",
    "c_at_10",
    "t_at_5",
    "t_at_10",
    "similarity_at_10",
)


def admin_labels(items: pd.DataFrame) -> dict[str, list]:
    """Level 1/2/3 labels per item (missing = outside every polygon)."""
    return {f"level{n}": items[f"admin_l{n}_code"].astype("string").tolist() for n in (1, 2, 3)}


def geography_metrics(
    embeddings: np.ndarray, items: pd.DataFrame, reference: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """NMI vs admin levels 1-2, P/C/T@5/10 and Similarity@10 against the reference space."""
    if len(embeddings) != len(items) or len(reference) != len(items):
        raise ValueError(
            f"{len(items)} items but {len(embeddings)} embeddings and "
            f"{len(reference)} reference embeddings"
        )
    labels = admin_labels(items)
    metrics = {
        "nmi_level1": nmi_vs_labels(embeddings, labels["level1"], seed=seed),
        "nmi_level2": nmi_vs_labels(embeddings, labels["level2"], seed=seed),
        **coverage_by_level(embeddings, labels, ks=(5, 10)),
        "similarity_at_10": similarity_at_k(embeddings, reference, k=10),
    }
    return {k: float(metrics[k]) for k in GEOGRAPHY_KEYS}
