"""Generative next-item recommenders over semantic-ID tokens: TIGER and a OneRec-style decoder.

Both read a user's last ``max_history`` check-ins as code tokens and generate the ``depth``
(= L + 1) tokens of the next item. TIGER is a small T5 encoder-decoder (encoder: the history
tokens, decoder: the target code); the OneRec-style model is a small causal GPT-2 over
``[history tokens, SEP, target tokens]`` with the loss on the target tokens only. Both are
built from a config with fresh weights (nothing is downloaded).

They share one training loop (teacher-forced cross-entropy, early stopping on validation
Hit@10 over a capped sample, best weights restored) and one beam search that walks the
:class:`~lgsid_pipeline.recommenders.trie.PrefixTrie` level by level, so every generated code
is a real item's and every list is free of duplicates (the beam search and the scoring of
candidate items are in :mod:`~lgsid_pipeline.recommenders.decoding`). The models differ only
in three hooks: ``target_logits`` (teacher forcing), ``prepare`` (per-example state) and
``next_logits``.

The examples they train on, and the floors they are compared with, are in
:mod:`~lgsid_pipeline.recommenders.next_item`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from lgsid_pipeline.model_files import ModelFiles
from lgsid_pipeline.recommenders.config import LEGACY_HISTORY_ENCODING, GenerativeConfig
from lgsid_pipeline.recommenders.decoding import constrained_beam_search
from lgsid_pipeline.recommenders.fitting import (
    VALID_K,
    fit_next_item,
    require_examples,
    validation_sample,
)
from lgsid_pipeline.recommenders.next_item import (
    Examples,
    fit_history,
    ranking_metrics,
)
from lgsid_pipeline.recommenders.trie import BOS, EOS, PAD, SEP, CodeVocabulary, PrefixTrie

GENERATIVE_FILES = ModelFiles(
    "generative model", meta_file="generative_config.json", weights_file="generative_model.pt"
)
CODES_ARRAY = "codes"  # the item codes the model generates (codes.npy)

# --------------------------------------------------------------------------- models


def _column(tokens: torch.Tensor, value: int) -> torch.Tensor:
    return torch.full((len(tokens), 1), value, dtype=tokens.dtype, device=tokens.device)


DecodeState = dict[str, Any]  # per-row tensors plus a key/value cache ("cache")


class GenerativeModel(nn.Module):
    """What the shared training loop and beam search need from a model.

    ``history`` is (B, max_history * depth) tokens (PAD for padding); ``targets`` (B, depth)
    and ``prefix`` (B, t) are code tokens. Decoding comes in two forms that must agree:
    ``prepare`` + ``next_logits`` recompute the whole prefix at every step (the reference),
    ``start`` + ``select`` + ``extend`` keep a key/value cache and feed one step at a time.
    """

    def __init__(self, config: GenerativeConfig, vocab_size: int, depth: int) -> None:
        super().__init__()
        self.config, self.vocab_size, self.depth = config, vocab_size, depth
        self.history_len = config.max_history * depth
        # positions the history takes in the network: one per token, or one per check-in
        self.history_positions = (
            config.max_history if config.history_encoding == "items" else self.history_len
        )

    def _check(self, history: torch.Tensor) -> None:
        if history.ndim != 2 or history.shape[1] != self.history_len:
            raise ValueError(
                f"history tokens must be (B, {self.history_len}), got {tuple(history.shape)}"
            )

    def target_logits(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, depth, vocab) for each target token."""
        raise NotImplementedError

    def prepare(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example state for decoding (every tensor's first dimension is the example)."""
        raise NotImplementedError

    def next_logits(self, state: dict[str, torch.Tensor], prefix: torch.Tensor) -> torch.Tensor:
        """Logits (B, vocab) of the token after ``prefix`` (B, t), t < depth."""
        raise NotImplementedError

    def start(self, history: torch.Tensor) -> tuple[DecodeState, torch.Tensor]:
        """Cached decoding: the state after the history and the logits (B, vocab) of the
        first code token."""
        raise NotImplementedError

    def extend(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (B, t) after what ``state`` holds (updated in place); logits
        (B, t, vocab) of the token after each of them."""
        raise NotImplementedError

    def _history_inputs(
        self, history: torch.Tensor, embed: nn.Embedding
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The history as network inputs: embeddings (B, history_positions, D) and the mask
        (1 = real) of ``config.history_encoding``; a padded check-in is masked."""
        self._check(history)
        if self.config.history_encoding == "tokens":
            return embed(history), (history != PAD).long()
        per_item = history.view(len(history), self.config.max_history, self.depth)
        return embed(per_item).sum(dim=2), (per_item != PAD).any(dim=2).long()

    @staticmethod
    def select(state: DecodeState, rows: torch.Tensor) -> None:
        """Keep (and repeat) the state rows ``rows`` in place, e.g. the parents of beams."""
        for key, value in state.items():
            if key == "cache":
                value.reorder_cache(rows)
            else:
                state[key] = value.index_select(0, rows)

    def loss(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the target code tokens."""
        self._check(history)
        logits = self.target_logits(history, targets)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))


class TigerModel(GenerativeModel):
    """TIGER: a small T5 encoder-decoder; encoder = history tokens + EOS, decoder = the code."""

    def __init__(self, config: GenerativeConfig, vocab_size: int, depth: int) -> None:
        super().__init__(config, vocab_size, depth)
        self.t5 = T5ForConditionalGeneration(
            T5Config(
                vocab_size=vocab_size,
                d_model=config.d_model,
                d_kv=config.d_model // config.n_heads,
                d_ff=config.d_ff,
                num_layers=config.n_layers,
                num_decoder_layers=config.n_layers,
                num_heads=config.n_heads,
                dropout_rate=config.dropout,
                feed_forward_proj="relu",
                pad_token_id=PAD,
                eos_token_id=EOS,
                decoder_start_token_id=BOS,
                use_cache=False,
            )
        )

    def _encoder_inputs(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and mask of the history followed by EOS."""
        embedded, mask = self._history_inputs(history, self.t5.shared)
        eos = self.t5.shared(_column(history, EOS))
        return torch.cat([embedded, eos], dim=1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)

    def target_logits(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        embedded, mask = self._encoder_inputs(history)
        decoder = torch.cat([_column(targets, BOS), targets[:, :-1]], dim=1)
        return self.t5(
            inputs_embeds=embedded, attention_mask=mask, decoder_input_ids=decoder, use_cache=False
        ).logits

    def prepare(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        embedded, mask = self._encoder_inputs(history)
        hidden = self.t5.get_encoder()(
            inputs_embeds=embedded, attention_mask=mask
        ).last_hidden_state
        return {"hidden": hidden, "mask": mask}

    def next_logits(self, state: dict[str, torch.Tensor], prefix: torch.Tensor) -> torch.Tensor:
        decoder = torch.cat([_column(prefix, BOS), prefix], dim=1)
        out = self.t5(
            encoder_outputs=BaseModelOutput(last_hidden_state=state["hidden"]),
            attention_mask=state["mask"],
            decoder_input_ids=decoder,
            use_cache=False,
        )
        return out.logits[:, -1]

    def start(self, history: torch.Tensor) -> tuple[DecodeState, torch.Tensor]:
        state: DecodeState = dict(self.prepare(history))
        logits = self._decode(state, _column(history, BOS))
        return state, logits[:, -1]

    def extend(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        return self._decode(state, tokens)

    def _decode(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        out = self.t5(
            encoder_outputs=BaseModelOutput(last_hidden_state=state["hidden"]),
            attention_mask=state["mask"],
            decoder_input_ids=tokens,
            cache=state.get("cache"),
            use_cache=True,
        )
        state["cache"] = out.cache
        return out.logits


class OneRecModel(GenerativeModel):
    """OneRec-style decoder: a small causal GPT-2 over [history, SEP, target tokens]."""

    def __init__(self, config: GenerativeConfig, vocab_size: int, depth: int) -> None:
        super().__init__(config, vocab_size, depth)
        self.gpt = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=vocab_size,
                n_positions=self.history_positions + 1 + depth,
                n_embd=config.d_model,
                n_layer=2 * config.n_layers,
                n_head=config.n_heads,
                n_inner=config.d_ff,
                resid_pdrop=config.dropout,
                embd_pdrop=config.dropout,
                attn_pdrop=config.dropout,
                bos_token_id=BOS,
                eos_token_id=EOS,
                pad_token_id=PAD,
                use_cache=False,
            )
        )

    def _prefix(
        self, history: torch.Tensor, tail: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and mask of [history, SEP, tail] (``tail``: code tokens, never PAD)."""
        embedded, mask = self._history_inputs(history, self.gpt.transformer.wte)
        after = torch.cat([_column(history, SEP), tail], dim=1)
        return (
            torch.cat([embedded, self.gpt.transformer.wte(after)], dim=1),
            torch.cat([mask, torch.ones_like(after)], dim=1),
        )

    def _logits(self, history: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        embedded, mask = self._prefix(history, tail)
        return self.gpt(inputs_embeds=embedded, attention_mask=mask, use_cache=False).logits

    def target_logits(self, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._logits(history, targets[:, :-1])[:, self.history_positions :]

    def prepare(self, history: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check(history)
        return {"history": history}

    def next_logits(self, state: dict[str, torch.Tensor], prefix: torch.Tensor) -> torch.Tensor:
        return self._logits(state["history"], prefix)[:, -1]

    def start(self, history: torch.Tensor) -> tuple[DecodeState, torch.Tensor]:
        embedded, mask = self._prefix(history, history[:, :0])
        state: DecodeState = {"mask": mask}
        out = self.gpt(inputs_embeds=embedded, attention_mask=mask, use_cache=True)
        state["cache"] = out.cache
        return state, out.logits[:, -1]

    def extend(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        state["mask"] = torch.cat([state["mask"], torch.ones_like(tokens)], dim=1)
        out = self.gpt(
            input_ids=tokens, attention_mask=state["mask"], cache=state["cache"], use_cache=True
        )
        state["cache"] = out.cache
        return out.logits


_MODELS: dict[str, type[GenerativeModel]] = {"tiger": TigerModel, "onerec": OneRecModel}


def build_generative_model(config: GenerativeConfig, vocabulary: CodeVocabulary) -> GenerativeModel:
    """A fresh model of ``config.kind`` sized for the code vocabulary's size and depth."""
    return _MODELS[config.kind](config, vocabulary.vocab_size, vocabulary.depth)


# --------------------------------------------------------------------------- training


@dataclass
class GenerativeResult:
    """A trained model (best-validation weights), its config, vocabulary, trie and history."""

    model: GenerativeModel
    config: GenerativeConfig
    vocabulary: CodeVocabulary
    trie: PrefixTrie
    history: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_valid_hit10: float = float("nan")


def _check_codes(result: GenerativeResult, codes: np.ndarray) -> None:
    if not np.array_equal(result.vocabulary.codes, np.asarray(codes)):
        raise ValueError("codes differ from the ones the model was trained with")


def recommend_top_k(
    result: GenerativeResult, codes: np.ndarray, histories: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Items (S, k) and scores (S, k), best first, from the constrained beam search (beam
    ``max(config.beam_size, k)``) for histories (S, N) of item indices (-1 = padding)."""
    _check_codes(result, codes)
    config, vocab = result.config, result.vocabulary
    tokens = vocab.history_tokens(fit_history(histories, config.max_history, vocab.n_items))
    beam = max(config.beam_size, k)
    items, scores = [np.zeros((0, k), dtype=np.int64)], [np.zeros((0, k), dtype=np.float32)]
    for start in range(0, len(tokens), config.eval_batch_size):
        chunk = torch.from_numpy(tokens[start : start + config.eval_batch_size])
        got_items, got_scores = constrained_beam_search(result.model, chunk, result.trie, beam, k)
        items.append(got_items)
        scores.append(got_scores)
    return np.concatenate(items), np.concatenate(scores)


def evaluate_generative(
    result: GenerativeResult, codes: np.ndarray, examples: Examples, ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    """Hit@k and NDCG@k (for each k in ``ks``) of the beam-search top-K on ``examples``."""
    histories, targets = examples
    items, _ = recommend_top_k(result, codes, histories, max(ks))
    return ranking_metrics(items, np.asarray(targets), ks)


def train_generative(
    config: GenerativeConfig,
    codes: np.ndarray,
    splits: dict[str, Examples],
    on_eval: Callable[[dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> GenerativeResult:
    """Train a fresh model of ``config.kind`` on ``splits["train"]`` for ``config.steps``
    optimizer steps; every ``eval_every`` steps evaluate Hit@10 on up to ``max_valid_eval``
    sampled ``splits["valid"]`` examples, stop after ``patience`` evaluations without
    improvement and keep the best evaluation's weights. ``on_eval`` gets each evaluation's
    entry (step, epoch, train loss since the last one, valid Hit/NDCG@10, seconds, ETA)."""
    vocabulary = CodeVocabulary(codes)
    if vocabulary.n_items < VALID_K:
        raise ValueError(f"need at least {VALID_K} items, got {vocabulary.n_items}")
    (train_h, train_t), (valid_h, valid_t) = splits["train"], splits["valid"]
    require_examples(len(train_t), len(valid_t))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_generative_model(config, vocabulary).to(device)
    result = GenerativeResult(model, config, vocabulary, PrefixTrie(vocabulary))
    history = torch.from_numpy(
        vocabulary.history_tokens(fit_history(train_h, config.max_history, vocabulary.n_items))
    )
    targets = torch.from_numpy(vocabulary.item_tokens(np.asarray(train_t)))
    pick = validation_sample(len(valid_t), config, rng)
    valid = (np.asarray(valid_h)[pick], np.asarray(valid_t)[pick])
    fitted = fit_next_item(
        model,
        config,
        len(targets),
        lambda rows: model.loss(history[rows].to(device), targets[rows].to(device)),
        lambda: evaluate_generative(result, codes, valid, ks=(VALID_K,)),
        rng,
        extra=lambda step: {"epoch": step * config.batch_size / len(targets)},
        on_eval=on_eval,
    )
    result.history, result.best_step = fitted.history, fitted.best_step
    result.best_valid_hit10 = float(fitted.best_score[0])
    return result


def save_generative(result: GenerativeResult, folder: Path, extra: dict | None = None) -> Path:
    """Write ``generative_config.json`` (config, history), ``generative_model.pt`` (state
    dict) and ``codes.npy`` to ``folder`` as one folder."""
    return GENERATIVE_FILES.save(
        folder,
        result.model,
        {
            "config": asdict(result.config),
            "history": result.history,
            "best_step": result.best_step,
            "best_valid_hit10": result.best_valid_hit10,
            **(extra or {}),
        },
        arrays={CODES_ARRAY: result.vocabulary.codes},
    )


def load_generative(folder: Path) -> GenerativeResult:
    """Load what :func:`save_generative` wrote, in eval mode; a missing or corrupt file
    raises :class:`~lgsid_pipeline.model_files.ModelFileError` naming it."""
    meta = GENERATIVE_FILES.read_meta(folder)
    with GENERATIVE_FILES.reading(Path(folder) / GENERATIVE_FILES.meta_file):
        config = GenerativeConfig(**{"history_encoding": LEGACY_HISTORY_ENCODING, **meta["config"]})
    codes_path = Path(folder) / f"{CODES_ARRAY}.npy"
    with GENERATIVE_FILES.reading(codes_path):
        vocabulary = CodeVocabulary(GENERATIVE_FILES.read_array(folder, CODES_ARRAY))
    model = GENERATIVE_FILES.load_weights(folder, build_generative_model(config, vocabulary))
    return GenerativeResult(
        model,
        config,
        vocabulary,
        PrefixTrie(vocabulary),
        meta.get("history", []),
        int(meta.get("best_step", 0)),
        float(meta.get("best_valid_hit10", float("nan"))),
    )
