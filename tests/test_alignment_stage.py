"""The alignment stage functions run without Dagster on a synthetic city (tiny encoder):
each writes what it owns and returns what the assets report."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ingested_home, make_tiny_encoder

from lgsid_pipeline.alignment.config import GdpoConfig, RewardConfig
from lgsid_pipeline.catalog import REWARD_MODEL, REWARD_MODEL_ASSET
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.embeddings import embedding_matrix
from lgsid_pipeline.encoder import TextEncoder
from lgsid_pipeline.encoder.prompt import item_prompts
from lgsid_pipeline.geo.negatives import GeoNegativeConfig
from lgsid_pipeline.stages import alignment as stage
from lgsid_pipeline.stages import embeddings
from lgsid_pipeline.stages.context import StageContext

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

CITY = "tiny"
PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    home = ingested_home(tmp_path_factory.mktemp("home"), source, CITY)
    for city in (CITY, "elsewhere"):  # registered, but only CITY gets tables
        CityRegistry(home).add(CityConfig(city, "synthetic", str(source)))
    return home


def test_alignment_stage_without_dagster(home: Path, tmp_path: Path) -> None:
    ctx = StageContext.at(home)
    warehouse, reports = ctx.warehouse, ctx.reports
    encoder_path = make_tiny_encoder(tmp_path / "encoder")
    negatives = stage.geo_negatives(ctx, CITY, GeoNegativeConfig(max_anchors=150))
    assert negatives.rows == len(warehouse.read_table("geo_negatives", CITY)) == 150 * 16
    assert negatives.metrics["anchors"] == 150 and negatives.png.startswith(PNG)
    pairs = stage.cooccurrence_pairs(ctx, CITY, 0.9, 2)
    assert pairs.rows == len(warehouse.read_table("cooccurrence_pairs", CITY))

    # the registered cities that have geo_negatives
    reward = stage.train_reward_model(ctx, TextEncoder.load(encoder_path), RewardConfig(epochs=2))
    assert reward.details["cities"] == [CITY] and reward.png.startswith(PNG)
    assert reports.read(reports.global_model(REWARD_MODEL_ASSET))["version"] == reward.version
    with pytest.raises(RuntimeError, match="no city has geo_negatives"):
        stage.train_reward_model(ctx, TextEncoder.load(encoder_path), RewardConfig(), cities=[])

    gc = stage.geo_pairs(
        ctx,
        CITY,
        TextEncoder.load(encoder_path),
        ctx.model_dir(REWARD_MODEL),
        {"n_anchors": 150, "near_km": 1.5, "per_side": 8, "cell_deg": 0.02, "seed": 0},
        seed=0,
    )
    assert gc.rows == len(warehouse.read_table("geo_pairs", CITY)) > 0

    policy = TextEncoder.load(encoder_path)
    aligned = stage.train_aligned_encoder(
        ctx, policy, GdpoConfig(steps=4, batch_size=8), max_gc_triples=40, max_dc_triples=40
    )
    assert (
        aligned.details["encoder_version"]
        == policy.version
        != TextEncoder.load(encoder_path).version
    )
    assert set(aligned.metrics) >= {"loss", "dpo", "sim", "preference_accuracy"}

    items = warehouse.read_table("items", CITY)
    encoders = {"reference": TextEncoder.load(encoder_path), "aligned": policy}
    with warehouse.staging(CITY, "embeddings") as staged:
        first = embeddings.stage_item_embeddings(warehouse, staged, CITY, items, encoders)
        assert all(a.outcome.passed for a in first.audits)
        warehouse.publish(staged, {})
    assert first.encoded == 2 * len(items) and first.metadata()["reused"] == 0

    def before_after(reference: np.ndarray, aligned: np.ndarray) -> dict | None:
        return embeddings.geography_before_after(
            ctx, CITY, items, reference, aligned, policy.version
        )

    matrices = [embedding_matrix(first.results[p].table) for p in ("reference", "aligned")]
    figures = before_after(*matrices)
    assert reports.read(reports.alignment(CITY)) == figures
    assert set(figures["before"]) == set(figures["after"])
    with warehouse.staging(CITY, "embeddings") as staged:  # nothing new: all reused
        again = embeddings.stage_item_embeddings(warehouse, staged, CITY, items, encoders)
    assert again.encoded == 0 and again.metadata()["reused"] == len(items)
    np.testing.assert_array_equal(
        embedding_matrix(again.results["aligned"].table),
        embedding_matrix(first.results["aligned"].table),
    )
    # a report of this encoder is not recomputed (new items do not change what it measures);
    # a report of another encoder is
    assert before_after(np.zeros(1), np.zeros(1)) is None
    other = {**figures, "encoder_version": "an-earlier-encoder"}
    reports.write(reports.alignment(CITY), other)
    assert before_after(*matrices) == reports.read(reports.alignment(CITY)) == figures

    # the whole embeddings stage: nothing new to encode, the same version's tables published
    published = embeddings.embed_city(ctx, CITY, encoders)
    assert published.metadata()["encoded"] == 0 and published.geography is None
    assert warehouse.published(CITY, "embeddings")["version"] == published.version

    # published under this encoder version: the next run with nothing new stages nothing
    def no_staging(*args: object, **kwargs: object) -> None:
        raise AssertionError("a run with nothing new must not stage a version")

    original_staging = warehouse.staging
    warehouse.staging = no_staging  # type: ignore[method-assign]
    kept = embeddings.embed_city(ctx, CITY, encoders)
    assert kept.unchanged and kept.version == published.version
    assert kept.metadata()["encoded"] == 0 and kept.metadata()["reused"] == len(items)
    assert all(a.outcome.passed for a in kept.staged.audits)
    warehouse.staging = original_staging  # type: ignore[method-assign]
    # one item's content changed: that item is encoded again, in a new version
    changed = items.copy()
    changed.loc[0, "content_hash"] = "changed"
    assert (
        embeddings.nothing_to_encode(ctx, CITY, changed, embeddings.part_encoders(encoders)) is None
    )
    assert (
        embeddings.nothing_to_encode(ctx, CITY, items.iloc[1:], embeddings.part_encoders(encoders))
        is None
    )
    assert (
        embeddings.nothing_to_encode(ctx, CITY, items, embeddings.part_encoders(encoders))
        is not None
    )


def _trained_looking_adapter(encoder_path: Path, folder: Path) -> tuple[TextEncoder, Path]:
    policy = TextEncoder.load(encoder_path)
    policy.add_lora()
    with torch.no_grad():  # LoRA B starts at zero
        for name, weight in policy.model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    return policy, policy.save_adapter(folder)


@pytest.mark.parametrize("frozen_path", [True, False], ids=["frozen", "transformers"])
def test_champion_encoders_load_only_what_a_run_encodes(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frozen_path: bool
) -> None:
    """A plain BERT and LoRA load as FrozenEncoders (no transformers); anything else through
    transformers and peft, the base weights once. Either gives the vectors and versions of
    TextEncoders loaded one by one, and a run with nothing new loads nothing."""
    from lgsid_pipeline.encoder import frozen

    ctx = StageContext.at(home)
    # another base per case: the module's home keeps what the other case published
    encoder_path = make_tiny_encoder(tmp_path / "encoder", seed=0 if frozen_path else 3)
    policy, adapter = _trained_looking_adapter(encoder_path, tmp_path / "adapter")
    loads: list[str] = []
    real_load = TextEncoder.load.__func__  # type: ignore[attr-defined]
    real_frozen = frozen.FrozenEncoder.load.__func__  # type: ignore[attr-defined]

    def counted(cls: type, path: object = None, max_length: int = 64) -> TextEncoder:
        loads.append(f"transformers {path}")
        return real_load(cls, path, max_length)

    def counted_frozen(cls: type, base: Path, adapter: Path | None = None) -> object:
        loads.append(f"frozen {base} {adapter is not None}")
        return real_frozen(cls, base, adapter)

    monkeypatch.setattr(TextEncoder, "load", classmethod(counted))
    monkeypatch.setattr(frozen.FrozenEncoder, "load", classmethod(counted_frozen))
    if not frozen_path:
        monkeypatch.setattr(frozen, "supports", lambda base, adapter=None: False)
    items = ctx.warehouse.read_table("items", CITY).head(40)
    champion = embeddings.ChampionEncoders(adapter, str(encoder_path))
    assert champion.version("aligned") == policy.version
    with ctx.warehouse.staging("elsewhere", "embeddings") as staged:  # nothing published yet
        fresh = embeddings.stage_item_embeddings(
            ctx.warehouse, staged, "elsewhere", items, champion, dtype="fp32"
        )
        ctx.warehouse.publish(staged, {})
    base = encoder_path.resolve()
    expected = (
        [f"frozen {base} False", f"frozen {base} True"]
        if frozen_path
        else [f"transformers {base}"]  # one base load, the adapter attached to it
    )
    assert fresh.encoded == 2 * len(items) and loads == expected
    with ctx.warehouse.staging("elsewhere", "embeddings") as staged:  # nothing new: no load
        again = embeddings.stage_item_embeddings(
            ctx.warehouse, staged, "elsewhere", items, embeddings.ChampionEncoders(adapter)
        )
    assert again.encoded == 0 and loads == expected
    aligned = real_load(TextEncoder, encoder_path)
    aligned.load_adapter(adapter)
    loaded = {"reference": real_load(TextEncoder, encoder_path), "aligned": aligned}
    for part, encoder in loaded.items():  # the same vectors as encoders loaded one by one
        np.testing.assert_allclose(
            embedding_matrix(fresh.results[part].table),
            encoder.encode(item_prompts(items), dtype="fp32"),
            atol=1e-5,
        )
        assert fresh.results[part].table["encoder_version"][0].as_py() == encoder.version

    assert not np.allclose(
        embedding_matrix(fresh.results["aligned"].table),
        embedding_matrix(fresh.results["reference"].table),
    )
    # weights other than the adapter's base: a clear error, not embeddings of another model
    other = make_tiny_encoder(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="reference encoder .* has version"):
        embeddings.ChampionEncoders(adapter, str(other)).encoder("reference")
    with pytest.raises(ValueError, match="another base encoder"):
        embeddings.ChampionEncoders(adapter, str(other)).encoder("aligned")
