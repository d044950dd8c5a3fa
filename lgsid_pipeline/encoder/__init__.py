"""Text encoder for item prompts: the prompt template, the encoder, LoRA adapters."""

from lgsid_pipeline.encoder.model import (
    TextEncoder,
    bf16_agreement,
    bf16_supported,
    default_encoder_path,
)
from lgsid_pipeline.encoder.prompt import item_prompt, item_prompts

__all__ = [
    "TextEncoder",
    "bf16_agreement",
    "bf16_supported",
    "default_encoder_path",
    "item_prompt",
    "item_prompts",
]
