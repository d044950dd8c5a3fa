"""Semantic-ID tokenizers: LGSID (geographic primary level + residual codebooks), RQ-KMeans and
RQ-VAE behind one interface, and the incremental semantic-ID table."""

from lgsid_pipeline.tokenizer.base import Tokenizer, TokenizerNotFittedError, check_embeddings
from lgsid_pipeline.tokenizer.codes import (
    SemanticIdResult,
    StaleEmbeddingsError,
    format_codes,
    incremental_semantic_ids,
    level_columns,
    parse_code,
)
from lgsid_pipeline.tokenizer.config import TokenizerConfig
from lgsid_pipeline.tokenizer.evaluate import SUMMARY_KEYS, tokenizer_report
from lgsid_pipeline.tokenizer.models import (
    TOKENIZERS,
    LgsidTokenizer,
    RqKMeansTokenizer,
    RqVaeTokenizer,
)

__all__ = [
    "SUMMARY_KEYS", "TOKENIZERS", "LgsidTokenizer", "RqKMeansTokenizer", "RqVaeTokenizer",
    "SemanticIdResult", "StaleEmbeddingsError", "Tokenizer", "TokenizerConfig",
    "TokenizerNotFittedError", "check_embeddings", "format_codes", "incremental_semantic_ids",
    "level_columns", "parse_code", "tokenizer_report",
]
