"""G-DPO and reward-model losses against hand computations, and G-DPO training behaviour.

The expected values are computed here in plain Python (``math``) from the formulas in METHOD
sections 2 and 3, not with the helpers under test, on asymmetric inputs: swapping chosen and
rejected, policy and reference, or dropping a term changes the value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from helpers import make_tiny_encoder
from torch import nn

from lgsid_pipeline.alignment.config import GdpoConfig
from lgsid_pipeline.alignment.gdpo import (
    candidate_log_probs,
    gdpo_loss,
    similarity_regulariser,
    train_gdpo,
)
from lgsid_pipeline.alignment.reward import listwise_bce
from lgsid_pipeline.encoder import TextEncoder

torch.set_num_threads(1)

Rows = list[list[float]]

# Batch of 2 triples in 3 dimensions; policy != reference and chosen != rejected.
POLICY: tuple[Rows, Rows, Rows] = (
    [[1.0, 0.2, -0.3], [0.1, 1.0, 0.4]],  # anchors
    [[0.9, 0.1, 0.0], [-0.2, 0.8, 0.6]],  # chosen
    [[-0.5, 0.7, 0.2], [1.0, -0.3, 0.1]],  # rejected
)
REFERENCE: tuple[Rows, Rows, Rows] = (
    [[0.8, 0.4, -0.1], [0.3, 0.9, 0.2]],
    [[0.6, 0.5, 0.1], [0.1, 0.7, 0.5]],
    [[-0.2, 0.9, 0.3], [0.7, 0.1, -0.2]],
)
CONFIG = GdpoConfig(beta=0.7, lam=1.3, tau=0.5)


def _cos(u: Sequence[float], v: Sequence[float]) -> float:
    """Cosine similarity of two plain vectors."""
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))


def _sq_dist(u: Sequence[float], v: Sequence[float]) -> float:
    """Squared Euclidean distance of two plain vectors."""
    return sum((x - y) ** 2 for x, y in zip(u, v, strict=True))


def _log_p(anchor: Sequence[float], candidates: Rows, target: int, tau: float) -> float:
    """log P(candidates[target] | anchor) = log-softmax over candidates of cos / tau."""
    scores = [_cos(anchor, c) / tau for c in candidates]
    return scores[target] - math.log(sum(math.exp(s) for s in scores))


def _hand_dpo(
    policy: tuple[Rows, Rows, Rows], reference: tuple[Rows, Rows, Rows], beta: float, tau: float
) -> float:
    """Mean over the batch of -log s(beta * (chosen log-ratio - rejected log-ratio))."""
    (pa, ppos, pneg), (ra, rpos, rneg) = policy, reference
    n = len(pa)
    losses = []
    for k in range(n):
        chosen = _log_p(pa[k], ppos + pneg, k, tau) - _log_p(ra[k], rpos + rneg, k, tau)
        rejected = _log_p(pa[k], ppos + pneg, n + k, tau) - _log_p(ra[k], rpos + rneg, n + k, tau)
        z = beta * (chosen - rejected)
        losses.append(-math.log(1.0 / (1.0 + math.exp(-z))))
    return sum(losses) / n


def _hand_sim(policy: Rows, reference: Rows) -> float:
    """mean_i ||P_i - R_i||^2 - mean_{i != j} ||P_i - R_j||^2."""
    n = len(policy)
    own = sum(_sq_dist(policy[i], reference[i]) for i in range(n)) / n
    others = [_sq_dist(policy[i], reference[j]) for i in range(n) for j in range(n) if i != j]
    return own - sum(others) / len(others)


def _tensors(rows: tuple[Rows, Rows, Rows]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchor, chosen, rejected) rows as float64 tensors."""
    a, pos, neg = (torch.tensor(r, dtype=torch.float64) for r in rows)
    return a, pos, neg


def test_gdpo_loss_matches_hand_computation() -> None:
    dpo = _hand_dpo(POLICY, REFERENCE, CONFIG.beta, CONFIG.tau)
    sim = _hand_sim([r for rows in POLICY for r in rows], [r for rows in REFERENCE for r in rows])
    total, parts = gdpo_loss(_tensors(POLICY), _tensors(REFERENCE), CONFIG)
    assert parts["dpo"] == pytest.approx(dpo, rel=1e-9)
    assert parts["sim"] == pytest.approx(sim, rel=1e-9)
    assert total.item() == pytest.approx(dpo + CONFIG.lam * sim, rel=1e-9)
    # The inputs are discriminating: each of these mistakes moves the value well past rel=1e-9.
    swapped = _hand_dpo(
        (POLICY[0], POLICY[2], POLICY[1]),
        (REFERENCE[0], REFERENCE[2], REFERENCE[1]),
        CONFIG.beta,
        CONFIG.tau,
    )
    assert abs(swapped - dpo) > 0.05
    assert abs(_hand_dpo(REFERENCE, POLICY, CONFIG.beta, CONFIG.tau) - dpo) > 0.05
    assert abs(CONFIG.lam * sim) > 0.1


def test_gdpo_loss_swapping_chosen_and_rejected_changes_it() -> None:
    policy, reference = _tensors(POLICY), _tensors(REFERENCE)
    _, parts = gdpo_loss(policy, reference, CONFIG)
    _, swapped = gdpo_loss(
        (policy[0], policy[2], policy[1]), (reference[0], reference[2], reference[1]), CONFIG
    )
    assert swapped["dpo"] != pytest.approx(parts["dpo"], abs=0.05)
    assert swapped["preference_accuracy"] == 1.0 - parts["preference_accuracy"]


def test_similarity_regulariser_matches_hand_computation() -> None:
    policy = [[1.0, 0.0], [0.5, 2.0], [-1.0, 0.3]]
    reference = [[0.8, 0.1], [0.0, 1.5], [-0.4, -0.2]]
    # own: (0.05 + 0.5 + 0.61) / 3; the six off-diagonal squared distances sum to 20.32.
    expected = 1.16 / 3 - (3.25 + 2.0 + 3.7 + 5.65 + 3.28 + 2.44) / 6
    assert _hand_sim(policy, reference) == pytest.approx(expected, rel=1e-12)
    got = similarity_regulariser(
        torch.tensor(policy, dtype=torch.float64), torch.tensor(reference, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert expected < 0  # each policy row is closer to its own reference than to the others


def test_one_gdpo_step_raises_chosen_and_lowers_rejected() -> None:
    """One SGD step on a linear 'policy' moves log P(i+|a) up and log P(i-|a) down."""
    torch.manual_seed(0)
    n, d_in, d = 6, 10, 8
    features = torch.randn(3 * n, d_in)
    reference_layer = nn.Linear(d_in, d, bias=False)
    policy_layer = nn.Linear(d_in, d, bias=False)
    with torch.no_grad():
        policy_layer.weight.copy_(reference_layer.weight + 0.05 * torch.randn(d, d_in))
        reference = reference_layer(features)
    config = GdpoConfig(lam=0.0, tau=0.5)

    def log_probs() -> tuple[torch.Tensor, torch.Tensor]:
        """Policy log P(chosen | anchor) and log P(rejected | anchor) for each triple."""
        with torch.no_grad():
            e = policy_layer(features)
            logp = candidate_log_probs(e[:n], e[n:], config.tau)
        k = torch.arange(n)
        return logp[k, k], logp[k, k + n]

    chosen_before, rejected_before = log_probs()
    optimizer = torch.optim.SGD(policy_layer.parameters(), lr=0.5)
    embedded = policy_layer(features)
    loss, _ = gdpo_loss(
        (embedded[:n], embedded[n : 2 * n], embedded[2 * n :]),
        (reference[:n], reference[n : 2 * n], reference[2 * n :]),
        config,
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    chosen_after, rejected_after = log_probs()
    assert (chosen_after - chosen_before).mean() > 1e-3
    assert (rejected_after - rejected_before).mean() < -1e-3


def test_listwise_bce_matches_hand_computation() -> None:
    logits = [[2.0, -1.0, 0.5, 0.0], [-0.5, 3.0, -2.0, 1.0]]
    labels = [[1.0, 0.25, 0.75, 0.5], [1.0, 0.5, 0.0, 0.25]]

    def hand(rows: Rows, targets: Rows) -> float:
        """Mean over lists of -sum_j [p log s(r) + (1 - p) log(1 - s(r))]."""
        per_list = []
        for r_row, p_row in zip(rows, targets, strict=True):
            total = 0.0
            for r, p in zip(r_row, p_row, strict=True):
                s = 1.0 / (1.0 + math.exp(-r))
                total -= p * math.log(s) + (1.0 - p) * math.log(1.0 - s)
            per_list.append(total)
        return sum(per_list) / len(per_list)

    expected = hand(logits, labels)
    got = listwise_bce(
        torch.tensor(logits, dtype=torch.float64), torch.tensor(labels, dtype=torch.float64)
    )
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # Soft labels matter: flipped labels give a clearly different loss.
    assert abs(hand(logits, [[1.0 - p for p in row] for row in labels]) - expected) > 0.5


@pytest.fixture(scope="module")
def tiny_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the bundled MiniLM tokenizer."""
    return make_tiny_encoder(tmp_path_factory.mktemp("encoder"))


ANCHORS = [
    "cafe in the old town",
    "bakery near the station",
    "museum of modern art",
    "sushi bar by the river",
    "bookshop on main street",
    "gym in the north district",
]
CHOSEN = [
    "coffee house in the old town",
    "bread shop at the station",
    "art gallery downtown",
    "japanese restaurant by the river",
    "library on main street",
    "fitness club north",
]
REJECTED = [
    "cafe in another city",
    "bakery far away",
    "museum in the suburbs",
    "sushi bar across the country",
    "bookshop abroad",
    "gym in the far south",
]


def _triple_log_probs(encoder: TextEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode log P(chosen | anchor) and log P(rejected | anchor) for the six triples."""
    n = len(ANCHORS)
    e = torch.from_numpy(encoder.encode([*ANCHORS, *CHOSEN, *REJECTED], dtype="fp32"))
    logp = candidate_log_probs(e[:n], e[n:], 0.05)
    k = torch.arange(n)
    return logp[k, k], logp[k, k + n]


def test_train_gdpo_step_moves_log_probs_the_right_way(tiny_encoder_path: Path) -> None:
    encoder = TextEncoder.load(tiny_encoder_path)
    chosen_before, rejected_before = _triple_log_probs(encoder)
    config = GdpoConfig(steps=1, batch_size=len(ANCHORS), lr=1e-2, lam=0.0, lora_dropout=0.0)
    history = train_gdpo(encoder, ANCHORS, CHOSEN, REJECTED, config)
    assert history[0]["dpo"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference
    chosen_after, rejected_after = _triple_log_probs(encoder)
    assert (chosen_after - chosen_before).mean() > 1e-3
    assert (rejected_after - rejected_before).mean() < -1e-3


def test_train_gdpo_runs_lora_dropout_in_train_mode(tiny_encoder_path: Path) -> None:
    """During the steps every LoRA dropout layer is active (and drops), the frozen base's
    dropout is not; afterwards the whole encoder is in eval mode again."""
    encoder = TextEncoder.load(tiny_encoder_path)
    calls: list[tuple[int, bool, bool]] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        """Note (module id, training flag, whether the output differs from the input)."""
        if isinstance(module, nn.Dropout):
            calls.append((id(module), module.training, not torch.equal(inputs[0], output)))

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        train_gdpo(
            encoder,
            ANCHORS,
            CHOSEN,
            REJECTED,
            GdpoConfig(steps=2, batch_size=len(ANCHORS), lora_dropout=0.5),
        )
    finally:
        handle.remove()
    lora = {
        id(m)
        for name, m in encoder.named_modules()
        if "lora_dropout" in name and isinstance(m, nn.Dropout)
    }
    base = {
        id(m)
        for name, m in encoder.named_modules()
        if "lora_dropout" not in name and isinstance(m, nn.Dropout)
    }
    assert lora and base
    lora_calls = [c for c in calls if c[0] in lora]
    assert {c[0] for c in lora_calls} == lora  # every LoRA dropout layer ran ...
    assert all(training and dropped for _, training, dropped in lora_calls)  # ... in train mode
    assert not any(training for i, training, _ in calls if i in base)
    assert not any(m.training for m in encoder.modules())


def test_train_gdpo_restores_eval_mode_when_a_step_fails(tiny_encoder_path: Path) -> None:
    encoder = TextEncoder.load(tiny_encoder_path)

    def fail(step: int, parts: dict[str, float]) -> None:
        """Stop training from inside the loop."""
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        train_gdpo(encoder, ANCHORS, CHOSEN, REJECTED, GdpoConfig(steps=3), on_step=fail)
    assert not any(m.training for m in encoder.modules())
