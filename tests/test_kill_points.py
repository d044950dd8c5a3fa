"""SIGKILL at every point of a publish: a child process publishes a new version of a city's
ingest table set (stage every table, manifest, promote, pointer switch, sweep of the oldest
version, DuckDB catalog refresh) and kills itself with SIGKILL just before one of its durable
operations (a Parquet write, an fsync, a rename, a hard link, a folder removal, the catalog's
connection). Whatever the point, every reader (the library, in-memory DuckDB views, the
catalog file) sees one whole set, the old one or the new one, and the next publish succeeds
and sweeps what the dead writer left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from table_sets import CITY, publish, visible_sizes

from lgsid_pipeline.warehouse import KEEP_VERSIONS, TABLES, Warehouse

pytestmark = pytest.mark.slow  # seconds per test: left out of `make test-fast`

TESTS = Path(__file__).parent
OLD, NEW, NEXT = 3, 5, 7  # rows of every table in the versions published before, by, after
MIN_KILL_POINTS = 10

CHILD = """
import json, os, shutil, signal, sys
import duckdb
import pyarrow.parquet as pq
sys.path.insert(0, sys.argv[1])
from table_sets import publish
from lgsid_pipeline.warehouse import Warehouse

root, rows, kill_at = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
events = []

def watch(module, name):
    real = getattr(module, name)
    def operation(*args, **kwargs):
        events.append(name)
        if len(events) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(module, name, operation)

for name in ("replace", "fsync", "link"):
    watch(os, name)
watch(pq, "write_table")
watch(shutil, "rmtree")
watch(duckdb, "connect")
warehouse = Warehouse(root)
publish(warehouse, rows)
warehouse.refresh_catalog()
print(json.dumps(events))
"""


def run_child(root: Path, rows: int, kill_at: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(TESTS), str(root), str(rows), str(kill_at)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def published_home(root: Path) -> Warehouse:
    """A home whose history is full, so the child's publish also sweeps the oldest version."""
    warehouse = Warehouse(root)
    for _ in range(KEEP_VERSIONS + 1):
        publish(warehouse, OLD)
    assert warehouse.refresh_catalog()
    return warehouse


def catalog_sizes(warehouse: Warehouse) -> set[int]:
    """Row counts the catalog file people open serves (quarantine holds two parts)."""
    with duckdb.connect(str(warehouse.catalog_path), read_only=True) as con:
        counts = {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES}
    return {n // 2 if table == "quarantine" else n for table, n in counts.items()}


def kill_points(operations: list[str]) -> list[int]:
    """Where to kill (1-based operation numbers): the first, a middle and the last operation
    of staging the tables, and every operation after it (manifest, promote, pointer, sweep,
    catalog)."""
    staged = max(i for i, op in enumerate(operations, 1) if op == "write_table") + 3
    return sorted({1, staged // 2, staged, *range(staged + 1, len(operations) + 1)})


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The durable operations of one publish over a full history, in order."""
    root = tmp_path_factory.mktemp("dry")
    published_home(root)
    done = run_child(root, NEW, kill_at=0)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_sigkill_at_any_point_of_the_publish_leaves_one_whole_set(
    operations: list[str], tmp_path: Path
) -> None:
    points = kill_points(operations)
    assert len(points) >= MIN_KILL_POINTS, operations
    assert {"write_table", "replace", "fsync", "rmtree", "connect"} <= set(operations)
    outcomes = {}
    for kill_at in points:
        root = tmp_path / f"kill-{kill_at}"
        published_home(root)
        killed = run_child(root, NEW, kill_at)
        where = f"killed before operation {kill_at} ({operations[kill_at - 1]})"
        assert killed.returncode == -signal.SIGKILL, (where, killed.stdout, killed.stderr)

        fresh = Warehouse(root)  # a reader that starts after the crash
        seen = visible_sizes(fresh)
        assert seen in ({OLD}, {NEW}), (where, seen)
        # The catalog file serves a whole set too: the old one until the child refreshed it.
        assert catalog_sizes(fresh) in ({OLD}, seen), (where, catalog_sizes(fresh))
        pointer = fresh.published(CITY, "ingest")
        assert pointer is not None
        folder = fresh.version_folder(CITY, "ingest", pointer["version"])
        named = [info["file"] for parts in pointer["tables"].values() for info in parts.values()]
        assert all((folder / file).is_file() for file in named), where
        outcomes[kill_at] = seen.pop()

        # The next publish succeeds, and nothing the dead writer left survives it.
        final = publish(fresh, NEXT)
        assert fresh.refresh_catalog()
        assert visible_sizes(fresh) == {NEXT} == catalog_sizes(fresh), where
        assert fresh.versions(CITY, "ingest") == sorted([final["version"], *final["history"]])
        leftovers = [
            p for p in fresh.root.rglob(".*") if p.name.endswith(".tmp") or ".staging-" in p.name
        ]
        assert leftovers == [], (where, leftovers)
    # Killed before the pointer switch, readers keep the old set; after it, the new one.
    assert set(outcomes.values()) == {OLD, NEW}, outcomes
    switch = min(k for k, rows in outcomes.items() if rows == NEW)
    assert all(rows == (NEW if k >= switch else OLD) for k, rows in outcomes.items()), outcomes
