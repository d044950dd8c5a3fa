"""Text encoder for item prompts: the prompt template, the encoder, LoRA adapters."""

from lgsid_pipeline.lazy import lazy_exports

_EXPORTS = {
    "TextEncoder": "model",
    "bf16_agreement": "model",
    "bf16_supported": "model",
    "default_encoder_path": "model",
    "item_prompt": "prompt",
    "item_prompts": "prompt",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
