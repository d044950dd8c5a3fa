"""Every blocking check of the code location has a test that breaks the data and watches the
check stop the run. A new blocking check fails this test until its failing case is named here.

The baseline tokenizer kinds' checks come from the same factory as LGSID's (one function
names them per kind), so their failing case is LGSID's; the per-kind unit test of the
tokenizer inputs audit runs every kind.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

from lgsid_pipeline.catalog import BASELINE_KINDS
from lgsid_pipeline.definitions import defs

TESTS = Path(__file__).parent
INGEST_BREAKS = "test_write_audit_publish.py::test_each_blocking_check_fails_and_publishes_nothing"
EMBEDDING_AND_CODE_BREAKS = "test_retrain.py::test_embedding_and_code_audits_block_publish"
MIXED_ENCODERS = (
    "test_retrain.py::test_weekly_retrain_runs_in_lineage_order_and_blocks_mixed_encoders"
)

# check name (LGSID's for the per-kind checks) -> the test that makes it fail
FAILING_CASES = {
    "items_schema": INGEST_BREAKS,
    "items_coordinates_in_range": INGEST_BREAKS,
    "items_unique_ids": INGEST_BREAKS,
    "items_quarantine_rate": INGEST_BREAKS,
    "items_counts_reconcile": INGEST_BREAKS,
    "interactions_schema": INGEST_BREAKS,
    "interactions_quarantine_rate": INGEST_BREAKS,
    "interactions_counts_reconcile": INGEST_BREAKS,
    "item_embeddings_reference_complete": EMBEDDING_AND_CODE_BREAKS,
    "item_embeddings_aligned_complete": EMBEDDING_AND_CODE_BREAKS,
    "semantic_ids_unique": EMBEDDING_AND_CODE_BREAKS,
    "semantic_ids_encoder_matches": MIXED_ENCODERS,
    "tokenizer_inputs_current": MIXED_ENCODERS,
}


def blocking_checks() -> set[str]:
    """The names of every blocking asset check in the code location."""
    return {
        spec.name
        for assets in defs.assets or []
        if isinstance(assets, dg.AssetsDefinition)
        for spec in assets.check_specs
        if spec.blocking
    }


def lgsid_name(check: str) -> str:
    """A baseline kind's check under LGSID's name (``rqvae_semantic_ids_unique`` ->
    ``semantic_ids_unique``)."""
    for kind in BASELINE_KINDS:
        if check.startswith(f"{kind}_"):
            return check.removeprefix(f"{kind}_")
    return check


def test_every_blocking_check_has_a_failing_case() -> None:
    checks = blocking_checks()
    assert len(checks) >= len(FAILING_CASES)  # the walk found the checks
    untested = sorted(c for c in checks if lgsid_name(c) not in FAILING_CASES)
    assert not untested, f"blocking checks without a failing-case test: {untested}"
    stale = sorted(set(FAILING_CASES) - {lgsid_name(c) for c in checks})
    assert not stale, f"failing cases of checks that no longer exist: {stale}"


def test_each_named_test_exists_and_names_its_check() -> None:
    for check, case in FAILING_CASES.items():
        file, name = case.split("::")
        source = (TESTS / file).read_text()
        body = re.search(rf"^def {name}\(.*?(?=^def |\Z)", source, re.S | re.M)
        assert body, f"{case} (the failing case of {check}) does not exist"
        # the check is named in the test itself or in the table of breaks it runs over
        assert f'"{check}"' in source, f"{case} never names {check}"
