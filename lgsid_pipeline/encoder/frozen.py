"""A frozen BERT encoder for inference only, without transformers or peft.

Encoding new items is the one place where the encoder runs without training, and there
importing transformers' BERT and peft costs about 3 s per process on two cores (torch's
distributed tensors, the generation and masking utilities), against 0.1 s for ``tokenizers``
and ``safetensors``. A backfill of a thousand items encodes in about 5 s, so the import alone
was a third of its cost. This module runs the same computation as transformers' ``BertModel``
in eval mode (absolute positions, GELU, post-LayerNorm, scaled dot-product attention), with a
saved LoRA adapter merged into the base weights as peft's ``merge_and_unload`` does, and
pools like :class:`~lgsid_pipeline.encoder.model.TextEncoder`, whose ``version`` it shares.
Training (G-DPO) keeps transformers and peft. Tests compare both on the same weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lgsid_pipeline.encoder.model import (
    ADAPTER_CONFIG,
    ENCODE_BATCH_SIZE,
    check_model_folder,
    encode_batched,
    encoder_version,
    lora_digest,
    mean_pool,
    read_adapter_meta,
    read_adapter_weights,
    weights_fingerprint,
)

BASE_PREFIX = "base_model.model."  # how peft names the base model's modules
# LoRA settings this merge reproduces (absent or one of these); an adapter that sets any of
# them otherwise loads through peft.
PLAIN_LORA: dict[str, tuple[Any, ...]] = {
    "bias": ("none", None),
    "fan_in_fan_out": (False, None),
    "use_dora": (False, None),
    "lora_bias": (False, None),
    "alpha_pattern": ({}, None),
    "rank_pattern": ({}, None),
    "layers_to_transform": (None,),
    "modules_to_save": (None,),
}


def _bert_config(folder: Path) -> dict[str, Any] | None:
    """The model folder's config when it is a plain BERT this module runs, else None."""
    config = json.loads((folder / "config.json").read_text())
    plain = (
        config.get("model_type") == "bert"
        and config.get("hidden_act", "gelu") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )
    return config if plain else None


def _adapter_config(folder: Path) -> dict[str, Any] | None:
    """A saved adapter's LoRA config when this module merges it as peft would, else None."""
    path = folder / ADAPTER_CONFIG
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    plain = config.get("peft_type") == "LORA" and all(
        config.get(key) in allowed for key, allowed in PLAIN_LORA.items()
    )
    return config if plain else None


def supports(base: Path, adapter: Path | None = None) -> bool:
    """Whether this module can run ``base`` (with ``adapter`` merged) exactly as
    transformers and peft would: a plain BERT folder and a plain LoRA adapter."""
    try:
        folder = check_model_folder(base)
    except (FileNotFoundError, ValueError):
        return False
    return _bert_config(folder) is not None and (
        adapter is None or _adapter_config(adapter) is not None
    )


class Projections(nn.Module):
    """An attention's query, key and value projections."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)


class DenseNorm(nn.Module):
    """A projection added to the residual, then LayerNorm (BERT's post-norm sublayer end)."""

    def __init__(self, fan_in: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    """Multi-head self-attention over the real tokens, then its output sublayer."""

    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.self = Projections(hidden)
        self.output = DenseNorm(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape

        def split(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, length, self.heads, -1).transpose(1, 2)

        context = nn.functional.scaled_dot_product_attention(
            split(self.self.query), split(self.self.key), split(self.self.value), attn_mask=keep
        )
        return self.output(context.transpose(1, 2).reshape(batch, length, hidden), x)


class Intermediate(nn.Module):
    """The feed-forward expansion with GELU."""

    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One post-LayerNorm transformer layer with BERT's parameter names."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads, eps)
        self.intermediate = Intermediate(hidden, intermediate)
        self.output = DenseNorm(intermediate, hidden, eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class Embeddings(nn.Module):
    """Token, absolute position and (all zero) segment embeddings, then LayerNorm."""

    def __init__(self, config: dict[str, Any], hidden: int, eps: float) -> None:
        super().__init__()

        def table(rows: int) -> nn.Embedding:
            # an empty weight skips the random init: on the meta device that init imports
            # torch._dynamo (1.4 s, paid by every run process that loads an encoder)
            return nn.Embedding(rows, hidden, _weight=torch.empty(rows, hidden))

        self.word_embeddings = table(config["vocab_size"])
        self.position_embeddings = table(config["max_position_embeddings"])
        self.token_type_embeddings = table(config.get("type_vocab_size", 2))
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(torch.zeros_like(input_ids))
        )


class Encoder(nn.Module):
    """The stack of layers."""

    def __init__(self, layers: list[BertLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class FrozenBert(nn.Module):
    """BERT's encoder stack in eval mode (no dropout, no pooler), named as transformers
    names it, so that a ``model.safetensors`` state dict loads into it as it is."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = int(config["hidden_size"]), float(config.get("layer_norm_eps", 1e-12))
        self.dim = hidden
        self.embeddings = Embeddings(config, hidden, eps)
        heads, inner = int(config["num_attention_heads"]), int(config["intermediate_size"])
        self.encoder = Encoder(
            [BertLayer(hidden, heads, inner, eps) for _ in range(config["num_hidden_layers"])]
        )
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last hidden states (batch, length, hidden) of one padded batch."""
        x = self.embeddings(input_ids)
        keep = attention_mask.bool()[:, None, None, :]  # attend to real tokens only
        for layer in self.encoder.layer:
            x = layer(x, keep)
        return x


def merge_lora(
    state: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], config: dict[str, Any]
) -> dict[str, torch.Tensor]:
    """Base weights with a LoRA adapter merged in: W + B A * alpha / r (alpha / sqrt(r) with
    rsLoRA), the weights peft's ``merge_and_unload`` leaves."""
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
    merged = dict(state)
    for key, a in adapter.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removeprefix(BASE_PREFIX).removesuffix(".lora_A.weight")
        b = adapter[key.replace(".lora_A.", ".lora_B.")]
        weight = f"{module}.weight"
        if weight not in merged:
            raise ValueError(f"adapter targets {module}, which the base model does not have")
        merged[weight] = merged[weight] + (b.float() @ a.float()) * scale
    return merged


class FrozenEncoder:
    """Texts -> mean-pooled, L2-normalised embeddings with a frozen BERT (and merged LoRA
    adapter), loaded without transformers or peft; same ``version`` and output as
    :class:`~lgsid_pipeline.encoder.model.TextEncoder` with that adapter loaded."""

    def __init__(
        self, tokenizer: Any, model: FrozenBert, name_or_path: str, max_length: int, version: str
    ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.version = version
        self.dim = model.dim

    @classmethod
    def load(
        cls, base: str | Path, adapter: Path | None = None, max_length: int = 64
    ) -> FrozenEncoder:
        """The base encoder folder, with ``adapter`` (a saved LoRA folder) merged when
        given; ValueError when :func:`supports` says no or the adapter is of another base."""
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = check_model_folder(base)
        config = _bert_config(folder)
        adapter_config = _adapter_config(adapter) if adapter is not None else None
        if config is None or (adapter is not None and adapter_config is None):
            raise ValueError(f"{folder} (adapter {adapter}) is not a plain BERT with plain LoRA")
        tokenizer_config = (
            json.loads((folder / "tokenizer_config.json").read_text())
            if (folder / "tokenizer_config.json").is_file()
            else {}
        )
        limits = [config.get("max_position_embeddings"), tokenizer_config.get("model_max_length")]
        max_length = min([max_length, *(x for x in limits if isinstance(x, int) and x > 0)])
        state = dict(load_file(folder / "model.safetensors"))
        fingerprint = weights_fingerprint(folder)
        lora = None
        if adapter is not None and adapter_config is not None:
            meta = read_adapter_meta(adapter)
            if meta.get("base_weights", fingerprint) != fingerprint:
                raise ValueError(
                    f"adapter folder {adapter} was trained on another base encoder "
                    f"({meta.get('base')}), not {folder}"
                )
            weights = read_adapter_weights(adapter)
            lora = lora_digest(adapter_config, weights)
            if meta.get("adapter_digest") and meta["adapter_digest"] != lora:
                raise ValueError(f"adapter weights in {adapter} do not match their recorded digest")
            state = merge_lora(state, weights, adapter_config)
        with torch.device("meta"):  # no random initialisation of weights about to be loaded
            model = FrozenBert(config)
        wanted = set(model.state_dict())
        model.load_state_dict(
            {k: v for k, v in state.items() if k in wanted}, strict=True, assign=True
        )
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_length)
        pad_id = int(config.get("pad_token_id", 0))
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id))
        return cls(
            tokenizer,
            model,
            str(folder),
            max_length,
            encoder_version(fingerprint, max_length, lora),
        )

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded (to the longest), truncated input ids and attention mask."""
        encoded = self.tokenizer.encode_batch(list(texts))
        return {
            "input_ids": torch.tensor([e.ids for e in encoded], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encoded], dtype=torch.long),
        }

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenize(texts)
        return mean_pool(self.model(**batch), batch["attention_mask"])

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = ENCODE_BATCH_SIZE,
        dtype: str = "auto",
        progress: bool = False,
        before_batch: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Float32 L2-normalised embeddings (len(texts), dim), in input order (as
        :meth:`TextEncoder.encode <lgsid_pipeline.encoder.model.TextEncoder.encode>`)."""
        return encode_batched(
            self._embed, texts, self.dim, batch_size, dtype, progress, before_batch
        )
