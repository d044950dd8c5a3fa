"""Semantic-ID tokenizers: LGSID (geographic primary level + residual codebooks), RQ-KMeans and
RQ-VAE behind one interface, and the incremental semantic-ID table."""

from lgsid_pipeline.lazy import lazy_exports

_EXPORTS = {
    "Tokenizer": "base",
    "TokenizerNotFittedError": "base",
    "check_embeddings": "base",
    "SemanticIdResult": "semantic_ids",
    "StaleEmbeddingsError": "semantic_ids",
    "format_codes": "semantic_ids",
    "incremental_semantic_ids": "semantic_ids",
    "level_columns": "semantic_ids",
    "parse_code": "semantic_ids",
    "TokenizerConfig": "config",
    "SUMMARY_KEYS": "evaluate",
    "tokenizer_report": "evaluate",
    "TOKENIZERS": "kinds",
    "LgsidTokenizer": "lgsid",
    "RqKMeansTokenizer": "rqkmeans",
    "RqVaeTokenizer": "rqvae",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
