"""Encoder module: prompt template, tiny and real encoders, bf16, LoRA adapters."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_tiny_encoder
from torch import nn

from lgsid_pipeline.encoder import (
    TextEncoder,
    bf16_agreement,
    bf16_supported,
    default_encoder_path,
    item_prompt,
    item_prompts,
)
from lgsid_pipeline.encoder.model import attention_projection_names

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

FULL = (
    "Blue Bottle. Category: Coffee Shop. Brand: blue bottle. "
    "Located in Chelsea, Manhattan, New York."
)
TEXTS = [
    FULL,
    "Penn Station. Category: Train Station. Located in Midtown, Manhattan, New York.",
    "Unnamed place.",
    "a",
    "Joe's Pizza. Category: Pizza Place. Brand: joes pizza. Located in Greenwich Village, "
    "Manhattan, New York. " * 3,
    "Ichiran. Category: Ramen Restaurant. Located in Shibuya, Tokyo.",
    "",
]


def test_item_prompt_full() -> None:
    assert (
        item_prompt("Blue Bottle", "Coffee Shop", "blue bottle", "Chelsea", "Manhattan", "New York")
        == FULL
    )


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (
            ("Blue Bottle", "Coffee Shop", None, "Chelsea", "Manhattan", "New York"),
            "Blue Bottle. Category: Coffee Shop. Located in Chelsea, Manhattan, New York.",
        ),
        (
            (None, "Coffee Shop", "blue bottle", "Chelsea", "Manhattan", "New York"),
            "Coffee Shop. Brand: blue bottle. Located in Chelsea, Manhattan, New York.",
        ),
        (
            (float("nan"), "", "blue bottle", "Chelsea", None, "New York"),
            "Unnamed place. Brand: blue bottle. Located in Chelsea, New York.",
        ),
        ((None, None, None, None, None, None), "Unnamed place."),
        (
            ("Ichiran", "Ramen", pd.NA, np.nan, "  ", "Tokyo"),
            "Ichiran. Category: Ramen. Located in Tokyo.",
        ),
        (
            ("Blue Bottle", "Coffee Shop", None, None, "Manhattan", None),
            "Blue Bottle. Category: Coffee Shop. Located in Manhattan.",
        ),
        (
            ("  Blue \n Bottle ", " Coffee\tShop", " ", "Chelsea ", " Manhattan", "New  York"),
            "Blue Bottle. Category: Coffee Shop. Located in Chelsea, Manhattan, New York.",
        ),
        (("Yahoo!", "Office", None, None, None, None), "Yahoo! Category: Office."),
    ],
)
def test_item_prompt_missing_parts(parts: tuple, expected: str) -> None:
    assert item_prompt(*parts) == expected


def items_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "name": ["Blue Bottle", None, "Penn Station"],
            "category": ["Coffee Shop", "Bar", "Train Station"],
            "brand": [None, None, None],  # entirely null
            "admin_l2_name": ["Chelsea", "Williamsburg", None],
            "admin_l1_name": ["Manhattan", "Brooklyn", "Manhattan"],
            "city_name": ["New York", "New York", "New York"],
        },
        index=[10, 11, 12],
    )


def test_item_prompts_frame() -> None:
    frame = items_frame()
    assert item_prompts(frame) == [
        "Blue Bottle. Category: Coffee Shop. Located in Chelsea, Manhattan, New York.",
        "Bar. Located in Williamsburg, Brooklyn, New York.",
        "Penn Station. Category: Train Station. Located in Manhattan, New York.",
    ]
    frame["brand"] = np.nan  # an all-NaN float column
    frame["name"] = None
    assert item_prompts(frame)[0] == "Coffee Shop. Located in Chelsea, Manhattan, New York."
    assert item_prompts(frame.iloc[:0]) == []


def test_item_prompts_location_swaps_only_location() -> None:
    items = items_frame()
    order = [2, 0, 1]
    location = items.iloc[order][["admin_l2_name", "admin_l1_name", "city_name"]]
    location.index = [5, 6, 7]  # positions count, not index labels
    prompts = item_prompts(items, location=location)
    for i, j in enumerate(order):
        c, loc = items.iloc[i], items.iloc[j]
        assert prompts[i] == item_prompt(
            c["name"],
            c["category"],
            c["brand"],
            loc["admin_l2_name"],
            loc["admin_l1_name"],
            loc["city_name"],
        )
    assert prompts[0] == "Blue Bottle. Category: Coffee Shop. Located in Manhattan, New York."
    assert prompts[1] == "Bar. Located in Chelsea, Manhattan, New York."


def test_item_prompts_errors() -> None:
    items = items_frame()
    with pytest.raises(ValueError, match="rows"):
        item_prompts(items, location=items.iloc[:2])
    with pytest.raises(ValueError, match="brand"):
        item_prompts(items.drop(columns="brand"))
    with pytest.raises(ValueError, match="city_name"):
        item_prompts(items, location=items[["admin_l2_name", "admin_l1_name"]])


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("encoders") / "tiny")


@pytest.fixture
def tiny(tiny_path: Path) -> TextEncoder:
    return TextEncoder.load(tiny_path)


@pytest.fixture(scope="module")
def real() -> TextEncoder:
    return TextEncoder.load()


def test_tiny_encoder_shapes_norms_and_determinism(
    tiny_path: Path, tiny: TextEncoder, tmp_path: Path
) -> None:
    vectors = tiny.encode(TEXTS, dtype="fp32")
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    assert tiny.dim == 32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = TextEncoder.load(tiny_path)
    np.testing.assert_array_equal(again.encode(TEXTS, dtype="fp32"), vectors)
    assert again.version == tiny.version and len(tiny.version) == 16
    # Same seed in another folder: same content, same version; another seed differs.
    assert TextEncoder.load(make_tiny_encoder(tmp_path / "same")).version == tiny.version
    assert TextEncoder.load(make_tiny_encoder(tmp_path / "other", seed=1)).version != tiny.version
    assert TextEncoder.load(tiny_path, max_length=16).version != tiny.version


def test_version_stable_across_processes(tiny_path: Path, tiny: TextEncoder) -> None:
    code = (
        "from lgsid_pipeline.encoder import TextEncoder; import sys; "
        "print(TextEncoder.load(sys.argv[1]).version)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert result.stdout.strip().splitlines()[-1] == tiny.version


def test_encode_restores_order(tiny: TextEncoder) -> None:
    batches: list[int] = []
    batched = tiny.encode(TEXTS, batch_size=3, dtype="fp32", before_batch=lambda: batches.append(1))
    assert len(batches) == -(-len(TEXTS) // 3)  # asked before every batch (thread re-balancing)
    single = np.stack([tiny.encode([t], dtype="fp32")[0] for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])


def test_forward_is_differentiable_and_matches_encode(tiny: TextEncoder) -> None:
    out = tiny(TEXTS[:3])
    assert out.requires_grad and out.shape == (3, 32)
    out.sum().backward()
    np.testing.assert_allclose(
        out.detach().numpy(), tiny.encode(TEXTS[:3], dtype="fp32"), atol=1e-6
    )


def test_empty_and_bad_input(tiny: TextEncoder) -> None:
    assert tiny.encode([]).shape == (0, 32)
    with pytest.raises(ValueError):
        tiny([])
    with pytest.raises(ValueError, match="at least one"):
        bf16_agreement(tiny, [])
    with pytest.raises(TypeError):
        tiny.encode("one string")
    with pytest.raises(ValueError, match="dtype"):
        tiny.encode(["x"], dtype="fp16")
    with pytest.raises(ValueError, match="batch_size"):
        tiny.encode(["x"], batch_size=0)


def test_max_length_clamped_to_positions(tiny_path: Path) -> None:
    encoder = TextEncoder.load(tiny_path, max_length=1000)
    assert encoder.max_length == 128
    assert encoder.encode(["word " * 500]).shape == (1, 32)


def test_missing_and_invalid_model_folders(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        TextEncoder.load(missing)
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty_model"):
        TextEncoder.load(empty)
    assert default_encoder_path().joinpath("config.json").is_file()


def test_bf16_supported_is_bool() -> None:
    assert isinstance(bf16_supported(), bool)


def test_real_minilm_matches_sentence_transformers(real: TextEncoder) -> None:
    assert real.dim == 384
    vector = real.encode([FULL], dtype="fp32")[0]
    # Reference values from sentence-transformers' all-MiniLM-L6-v2 (mean pooling + L2).
    np.testing.assert_allclose(
        vector[:4], [-0.0029651, -0.0365807, 0.0155817, -0.0192840], atol=1e-5
    )
    np.testing.assert_allclose(vector[-3:], [-0.0082815, 0.0080104, -0.0457221], atol=1e-5)


def realistic_prompts(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = [
        "Blue Bottle",
        "Joe's Pizza",
        "Penn Station",
        None,
        "Ichiran",
        "Central Park",
        "Starbucks",
        "Equinox",
        "The Met",
        "Katz's Delicatessen",
    ]
    categories = [
        "Coffee Shop",
        "Pizza Place",
        "Train Station",
        "Bar",
        "Ramen Restaurant",
        "Park",
        "Gym",
        "Art Museum",
        "Deli",
        None,
    ]
    areas = [
        ("Chelsea", "Manhattan"),
        ("Williamsburg", "Brooklyn"),
        ("Astoria", "Queens"),
        ("Shibuya", "Shibuya-ku"),
        (None, "Manhattan"),
    ]
    prompts = []
    for _ in range(n):
        area = areas[rng.integers(len(areas))]
        prompts.append(
            item_prompt(
                names[rng.integers(len(names))],
                categories[rng.integers(len(categories))],
                None if rng.random() < 0.6 else "brand",
                *area,
                "New York",
            )
        )
    return prompts


def test_real_bf16_agrees_with_fp32(real: TextEncoder) -> None:
    assert bf16_agreement(real, realistic_prompts(50)) > 0.99


def test_real_semantics(real: TextEncoder) -> None:
    coffee_a, coffee_b, station = real.encode(
        [
            "Blue Bottle. Category: Coffee Shop. Located in Chelsea, Manhattan, New York.",
            "Stumptown. Category: Coffee Shop. Located in Astoria, Queens, New York.",
            "Penn Station. Category: Train Station. Located in Midtown, Manhattan, New York.",
        ],
        dtype="fp32",
    )
    assert coffee_a @ coffee_b > coffee_a @ station


def contrastive_step(encoder: TextEncoder) -> None:
    """One AdamW step pulling paired texts together against in-batch negatives."""
    optimizer = torch.optim.AdamW(encoder.trainable_parameters(), lr=1e-2)
    anchors = encoder(["coffee shop chelsea", "train station midtown", "ramen shibuya"])
    positives = encoder(["espresso bar chelsea", "railway terminal midtown", "noodles tokyo"])
    loss = nn.functional.cross_entropy(anchors @ positives.T / 0.05, torch.arange(3))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def test_lora_trains_only_adapter_and_changes_version(tiny: TextEncoder) -> None:
    base_version = tiny.version
    before = tiny.encode(TEXTS, dtype="fp32")
    tiny.add_lora(r=4, alpha=8)
    trainable = [n for n, p in tiny.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(tiny.trainable_parameters()) == len(trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"query", "key", "value"}
    lora_version = tiny.version
    assert lora_version != base_version
    np.testing.assert_allclose(tiny.encode(TEXTS, dtype="fp32"), before, atol=1e-6)
    contrastive_step(tiny)
    assert np.abs(tiny.encode(TEXTS, dtype="fp32") - before).max() > 1e-4
    assert tiny.version not in (base_version, lora_version)
    with pytest.raises(ValueError, match="already"):
        tiny.add_lora()


def test_adapter_round_trip(tiny_path: Path, tiny: TextEncoder, tmp_path: Path) -> None:
    tiny.add_lora()
    contrastive_step(tiny)
    folder = tmp_path / "adapters" / "aligned"
    tiny.save_adapter(folder)
    contrastive_step(tiny)
    tiny.save_adapter(folder)  # replaces the previous adapter in place
    # one visible folder; the versions behind its link and no temp folders are hidden
    assert sorted(p.name for p in folder.parent.iterdir() if p.name[0] != ".") == ["aligned"]
    assert not list(folder.parent.glob(".aligned.tmp-*"))
    fresh = TextEncoder.load(tiny_path)
    fresh.load_adapter(folder)
    # The frozen adapter encodes through merged weights, the trainable one does not: the
    # same figures up to rounding (bf16 rounds the merged and the split products apart).
    np.testing.assert_allclose(fresh.encode(TEXTS), tiny.encode(TEXTS), atol=2e-2)
    np.testing.assert_allclose(
        fresh.encode(TEXTS, dtype="fp32"), tiny.encode(TEXTS, dtype="fp32"), atol=1e-5
    )
    assert fresh.version == tiny.version
    assert not fresh.trainable_parameters()


def test_frozen_adapter_encodes_through_merged_weights(
    tiny_path: Path, tiny: TextEncoder, tmp_path: Path
) -> None:
    tiny.add_lora()
    contrastive_step(tiny)
    tiny.save_adapter(tmp_path / "aligned")
    frozen = TextEncoder.load(tiny_path)
    frozen.load_adapter(tmp_path / "aligned")
    merged = frozen.inference_model()
    assert merged is not frozen.model and merged is frozen.inference_model()  # made once
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        split = frozen(TEXTS).numpy()  # forward runs the adapter unmerged
    np.testing.assert_allclose(frozen.encode(TEXTS, dtype="fp32"), split, atol=1e-5)
    # New adapter weights: the merged copy is made again, not served stale.
    with torch.no_grad():
        for name, param in frozen.model.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)
    assert frozen.inference_model() is not merged
    with torch.no_grad():
        changed = frozen(TEXTS).numpy()
    assert np.abs(changed - split).max() > 1e-3
    np.testing.assert_allclose(frozen.encode(TEXTS, dtype="fp32"), changed, atol=1e-5)
    # A trainable adapter is encoded as it is (its weights change every step).
    assert tiny.inference_model() is tiny.model


def test_corrupt_or_missing_adapter(tiny_path: Path, tiny: TextEncoder, tmp_path: Path) -> None:
    tiny.add_lora()
    contrastive_step(tiny)
    folder = tiny.save_adapter(tmp_path / "broken_adapter")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    fresh = TextEncoder.load(tiny_path)
    version = fresh.version
    with pytest.raises(ValueError, match="broken_adapter"):
        fresh.load_adapter(folder)
    assert not fresh.has_adapter and fresh.version == version
    with pytest.raises(FileNotFoundError, match="no_adapter_here"):
        fresh.load_adapter(tmp_path / "no_adapter_here")
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken_adapter"):
        fresh.load_adapter(folder)


def test_adapter_from_another_base_is_refused(tiny: TextEncoder, tmp_path: Path) -> None:
    tiny.add_lora()
    folder = tiny.save_adapter(tmp_path / "adapter")
    other = TextEncoder.load(make_tiny_encoder(tmp_path / "other", seed=3))
    with pytest.raises(ValueError, match="another base"):
        other.load_adapter(folder)


def test_attention_projection_detection() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(4, 4) for _ in range(3))
            self.out = nn.Linear(4, 4)

    assert attention_projection_names(Attention()) == ["q_proj", "k_proj", "v_proj"]
    with pytest.raises(ValueError, match="target_modules"):
        attention_projection_names(nn.Sequential(nn.Linear(4, 4)))
