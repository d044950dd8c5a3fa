"""The code location loads, has the expected assets and checks, and passes Dagster's validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

from lgsid_pipeline.definitions import defs
from lgsid_pipeline.runner import plan_stages, resolve_selection

EXPECTED_ASSETS = {"raw_items", "raw_interactions", "items", "interactions"}


def test_assets_are_city_partitioned() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys >= EXPECTED_ASSETS
    for key in EXPECTED_ASSETS:
        partitions = graph.get(dg.AssetKey(key)).partitions_def
        assert isinstance(partitions, dg.DynamicPartitionsDefinition)
        assert partitions.name == "city"


def test_blocking_checks_guard_the_clean_tables() -> None:
    checks = {
        (c.asset_key.to_user_string(), c.name): c
        for c in defs.resolve_asset_graph().asset_check_keys
    }
    names = {name for _, name in checks}
    assert {
        "items_schema",
        "items_coordinates_in_range",
        "items_unique_ids",
        "items_quarantine_rate",
        "interactions_quarantine_rate",
    } <= names


def test_selection_keeps_multi_asset_together() -> None:
    # The ingest tables are one step (published together as one version): any of them
    # selects all four.
    ingest = {"raw_items", "raw_interactions", "items", "interactions"}
    assert {k.to_user_string() for k in resolve_selection("raw_items")} == ingest
    assert {k.to_user_string() for k in resolve_selection("*interactions")} == EXPECTED_ASSETS
    assert {k.to_user_string() for k in resolve_selection("items,interactions")} == ingest


def test_dagster_definitions_validate(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-m", "lgsid_pipeline.definitions"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_global_models_split_the_run_into_stages() -> None:
    graph = defs.resolve_asset_graph()
    for key in ("reward_model", "aligned_encoder"):
        assert graph.get(dg.AssetKey(key)).partitions_def is None
    stages = plan_stages(resolve_selection("*item_embeddings"))
    names = [(is_global, sorted(k.to_user_string() for k in keys)) for is_global, keys in stages]
    assert names == [
        (
            False,
            [
                "cooccurrence_pairs",
                "geo_negatives",
                "interactions",
                "items",
                "raw_interactions",
                "raw_items",
            ],
        ),
        (True, ["reward_model"]),
        (False, ["geo_pairs"]),
        (True, ["aligned_encoder"]),
        (False, ["item_embeddings"]),
    ]


def test_nightly_schedule_requests_one_run_per_city() -> None:
    schedule = defs.get_schedule_def("nightly_retokenization")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert (
        defs.get_schedule_def("weekly_global_models").default_status
        == dg.DefaultScheduleStatus.STOPPED
    )
    with dg.instance_for_test() as instance:
        repository = defs.get_repository_def()
        empty = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, repository_def=repository)
        )
        assert empty.skip_message == "no cities registered"
        instance.add_dynamic_partitions("city", ["alpha", "beta"])
        when = dg.build_schedule_context(
            instance=instance,
            repository_def=repository,
            scheduled_execution_time=pd.Timestamp("2026-11-26T02:00Z"),
        )
        requests = schedule.evaluate_tick(when).run_requests
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("alpha", "alpha:2026-11-26"),
        ("beta", "beta:2026-11-26"),
    ]
    job = defs.resolve_job_def("nightly_retokenization")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "items",
        "item_embeddings",
        "semantic_ids",
        "rqvae_semantic_ids",
    }
    assert job.op_retry_policy.max_retries == 2


# Imported by the steps that use them, never by the code location itself: every step process
# (and the webserver, the daemon, each sensor tick's code server) loads the code location.
HEAVY_MODULES = (
    "torch",
    "transformers",
    "peft",
    "mlflow",
    "sklearn",
    "matplotlib",
    "geopandas",
    "shapely",
    "scipy",
)


def test_code_location_loads_without_the_training_libraries() -> None:
    probe = (
        "import sys, lgsid_pipeline.definitions as d; "
        "d.defs.resolve_asset_graph(); "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"the code location imports {proc.stdout.strip()}"


def test_lazy_package_exports_resolve() -> None:
    import lgsid_pipeline.encoder as encoder
    import lgsid_pipeline.metrics as metrics
    import lgsid_pipeline.recommenders as recommenders
    import lgsid_pipeline.tokenizer as tokenizer

    for package in (encoder, metrics, recommenders, tokenizer):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        try:
            package.no_such_name  # noqa: B018
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("unknown names must raise AttributeError")
