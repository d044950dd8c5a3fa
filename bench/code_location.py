"""What loading the code location costs: every step process (multiprocess executor), the
webserver, the daemon and each sensor tick import ``lgsid_pipeline.definitions``.

Usage: .venv/bin/python bench/code_location.py   (writes bench/results/code_location.json)

Each measurement is a fresh ``python -c`` process, timed from outside, alternating between
the two imports so that both see the same machine load; the figure to read is the ratio of
medians. Also records which heavy libraries each import pulls in (none should).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from common import write_results

REPEATS = 7
HEAVY = ("torch", "transformers", "peft", "mlflow", "sklearn", "scipy", "matplotlib", "geopandas")
IMPORTS = {"dagster": "import dagster", "definitions": "import lgsid_pipeline.definitions"}


def timed_import(statement: str) -> tuple[float, list[str]]:
    """Seconds for a fresh interpreter to run ``statement``, and the heavy modules loaded."""
    probe = (
        f"{statement}; import sys, json; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return time.perf_counter() - started, json.loads(out.strip().splitlines()[-1])


def main() -> None:
    seconds: dict[str, list[float]] = {name: [] for name in IMPORTS}
    loaded: dict[str, list[str]] = {}
    for repeat in range(REPEATS + 1):  # the first round warms the file cache, not counted
        for name, statement in IMPORTS.items():
            took, heavy = timed_import(statement)
            loaded[name] = heavy
            if repeat:
                seconds[name].append(round(took, 3))
        print(
            f"round {repeat}: "
            + ", ".join(f"{n} {s[-1] if s else '-'}s" for n, s in seconds.items()),
            flush=True,
        )
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    out = {
        "seconds": seconds,
        "median_seconds": medians,
        "ratio_definitions_to_dagster": round(medians["definitions"] / medians["dagster"], 3),
        "heavy_modules_loaded": loaded,
    }
    print(json.dumps(out, indent=2))
    write_results("code_location", out, {"repeats": REPEATS, "imports": IMPORTS, "heavy": HEAVY})


if __name__ == "__main__":
    main()
