"""Same seed, same tokens: does the tokenizer code of another commit give the tokens this one
gives, on the same embeddings?

Usage: LGSID_BENCH_HOME=<a home with both real cities' embeddings, e.g. the one
bench/tokenizer.py leaves> .venv/bin/python bench/tokenizer_equality.py [--rev REV]
(writes bench/results/tokenizer_equality.json; ~8 minutes on 2 cores)

The home's items and embeddings of each kind (both cities, as the pipeline concatenates them)
are dumped once; then a worker process per commit (``REV`` in a temporary git worktree, and
this checkout), each on one torch thread, fits every kind from scratch with the default
config (seed 0) and hashes the assigned tokens. A refactor that changes no behaviour gives
equal digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE_REFACTOR = "bbd1891"  # the last commit before issue 14 split and renamed the tokenizers


def dump_inputs(folder: Path, kinds: list[str]) -> dict[str, int]:
    """Write each kind's items and embeddings (every real city, in order) to ``folder``."""
    import numpy as np
    import pandas as pd
    from common import REAL_CITIES

    from lgsid_pipeline.stages.tokenization import city_embeddings
    from lgsid_pipeline.warehouse import Warehouse

    warehouse, sizes = Warehouse(), {}
    for kind in kinds:
        parts = [city_embeddings(warehouse, city, kind) for city in REAL_CITIES]
        items = pd.concat([p.items for p in parts], ignore_index=True)
        items.to_parquet(folder / f"{kind}_items.parquet")
        np.save(folder / f"{kind}_x.npy", np.concatenate([p.vectors for p in parts]))
        sizes[kind] = len(items)
    return sizes


def fit_worker(folder: Path, kinds: list[str]) -> None:
    """Fit each of ``kinds`` on the dumped inputs with the ``lgsid_pipeline`` on
    ``sys.path`` (this module imports nothing else of the project, so any commit's package
    works); print one JSON line of token digests."""
    import numpy as np
    import pandas as pd
    import torch

    from lgsid_pipeline.tokenizer import TOKENIZERS, TokenizerConfig

    torch.set_num_threads(1)
    digests = {}
    for kind in kinds:
        items = pd.read_parquet(folder / f"{kind}_items.parquet")
        x = np.load(folder / f"{kind}_x.npy")
        tokens = TOKENIZERS[kind](TokenizerConfig()).fit(items, x, warm_start=False)
        digests[kind] = hashlib.sha256(np.asarray(tokens.assign(items, x)).tobytes()).hexdigest()
    print(json.dumps(digests), flush=True)


def digests_with(code_root: Path, folder: Path, kinds: list[str]) -> dict[str, str]:
    """The token digests of a worker that imports ``lgsid_pipeline`` from ``code_root``."""
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    done = subprocess.run(
        [sys.executable, __file__, "--fit-worker", str(folder), *kinds],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rev", default=BEFORE_REFACTOR, help="the commit to compare with")
    parser.add_argument("--fit-worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_worker:
        fit_worker(Path(args.fit_worker[0]), args.fit_worker[1:])
        return
    from common import write_results

    from lgsid_pipeline.catalog import TOKENIZER_KINDS

    kinds = list(TOKENIZER_KINDS)
    home = os.environ.get("LGSID_BENCH_HOME")
    if not home:
        sys.exit("set LGSID_BENCH_HOME to a home with both real cities' embeddings")
    os.environ["LGSID_HOME"] = str(Path(home) / "home")
    with tempfile.TemporaryDirectory(prefix="lgsid-tokeq-") as scratch:
        folder, worktree = Path(scratch) / "inputs", Path(scratch) / "rev"
        folder.mkdir()
        sizes = dump_inputs(folder, kinds)
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.rev],
            check=True,
            capture_output=True,
        )
        try:
            other = digests_with(worktree, folder, kinds)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                check=False,
            )
        this = digests_with(REPO, folder, kinds)
    equal = {kind: other[kind] == this[kind] for kind in kinds}
    print(json.dumps({"equal": equal}), flush=True)
    write_results(
        "tokenizer_equality",
        {"rev": args.rev, "equal": equal, "digests": {"rev": other, "head": this}, "items": sizes},
        {"rev": args.rev, "config": "TokenizerConfig() (seed 0), one torch thread"},
    )


if __name__ == "__main__":
    main()
