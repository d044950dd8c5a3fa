"""``lgsid demo``: generate the synthetic demo cities, materialize everything with smaller
training budgets, one progress line per stage (Dagster's event log goes to a file), and a
closing summary."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from datetime import UTC, datetime
from pathlib import Path

from lgsid_pipeline.catalog import (
    BACKBONES,
    GENERATIVE_KINDS,
    LGSID,
    SERVED_KIND,
    TOKENIZER_ASSETS,
)
from lgsid_pipeline.cities import CityConfig, CityRegistry
from lgsid_pipeline.config import PARALLEL_CITIES, lgsid_home
from lgsid_pipeline.defs.executor import EXECUTOR_ENV
from lgsid_pipeline.demo.spec import DEMO_CITIES
from lgsid_pipeline.demo.summary import demo_summary
from lgsid_pipeline.demo.writer import generate_city
from lgsid_pipeline.warehouse import Warehouse

# The demo trains every model but OneRec (of the generative kinds it trains the one it
# serves, on LGSID codes only: each code variant costs about a minute per city) on three
# cities with the real encoder; small samples and short budgets keep it to
# minutes on two cores (encoding each item twice, plain and aligned, is most of what is
# left). `lgsid demo --full` trains everything with the full defaults, as `lgsid materialize`.
DEMO_RUN_CONFIG = {
    "ops": {
        "geo_negatives": {"config": {"max_anchors": 150}},
        "geo_pairs": {"config": {"n_anchors": 150}},
        "reward_model": {"config": {"epochs": 20}},
        "aligned_encoder": {
            "config": {"steps": 30, "batch_size": 16, "max_dc_triples": 300, "max_gc_triples": 300}
        },
        **{asset: {"config": {"epochs": 10}} for asset in TOKENIZER_ASSETS},
        "recommender_datasets": {
            "config": {"max_train_positives": 1000, "max_eval_positives": 500, "long_len": 50}
        },
        # batch 128: one epoch of the small sample is about 40 optimizer steps (at 512 it is
        # 10, and every backbone stays at an AUC of about 0.5)
        **{
            backbone: {"config": {"epochs": 1, "dim": 16, "batch_size": 128}}
            for backbone in BACKBONES
        },
        **{
            name: {
                "config": {
                    "variants": [LGSID],  # the product's own codes (the bench compares all)
                    "steps": 100,
                    "eval_every": 50,
                    "beam_size": 10,
                    "max_train_examples": 2000,
                    "max_valid_eval": 100,
                    "max_test_examples": 200,
                }
            }
            for name in (SERVED_KIND, "generative_baseline")
        },
    },
}


@contextmanager
def stderr_into(path: Path) -> Iterator[None]:
    """Send this process's standard error, and that of every process it starts, to the end
    of ``path`` (the console keeps standard output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "a", encoding="utf-8", buffering=1) as sink, redirect_stderr(sink):
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_demo(parallel: int = PARALLEL_CITIES, full: bool = False) -> int:
    """Run the demo; the exit code (0 when every run succeeded). The demo trains with the
    small budgets of ``DEMO_RUN_CONFIG``; ``full`` trains with the assets' own defaults."""
    # Every step in its run's process: no per-step start-up (each would import the code
    # location and the models) and no step worker lines on the console; materialize then
    # gives each step the cores divided by the runs at once.
    os.environ.setdefault(EXECUTOR_ENV, "in_process")
    from lgsid_pipeline.runner import (
        get_instance,
        materialize,
        resolve_selection,
        sync_city_partitions,
    )

    started = time.perf_counter()
    registry = CityRegistry()
    for slug, spec in DEMO_CITIES.items():
        folder = lgsid_home() / "synthetic" / slug
        if not (folder / "manifest.json").is_file():
            counts = generate_city(spec, folder)
            print(f"generated {slug}: {counts['items']} items, {counts['checkins']} check-ins")
        registry.add(
            CityConfig(slug=slug, source="synthetic", path=str(folder), display_name=spec.name)
        )
    sync_city_partitions(get_instance(), registry)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    events = lgsid_home() / "logs" / f"demo-{stamp}.log"
    # The run's event log goes to a file; the console keeps one line per stage. Progress
    # bars and library warnings stay out of it too (the runs' processes inherit this).
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    config = {
        **({} if full else DEMO_RUN_CONFIG),
        "loggers": {
            "console": {"config": {"log_level": "ERROR"}},
            "file": {"config": {"path": str(events)}},
        },
    }
    # The demo trains the generative kind it serves; `--full` trains every one.
    skipped = [] if full else [k for k in GENERATIVE_KINDS if k != SERVED_KIND]
    select = ",".join(
        key.to_user_string()
        for key in resolve_selection(None)
        if key.to_user_string() not in skipped
    )
    print(
        f"materializing {len(DEMO_CITIES)} cities; Dagster's event log and the runs' "
        f"own output: {events}",
        flush=True,
    )
    with stderr_into(events):  # MLflow's registration notes, warnings, tracebacks
        results = materialize(
            list(DEMO_CITIES),
            select=select,
            parallel=parallel,
            run_config=config,
            on_stage=lambda stage: print(stage.line(), flush=True),
        )
    ok = all(r.success for r in results)
    if not ok:
        failed = [r for r in results if not r.success]
        for r in failed:
            print(f"{r.city}: FAILED ({', '.join(r.failed_steps) or 'see the UI'}) run {r.run_id}")
    print(demo_summary(Warehouse(), list(DEMO_CITIES), str(events)))
    print(f"\ndemo {'finished' if ok else 'FAILED'} in {time.perf_counter() - started:.0f}s")
    return 0 if ok else 1
