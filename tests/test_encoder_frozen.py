"""The frozen encoder (no transformers, no peft) computes what TextEncoder computes on the
same weights and adapter, refuses what it cannot reproduce, and imports neither library."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_tiny_encoder

from lgsid_pipeline.encoder import frozen
from lgsid_pipeline.encoder.frozen import FrozenEncoder
from lgsid_pipeline.encoder.model import TextEncoder

TEXTS = [
    "Joe's Pizza. Category: Pizza Place. In Greenwich Village, Manhattan, New York.",
    "Starbucks. Category: Coffee Shop. Brand: Starbucks.",
    "x",
    "a very long venue description " * 40,  # truncated at max_length
]


@pytest.fixture(scope="module")
def tiny_with_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, TextEncoder]:
    folder = tmp_path_factory.mktemp("frozen")
    base = make_tiny_encoder(folder / "tiny")
    aligned = TextEncoder.load(base)
    aligned.add_lora(r=4, alpha=8)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change something
        for name, weight in aligned.model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    return base, aligned.save_adapter(folder / "adapter"), aligned


def test_same_tokens_vectors_and_versions_as_text_encoder(
    tiny_with_adapter: tuple[Path, Path, TextEncoder],
) -> None:
    base, adapter, aligned = tiny_with_adapter
    reference = TextEncoder.load(base)
    for lean, full in (
        (FrozenEncoder.load(base), reference),
        (FrozenEncoder.load(base, adapter), aligned),
    ):
        assert lean.version == full.version and lean.dim == full.dim
        ours, theirs = lean.tokenize(TEXTS), full.tokenize(TEXTS)
        assert all(torch.equal(ours[k], theirs[k]) for k in ("input_ids", "attention_mask"))
        np.testing.assert_allclose(
            lean.encode(TEXTS, batch_size=2, dtype="fp32"),
            full.encode(TEXTS, batch_size=2, dtype="fp32"),
            atol=1e-5,
        )
        bf16 = (lean.encode(TEXTS, dtype="bf16") * full.encode(TEXTS, dtype="bf16")).sum(1)
        assert bf16.min() > 0.999
    # the merge matters: with the adapter the vectors move
    assert not np.allclose(
        FrozenEncoder.load(base).encode(TEXTS, dtype="fp32"),
        FrozenEncoder.load(base, adapter).encode(TEXTS, dtype="fp32"),
        atol=1e-3,
    )


def test_refuses_what_it_cannot_reproduce(
    tiny_with_adapter: tuple[Path, Path, TextEncoder], tmp_path: Path
) -> None:
    import shutil

    base, adapter, _ = tiny_with_adapter
    assert frozen.supports(base) and frozen.supports(base, adapter)
    dora = Path(shutil.copytree(adapter, tmp_path / "dora"))
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    assert not frozen.supports(base, dora)
    with pytest.raises(ValueError, match="not a plain BERT"):
        FrozenEncoder.load(base, dora)
    other_model = Path(shutil.copytree(base, tmp_path / "gelu_new"))
    model_config = json.loads((other_model / "config.json").read_text())
    (other_model / "config.json").write_text(json.dumps({**model_config, "hidden_act": "relu"}))
    assert not frozen.supports(other_model)
    assert not frozen.supports(tmp_path / "missing")
    # weights that are not the recorded adapter's, and an adapter of another base model
    tampered = Path(shutil.copytree(adapter, tmp_path / "tampered"))
    meta = json.loads((tampered / "lgsid_adapter.json").read_text())
    (tampered / "lgsid_adapter.json").write_text(json.dumps({**meta, "adapter_digest": "0" * 64}))
    with pytest.raises(ValueError, match="do not match their recorded digest"):
        FrozenEncoder.load(base, tampered)
    other_base = make_tiny_encoder(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="another base encoder"):
        FrozenEncoder.load(other_base, adapter)


def test_encoding_imports_no_transformers_peft_or_dynamo(
    tiny_with_adapter: tuple[Path, Path, TextEncoder],
) -> None:
    """torch._dynamo: a weight init on the meta device imports it (1.4 s of every run
    process that encodes)."""
    base, adapter, _ = tiny_with_adapter
    code = (
        "import sys; from pathlib import Path\n"
        "from lgsid_pipeline.stages.embeddings import ChampionEncoders\n"
        f"champion = ChampionEncoders(Path({str(adapter)!r}), {str(base)!r})\n"
        "for part in ('reference', 'aligned'):\n"
        "    assert champion.encoder(part).encode(['a cafe']).shape == (1, 32)\n"
        "heavy = ('transformers', 'peft', 'torch._dynamo')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
