"""The weekly retrain of the global models, in lineage order.

Each global model is retrained only on inputs rebuilt from the model before it: the reward
model, then every city's geo pairs (scored by the new reward model), then the aligned
encoder (trained on them), then every city's item embeddings (from the new encoder), then
the tokenizers (fitted on those embeddings), then every city's semantic IDs. One retrain is
a set of runs sharing the tag ``RETRAIN_TAG``; each run names its stage in ``STAGE_TAG``.
``next_step`` reads the runs' statuses and says what to launch next; the Dagster sensor
(``defs/automation.py``) and ``runner.retrain`` (in one process, for ``lgsid retrain``) both
drive a retrain with it. A failed run halts the retrain where it is: the stages after it
never run on a half-built lineage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lgsid_pipeline.catalog import SEMANTIC_ID_ASSETS, TOKENIZER_ASSETS

RETRAIN_TAG = "lgsid/retrain"
STAGE_TAG = "lgsid/retrain_stage"
# Dagster run statuses (``DagsterRunStatus.value``) that end a run without success.
FAILED_STATUSES = frozenset({"FAILURE", "CANCELED", "CANCELING"})
SUCCESS = "SUCCESS"


@dataclass(frozen=True)
class RetrainStage:
    """One step of the retrain: assets materialized together, once or once per city (every
    city that has the tables in ``needs``: a city without alignment samples adds no geo
    pairs, but every city with items gets new embeddings and codes)."""

    name: str
    assets: tuple[str, ...]
    per_city: bool
    needs: tuple[str, ...] = ()


RETRAIN_STAGES: tuple[RetrainStage, ...] = (
    RetrainStage("reward_model", ("reward_model",), per_city=False),
    RetrainStage(
        "geo_pairs", ("geo_pairs",), per_city=True, needs=("geo_negatives", "cooccurrence_pairs")
    ),
    RetrainStage("aligned_encoder", ("aligned_encoder",), per_city=False),
    RetrainStage("item_embeddings", ("item_embeddings",), per_city=True, needs=("items",)),
    RetrainStage("tokenizers", TOKENIZER_ASSETS, per_city=False),
    RetrainStage("semantic_ids", SEMANTIC_ID_ASSETS, per_city=True, needs=("items",)),
)


@dataclass
class RetrainStep:
    """What a retrain does next: ``launch`` runs of ``stage`` for ``partitions`` (None for a
    global stage), ``wait`` for running ones, or nothing (``halted`` or ``done``)."""

    state: str
    stage: RetrainStage | None
    partitions: list[str | None] = field(default_factory=list)
    reason: str = ""


def retrain_id(when: datetime) -> str:
    """The id of the retrain started at ``when`` (one per scheduled day)."""
    return f"retrain-{when:%Y%m%d}"


def next_step(
    statuses: Mapping[tuple[str, str | None], str],
    cities: Sequence[str],
    has_table: Callable[[str, str], bool] = lambda table, city: True,
) -> RetrainStep:
    """The next step of one retrain, from the status of its latest run per (stage, city).

    Stages run strictly in order: a stage is launched only when every run of the stage
    before it succeeded, and a failed or cancelled run halts the retrain. ``has_table(table,
    city)`` says which cities take part in a per-city stage (``RetrainStage.needs``).
    """
    for stage in RETRAIN_STAGES:
        wanted: list[str | None] = (
            [c for c in cities if all(has_table(t, c) for t in stage.needs)]
            if stage.per_city
            else [None]
        )
        if not wanted:
            return RetrainStep(
                "halted",
                stage,
                [],
                f"no city has {', '.join(stage.needs)}" if cities else "no city is registered",
            )
        seen = {p: statuses.get((stage.name, p)) for p in wanted}
        failed = [p for p, status in seen.items() if status in FAILED_STATUSES]
        if failed:
            where = ", ".join(p or "global" for p in failed)
            return RetrainStep(
                "halted", stage, failed, f"{stage.name} failed ({where}); later stages do not run"
            )
        missing = [p for p, status in seen.items() if status is None]
        if missing:
            return RetrainStep("launch", stage, missing, f"{stage.name} is next")
        running = [p for p, status in seen.items() if status != SUCCESS]
        if running:
            return RetrainStep("wait", stage, running, f"{stage.name} is running")
    return RetrainStep("done", None, [], "every stage succeeded")


def latest_statuses(
    runs: Iterable[tuple[Mapping[str, str], str]],
) -> dict[tuple[str, str | None], str]:
    """Status of the latest run per (stage, city), from each run's tags and status (newest
    run first, as Dagster lists them)."""
    statuses: dict[tuple[str, str | None], str] = {}
    for tags, status in runs:
        statuses.setdefault((tags.get(STAGE_TAG, ""), tags.get("dagster/partition")), status)
    return statuses


@dataclass
class RetrainAdvance:
    """One sensor tick over every open retrain: the stage runs to launch as (retrain, stage,
    city or None), the retrains now done (the cursor), and a line per retrain for the log."""

    launches: list[tuple[str, RetrainStage, str | None]]
    done: list[str]
    lines: list[str]


def advance_retrains(
    started: Iterable[Mapping[str, str]],
    done: Sequence[str],
    statuses: Callable[[str], Mapping[tuple[str, str | None], str]],
    cities: Sequence[str],
    has_table: Callable[[str, str], bool],
) -> RetrainAdvance:
    """Move every retrain that has started (the tags of first-stage runs) and is not done to
    its next step; ``statuses(retrain)`` reads its runs (``latest_statuses``)."""
    advance = RetrainAdvance([], list(done), [])
    for retrain in sorted({t[RETRAIN_TAG] for t in started if RETRAIN_TAG in t} - set(done)):
        step = next_step(statuses(retrain), cities, has_table)
        advance.lines.append(f"{retrain}: {step.state} ({step.reason})")
        if step.state == "launch" and step.stage is not None:
            advance.launches += [(retrain, step.stage, city) for city in step.partitions]
        elif step.state == "done":
            advance.done.append(retrain)
    return advance
