"""Every tokenizer kind, by name. Importing this module registers them all with
``Tokenizer.registry`` (each kind registers itself when its module is imported)."""

from __future__ import annotations

from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.lgsid import LgsidTokenizer
from lgsid_pipeline.tokenizer.rqkmeans import RqKMeansTokenizer
from lgsid_pipeline.tokenizer.rqvae import RqVaeTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    cls.kind: cls for cls in (LgsidTokenizer, RqKMeansTokenizer, RqVaeTokenizer)
}
