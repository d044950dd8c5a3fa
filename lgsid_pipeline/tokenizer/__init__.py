"""Semantic-ID tokenizers: LGSID (geographic primary level + residual codebooks), RQ-KMeans and
RQ-VAE behind one interface, and the incremental semantic-ID table."""

from lgsid_pipeline.lazy import lazy_exports

_EXPORTS = {
    "Tokenizer": "base",
    "TokenizerNotFittedError": "base",
    "check_embeddings": "base",
    "SemanticIdResult": "codes",
    "StaleEmbeddingsError": "codes",
    "format_codes": "codes",
    "incremental_semantic_ids": "codes",
    "level_columns": "codes",
    "parse_code": "codes",
    "TokenizerConfig": "config",
    "SUMMARY_KEYS": "evaluate",
    "tokenizer_report": "evaluate",
    "TOKENIZERS": "models",
    "LgsidTokenizer": "models",
    "RqKMeansTokenizer": "models",
    "RqVaeTokenizer": "models",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
