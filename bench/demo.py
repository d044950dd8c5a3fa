"""What a newcomer's first `make demo` costs: a fresh clone of this repository's HEAD, the
install and the demo, timed as one command, with the lines it prints.

Usage: .venv/bin/python bench/demo.py   (writes bench/results/demo.json; ~10 minutes)
The clone goes to a temporary folder (removed afterwards); nothing of this checkout's
``.venv`` or ``.lgsid`` is used, so the install is part of the figure, as it is for a user.
``bench/freshness.py`` records the same figure as its ``demo_seconds``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import write_results

REPO = Path(__file__).resolve().parents[1]
DEMO_LIMIT_S = 1800  # a run past this is cut off and reported as such


def measure_demo(repo: Path = REPO) -> dict:
    """Clone ``repo``'s HEAD into a temporary folder and time ``make demo`` there (install
    included); the seconds, the exit code, the printed lines and the demo's own summary."""
    scratch = Path(tempfile.mkdtemp(prefix="lgsid-demo-"))
    clone = scratch / "repo"
    try:
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        # nothing of the caller's set-up: its home, instance or a PYTHONPATH to other code
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LGSID_", "DAGSTER_")) and k != "PYTHONPATH"
        }
        started = time.perf_counter()
        stamps: list[tuple[float, str]] = []
        with subprocess.Popen(
            ["make", "demo"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                stamps.append((time.perf_counter() - started, line.rstrip("\n")))
                print(f"[{stamps[-1][0]:6.0f}s] {stamps[-1][1]}", flush=True)
                if stamps[-1][0] > DEMO_LIMIT_S:
                    process.kill()
                    break
            returncode = process.wait()
        seconds = time.perf_counter() - started
        lines = [line for _, line in stamps]
        demo_started = next((t for t, line in stamps if line.startswith("materializing")), None)
        return {
            "demo_seconds": round(seconds, 1),
            "returncode": returncode,
            "lines_printed": len(lines),
            "seconds_before_materializing": (
                round(demo_started, 1) if demo_started is not None else None
            ),
            "last_lines": lines[-40:],
            # every printed line with the second it came: the stage lines show where time goes
            "timed_lines": [f"{t:7.1f}s {line}" for t, line in stamps[:200]],
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    result = measure_demo()
    print({k: v for k, v in result.items() if k != "last_lines"}, flush=True)
    write_results("demo", result, {"command": "make demo", "clone_of": "HEAD"})


if __name__ == "__main__":
    main()
