"""Evaluation metrics: geography of embedding spaces, ranking quality, tokenizer health."""

from lgsid_pipeline.metrics.codebook import (
    code_churn,
    collision_rate,
    largest_bucket,
    perplexity,
    utilisation,
)
from lgsid_pipeline.metrics.geography import (
    coverage_at_k,
    coverage_by_level,
    neighbour_overlap_at_k,
    nmi_of_assignment,
    nmi_vs_labels,
    similarity_at_k,
)
from lgsid_pipeline.metrics.ranking import (
    TopKAccumulator,
    auc,
    hit_at_k,
    logloss,
    mean_kendall_tau,
    ndcg_at_k,
    top1_accuracy,
)

__all__ = [
    "TopKAccumulator",
    "auc",
    "code_churn",
    "collision_rate",
    "coverage_at_k",
    "coverage_by_level",
    "hit_at_k",
    "largest_bucket",
    "logloss",
    "mean_kendall_tau",
    "ndcg_at_k",
    "neighbour_overlap_at_k",
    "nmi_of_assignment",
    "nmi_vs_labels",
    "perplexity",
    "similarity_at_k",
    "top1_accuracy",
    "utilisation",
]
