"""What a stage reports, as plain values the Dagster adapters render one way for every stage.

A stage result's ``metadata()`` is a flat mapping of plain values: numbers and strings as
they are, dicts and lists (shown as JSON), ``Path`` (a file), and the three markers below.
A blocking check that fails before anything is published raises ``BlockingCheckFailed``
with every audit of the step, so the adapter can report each one and fail the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lgsid_pipeline.quality import Audit
from lgsid_pipeline.warehouse import StagedVersion, Warehouse

Metadata = dict[str, Any]
Log = Callable[[str], None]


def quiet(message: str) -> None:
    """A ``Log`` that says nothing."""


@dataclass(frozen=True)
class Markdown:
    """Text shown as markdown (tables)."""

    text: str


@dataclass(frozen=True)
class Link:
    """A URL (an MLflow run)."""

    url: str


@dataclass(frozen=True)
class Plot:
    """A PNG kept in the report store as plot ``name`` of ``scope`` (a city or ``global``)
    and shown in the asset's metadata."""

    scope: str
    name: str
    png: bytes


class BlockingCheckFailed(RuntimeError):
    """Some blocking check of a step failed; nothing was published or fitted."""

    def __init__(self, what: str, audits: list[Audit]):
        self.what, self.audits = what, audits
        failed = [a for a in audits if a.blocking and not a.outcome.passed]
        summary = "; ".join(f"{a.name}: {a.outcome.description}" for a in failed)
        super().__init__(
            f"{what}: {len(failed)} blocking check(s) failed, nothing published: {summary}"
        )

    @property
    def failed(self) -> list[Audit]:
        return [a for a in self.audits if a.blocking and not a.outcome.passed]


def require_passed(what: str, audits: list[Audit]) -> None:
    """Raise ``BlockingCheckFailed`` when any blocking audit failed."""
    if any(a.blocking and not a.outcome.passed for a in audits):
        raise BlockingCheckFailed(what, audits)


UNCHANGED = "unchanged"  # in a returned pointer: nothing new was published


def publish_if_passed(
    warehouse: Warehouse, staged: StagedVersion, what: str, audits: list[Audit], extra: Metadata
) -> dict[str, Any]:
    """Publish ``staged`` when every blocking audit passed and return its pointer; otherwise
    raise ``BlockingCheckFailed`` (the staged version is discarded with its context).

    A staged version whose every table part has the same bytes as the published version's,
    with the same ``extra`` (the run id aside), is not published: the published pointer is
    returned with ``unchanged`` set, so a run with nothing new writes no new version."""
    require_passed(f"{what} (staged version {staged.version})", audits)
    current = warehouse.published(staged.city, staged.stage)
    if current is not None and _same_content(staged, current, extra):
        return {**current, UNCHANGED: True}
    return {**warehouse.publish(staged, extra), UNCHANGED: False}


def _same_content(staged: StagedVersion, current: dict[str, Any], extra: Metadata) -> bool:
    def digests(tables: dict[str, dict[str, dict[str, Any]]]) -> dict[tuple[str, str], Any]:
        return {
            (t, p): info.get("sha256") for t, parts in tables.items() for p, info in parts.items()
        }

    written, published = digests(staged.files()), digests(current["tables"])
    same_extra = all(current.get(k) == v for k, v in extra.items() if k != "run_id")
    if staged.carry_forward:
        # parts this version does not write are carried forward; the manifest's extras are
        # those of whichever part was published last (the versions are in the rows anyway)
        published = {key: digest for key, digest in published.items() if key in written}
        same_extra = True
    return same_extra and None not in written.values() and written == published
