"""The Dagster UI serves the code location: the asset catalog and a group's lineage graph render.

Starts ``dagster-webserver`` on the code location with an isolated Dagster home (a copy of
``dagster_home/dagster.yaml``) and LGSID home, then loads pages in headless Chromium (Debian
package ``chromium``, installed by ``make test`` through ``tests/system_deps.sh``) and checks
the rendered DOM for the asset names of ``lgsid_pipeline.definitions.defs``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lgsid_pipeline.definitions import defs

pytestmark = [pytest.mark.slow, pytest.mark.browser]  # a webserver and headless Chromium

REPO = Path(__file__).resolve().parents[1]
LOCATION = "lgsid_pipeline.definitions"
STARTUP_TIMEOUT_S = 90
BROWSER_TIMEOUT_S = 90
# Assets the UI must list whatever else the code location grows.
REQUIRED_ASSETS = {
    "raw_items",
    "items",
    "item_embeddings",
    "semantic_ids",
    "tokenizer",
    "aligned_encoder",
    "reward_model",
    "din",
    "tiger",
}


@dataclass
class Webserver:
    """A running webserver: its base URL, process and scratch folder."""

    url: str
    process: subprocess.Popen
    folder: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, n_chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return text[-n_chars:]


def _stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group ``process`` leads (its own session), then SIGKILL what is left.

    The whole group, because the webserver's code server and Chromium's helpers are children
    that can outlive the leader.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=grace_s)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "chromium not found: the UI test needs Debian's `chromium` package; "
        "`make test` installs it (tests/system_deps.sh)"
    )


def _asset_names() -> set[str]:
    return {key.to_user_string() for key in defs.resolve_all_asset_keys()}


def _group_of(name: str) -> str:
    graph = defs.resolve_asset_graph()
    key = next(k for k in graph.get_all_asset_keys() if k.to_user_string() == name)
    return str(graph.get(key).group_name)


def _group_assets(group: str) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name == group
    }


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """``dagster-webserver`` on the code location, isolated homes; the group is killed after."""
    folder = tmp_path_factory.mktemp("ui")
    dagster_home = folder / "dagster_home"
    lgsid_home = folder / "lgsid_home"
    dagster_home.mkdir()
    lgsid_home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    # Mark the "join the community" pop-up as seen, so it does not cover the screenshot.
    (dagster_home / ".nux").mkdir()
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "LGSID_HOME": str(lgsid_home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    log = folder / "webserver.log"
    binary = Path(sys.executable).parent / "dagster-webserver"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "-m", LOCATION, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Webserver(url=f"http://127.0.0.1:{port}", process=process, folder=folder, log=log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"dagster-webserver exited with code {process.returncode} before "
                    f"answering /server_info; log tail:\n{_tail(log)}"
                )
            try:
                with urllib.request.urlopen(f"{server.url}/server_info", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"dagster-webserver did not answer /server_info within "
                    f"{STARTUP_TIMEOUT_S} s; log tail:\n{_tail(log)}"
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop_group(process)


def _render(server: Webserver, route: str, name: str, window: str) -> tuple[str, Path]:
    """Load ``route`` in headless Chromium; return the DOM after scripts ran and a screenshot."""
    browser = _chromium()
    screenshot = server.folder / f"{name}.png"
    profile = server.folder / f"chromium-profile-{name}"
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--virtual-time-budget=20000",
        f"--screenshot={screenshot}",
        "--dump-dom",
        f"{server.url}/{route}",
    ]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    ) as browser_process:
        try:
            dom, errors = browser_process.communicate(timeout=BROWSER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _stop_group(browser_process, grace_s=5)
            pytest.fail(f"chromium did not finish rendering {route} in {BROWSER_TIMEOUT_S} s")
        finally:
            if browser_process.poll() is None:
                _stop_group(browser_process, grace_s=5)
    assert browser_process.returncode == 0, (
        f"chromium failed on {route} (exit {browser_process.returncode}): "
        f"{errors.decode(errors='replace')[-2000:]}"
    )
    return dom.decode("utf-8", errors="replace"), screenshot


def _missing(dom: str, names: set[str]) -> list[str]:
    """Names that no element of the DOM shows as its whole text."""
    return sorted(n for n in names if f">{n}<" not in dom)


def test_catalog_lists_every_asset_of_the_code_location(webserver: Webserver) -> None:
    names = _asset_names()
    assert names >= REQUIRED_ASSETS, f"definitions lack {sorted(REQUIRED_ASSETS - names)}"
    # The catalog list is virtualised: a tall window makes every row render.
    dom, screenshot = _render(webserver, "assets", "catalog", "1400,4000")
    assert "dagster" in dom.lower() and LOCATION in dom, "the page is not the Dagster UI"
    missing = _missing(dom, names)
    assert not missing, (
        f"the UI asset catalog does not show {missing} (server log tail:\n{_tail(webserver.log)})"
    )
    assert ">no_such_asset<" not in dom
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ingest_group_lineage_graph_renders(webserver: Webserver) -> None:
    group = _group_of("raw_items")
    members = _group_assets(group)
    assert {"raw_items", "raw_interactions", "items", "interactions"} <= members
    dom, screenshot = _render(
        webserver, f"locations/{LOCATION}/asset-groups/{group}", f"lineage-{group}", "1600,1200"
    )
    missing = _missing(dom, members)
    assert not missing, f"the lineage graph of group {group!r} does not show {missing}"
    # Downstream assets of other groups are drawn as links at the graph's edge.
    assert ">item_embeddings<" in dom
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, (
        f"screenshot of the lineage graph looks empty: {screenshot} ({len(png)} bytes)"
    )
