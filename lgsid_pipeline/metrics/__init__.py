"""Evaluation metrics: geography of embedding spaces, ranking quality, tokenizer health."""

from lgsid_pipeline.lazy import lazy_exports

_EXPORTS = {
    "code_churn": "codebook",
    "collision_rate": "codebook",
    "largest_bucket": "codebook",
    "perplexity": "codebook",
    "utilisation": "codebook",
    "coverage_at_k": "geography",
    "coverage_by_level": "geography",
    "neighbour_overlap_at_k": "geography",
    "nmi_of_assignment": "geography",
    "nmi_vs_labels": "geography",
    "similarity_at_k": "geography",
    "TopKAccumulator": "ranking",
    "auc": "ranking",
    "hit_at_k": "ranking",
    "logloss": "ranking",
    "mean_kendall_tau": "ranking",
    "ndcg_at_k": "ranking",
    "top1_accuracy": "ranking",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
