"""G-DPO alignment of the text encoder with LoRA (METHOD section 3).

Each training example is a triple (anchor a, chosen i+, rejected i-) from D_mix = D_dc U D_gc.
log P(i | a) = log_softmax over the in-batch candidates (every chosen and rejected item of the
batch) of cos(E(a), E(i)) / tau, for the policy (encoder + LoRA) and for the frozen reference.

L_DPO = -log s(beta * [(log P_t(i+|a) - log P_ref(i+|a)) - (log P_t(i-|a) - log P_ref(i-|a))])
L_sim = mean_i ||E_t(i) - E_ref(i)||^2 - mean_{i!=j} ||E_t(i) - E_ref(j)||^2
L     = L_DPO + lambda * L_sim
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from lgsid_pipeline.alignment.config import GdpoConfig
from lgsid_pipeline.encoder import TextEncoder


def candidate_log_probs(
    anchors: torch.Tensor, candidates: torch.Tensor, tau: float
) -> torch.Tensor:
    """log P(candidate | anchor): log-softmax of cosine / tau over the in-batch candidates."""
    anchors = nn.functional.normalize(anchors, dim=-1)
    candidates = nn.functional.normalize(candidates, dim=-1)
    return torch.log_softmax(anchors @ candidates.T / tau, dim=-1)


def similarity_regulariser(policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """mean_i ||P_i - R_i||^2 - mean_{i!=j} ||P_i - R_j||^2 (keeps semantics, Eq. 7)."""
    distances = torch.cdist(policy, reference).pow(2)
    n = len(policy)
    own = distances.diagonal().mean()
    others = (distances.sum() - distances.diagonal().sum()) / max(n * (n - 1), 1)
    return own - others


def gdpo_loss(
    policy: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    reference: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: GdpoConfig,
    margins: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total G-DPO loss for a batch; ``policy``/``reference`` = (anchor, chosen, rejected)."""
    p_a, p_pos, p_neg = policy
    r_a, r_pos, r_neg = reference
    batch = len(p_a)
    index = torch.arange(batch)
    p_logp = candidate_log_probs(p_a, torch.cat([p_pos, p_neg]), config.tau)
    r_logp = candidate_log_probs(r_a, torch.cat([r_pos, r_neg]), config.tau)
    chosen = p_logp[index, index] - r_logp[index, index]
    rejected = p_logp[index, index + batch] - r_logp[index, index + batch]
    dpo = -nn.functional.logsigmoid(config.beta * (chosen - rejected))
    if config.weight_by_margin and margins is not None:
        dpo = dpo * torch.sigmoid(margins)
    dpo = dpo.mean()
    sim = similarity_regulariser(torch.cat(policy), torch.cat(reference))
    total = dpo + config.lam * sim
    parts = {
        "loss": total.item(),
        "dpo": dpo.item(),
        "sim": sim.item(),
        "preference_accuracy": (chosen > rejected).float().mean().item(),
    }
    return total, parts


def lora_train_mode(encoder: nn.Module) -> int:
    """Put ``encoder`` in training mode for G-DPO; return the number of LoRA dropout layers.

    The frozen base stays in eval mode (no base-model dropout, so the policy equals the
    reference at step 0, whose embeddings are computed in eval mode without gradients); only
    the LoRA dropout layers are switched to train mode, so ``lora_dropout`` takes effect.
    """
    from peft.tuners.lora import LoraLayer

    encoder.eval()
    switched = 0
    for module in encoder.modules():
        if isinstance(module, LoraLayer):
            module.lora_dropout.train()
            switched += len(module.lora_dropout)
    return switched


def train_gdpo(
    encoder: TextEncoder,
    anchors: Sequence[str],
    chosen: Sequence[str],
    rejected: Sequence[str],
    config: GdpoConfig,
    margins: np.ndarray | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Attach LoRA to ``encoder`` and train it with G-DPO; return the per-step history.

    Reference embeddings come from the same encoder before LoRA is attached (LoRA starts as
    the identity), so no second model is held in memory. During the steps the LoRA dropout
    layers are in train mode and the frozen base in eval mode (``lora_train_mode``); the
    encoder is back in eval mode afterwards, also when a step raises.
    """
    if not (len(anchors) == len(chosen) == len(rejected)) or not anchors:
        raise ValueError("G-DPO needs equally long, non-empty anchor/chosen/rejected lists")
    texts = list(dict.fromkeys([*anchors, *chosen, *rejected]))
    position = {t: i for i, t in enumerate(texts)}
    reference = torch.from_numpy(encoder.encode(texts, dtype="fp32"))
    encoder.add_lora(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
    optimizer = torch.optim.AdamW(encoder.trainable_parameters(), lr=config.lr)
    idx = {
        name: np.array([position[t] for t in seq])
        for name, seq in (("a", anchors), ("pos", chosen), ("neg", rejected))
    }
    margin_t = (
        torch.from_numpy(np.asarray(margins, dtype=np.float32)) if margins is not None else None
    )
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    try:
        for step in range(config.steps):
            batch = rng.choice(
                len(anchors), size=min(config.batch_size, len(anchors)), replace=False
            )
            # Set every step: on_step may call encode(), which switches modes.
            lora_train_mode(encoder)
            batch_texts = [texts[i] for name in ("a", "pos", "neg") for i in idx[name][batch]]
            embedded = encoder(batch_texts)
            n = len(batch)
            policy = (embedded[:n], embedded[n : 2 * n], embedded[2 * n :])
            ref = tuple(reference[idx[name][batch]] for name in ("a", "pos", "neg"))
            loss, parts = gdpo_loss(
                policy, ref, config, margin_t[batch] if margin_t is not None else None
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            parts["step"] = float(step + 1)
            parts["seconds"] = time.perf_counter() - started
            history.append(parts)
            if on_step:
                on_step(step + 1, parts)
    finally:
        encoder.eval()
    return history
