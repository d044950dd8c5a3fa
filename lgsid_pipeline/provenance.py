"""What code produced an artifact: the git commit of this checkout (or of the image)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

GIT_SHA_ENV = "LGSID_GIT_SHA"  # set in images built without a .git folder
UNKNOWN = "unknown"
REPO_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def git_sha() -> str:
    """The commit the running code comes from: ``LGSID_GIT_SHA`` when set, else ``git
    rev-parse HEAD`` of the checkout (``+dirty`` when tracked files outside ``bench/results``
    differ from it), else ``unknown``."""
    if os.environ.get(GIT_SHA_ENV):
        return os.environ[GIT_SHA_ENV]

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    sha = git("rev-parse", "HEAD")
    if not sha:
        return UNKNOWN
    # results files are the output of a run, not a change to what produced it
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"):
        sha += "+dirty"
    return sha
