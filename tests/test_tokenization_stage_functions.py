"""The tokenization stage functions run without Dagster on a synthetic city (tiny encoder):
the encoder check stops a fit on stale embeddings, a fit registers and reports, and codes
are assigned incrementally into a staged version with their audits."""

from pathlib import Path

import pytest
from helpers import ingested_home, make_tiny_encoder

from lgsid_pipeline.catalog import TOKENIZER_KINDS, tokenizer_model
from lgsid_pipeline.encoder import TextEncoder
from lgsid_pipeline.registry import champion_folder
from lgsid_pipeline.stages import embeddings, semantic_ids, tokenization
from lgsid_pipeline.stages.context import StageContext
from lgsid_pipeline.tokenizer.base import Tokenizer
from lgsid_pipeline.tokenizer.config import TokenizerConfig
from lgsid_pipeline.tokenizer.evaluate import tokenizer_report
from lgsid_pipeline.tokenizer.semantic_ids import aligned_embeddings
from lgsid_pipeline.warehouse import Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

CITY = "tiny"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = ingested_home(tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("source"), CITY)
    warehouse = Warehouse(home)
    encoders = {
        part: TextEncoder.load(make_tiny_encoder(tmp_path_factory.mktemp(part), seed=seed))
        for seed, part in enumerate(embeddings.EMBEDDING_PARTS)
    }
    with warehouse.staging(CITY, "embeddings") as staged:
        embeddings.stage_item_embeddings(
            warehouse, staged, CITY, warehouse.read_table("items", CITY), encoders
        )
        warehouse.publish(staged, {})
    return home, {part: e.version for part, e in encoders.items()}


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_tokenization_stage_without_dagster(home: tuple[Path, dict[str, str]], kind: str) -> None:
    root, versions = home
    ctx = StageContext.at(root)
    warehouse, reports = ctx.warehouse, ctx.reports
    inputs = {CITY: tokenization.city_embeddings(warehouse, CITY, kind)}
    part = "aligned" if kind == "lgsid" else "reference"
    stale = tokenization.inputs_audit(kind, inputs, "another-encoder")
    assert not stale.outcome.passed and stale.name == tokenization.inputs_check_name(kind)
    current = tokenization.inputs_audit(kind, inputs, versions[part])
    assert current.outcome.passed, current.outcome.description

    settings = TokenizerConfig(codebook_sizes=[8, 8, 8], epochs=2, seed=0)
    fitted = tokenization.fit_tokenizer(ctx, kind, inputs, settings, versions[part], True)
    assert fitted.tokenizer.encoder_version == versions[part]
    assert fitted.retrain_churn is None  # no champion before
    assert reports.read(reports.tokenizer(kind))["mlflow_version"] == fitted.mlflow_version
    assert set(fitted.per_city) == {CITY} and f"codes_map_{CITY}.png" in fitted.images
    champion = Tokenizer.load(champion_folder(tokenizer_model(kind), home=root))
    assert champion.version == fitted.tokenizer.version

    items = warehouse.read_table("items", CITY)
    with warehouse.staging(CITY, "semantic_ids") as staged:
        codes = semantic_ids.stage_semantic_ids(warehouse, staged, CITY, kind, champion, items)
        assert all(a.outcome.passed for a in codes.audits)
        warehouse.publish(staged, {})
    assert codes.result.assigned == len(items) == len(codes.persisted)
    report = semantic_ids.codes_report(ctx, CITY, kind, champion, items, codes)
    assert report is not None and reports.read(reports.tokenizer_codes(CITY, kind)) == report[0]
    # the report reads the tokens just assigned: the figures of assigning every item again
    vectors, _ = aligned_embeddings(items, codes.embeddings)
    again_assigned = tokenizer_report(champion, items, vectors, codes.persisted["code"].tolist())
    timed = {"assign_items_per_s", "fit_seconds"}
    for key in set(again_assigned) - timed:
        assert report[0][key] == pytest.approx(again_assigned[key]), key
    usage = semantic_ids.utilisation(codes.tokens(champion.n_levels), champion.codebook_sizes)
    assert len(usage) == 3 and all(0 < u <= 1 for u in usage)

    with warehouse.staging(CITY, "semantic_ids") as staged:  # nothing new: all reused
        again = semantic_ids.stage_semantic_ids(warehouse, staged, CITY, kind, champion, items)
    assert again.result.assigned == 0 and again.result.reused == len(items)
    assert semantic_ids.codes_report(ctx, CITY, kind, champion, items, again) is None

    # a duplicated code fails the uniqueness audit of the persisted table
    broken = codes.persisted.copy()
    broken.loc[1, "code"] = broken.loc[0, "code"]
    [unique, *_] = semantic_ids.semantic_ids_audits(kind, champion, broken)
    assert not unique.outcome.passed and "1 duplicate" in unique.outcome.description
